"""`python -m isam2.convert`: VIPSeg panoptic predictions (DVIS, DVIS++, CAVIS) -> semantic PNGs in our layout.

    python -m isam2.convert input=<dir with pred.json and pan_pred/> output=<dir>
        [json=<input>/pred.json] [png_dir=<input>/pan_pred] [category_offset=0]

writes `<output>/<video>/<frame>.png` (uint8 train ids, 255 = unlabelled), the base predictions the refiner
(Table 2) reads. The accepted layouts are in isam2/data/panoptic.py and docs/data.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

from isam2.errors import ConfigError, user_errors_exit
from isam2.files import check_output_apart
from isam2.logs import console_logging, get_logger

log = get_logger(__name__)

KEYS = ("input", "output", "json", "png_dir", "category_offset")


def convert(
    json_path: str | Path, png_dir: str | Path, out_dir: str | Path, category_offset: int = 0
) -> tuple[int, int]:
    """Convert every frame `json_path` lists; returns (videos, frames) written. Bad input raises DataError
    before or while writing; every PNG is written atomically."""
    from isam2.data.panoptic import panoptic_frames, panoptic_to_semantic, read_panoptic_png
    from isam2.data.predictions import prediction_path, write_prediction

    videos, frames = set(), 0
    for frame in panoptic_frames(json_path, png_dir):
        semantic = panoptic_to_semantic(
            read_panoptic_png(frame.png), frame.categories, category_offset, source=str(frame.png)
        )
        write_prediction(prediction_path(out_dir, frame.video_id, frame.stem), semantic)
        videos.add(frame.video_id)
        frames += 1
    return len(videos), frames


def _parse(argv: list[str]) -> dict[str, str]:
    args: dict[str, str] = {}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in KEYS:
            raise ConfigError(f"{arg!r} is not one of the settings {', '.join(k + '=' for k in KEYS)}")
        args[key] = value
    for key in ("input", "output"):
        if not args.get(key):
            raise ConfigError(f"{key}=<dir> is required (python -m isam2.convert input=<dir> output=<dir>)")
    return args


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    console_logging()
    args = _parse(sys.argv[1:] if argv is None else argv)
    source = Path(args["input"])
    json_path = Path(args.get("json") or source / "pred.json")
    png_dir = Path(args.get("png_dir") or source / "pan_pred")
    out_dir = Path(args["output"])
    try:
        offset = int(args.get("category_offset", "0"))
    except ValueError:
        raise ConfigError(f"category_offset={args['category_offset']} must be 0 or 1") from None
    if offset not in (0, 1):
        raise ConfigError(f"category_offset={offset} must be 0 (0-based VIPSeg ids) or 1 (1-based)")
    check_output_apart(out_dir, "output", {"json": json_path.parent, "png_dir": png_dir})
    videos, frames = convert(json_path, png_dir, out_dir, offset)
    if not frames:
        raise ConfigError(f"{json_path} lists no frames: nothing to convert")
    log.info(f"wrote {frames} semantic PNGs of {videos} videos to {out_dir}")


if __name__ == "__main__":
    main()
