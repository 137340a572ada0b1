"""VIPSeg panoptic predictions (PNG + JSON segments_info, as DVIS, DVIS++ and CAVIS write them) -> semantic maps.

The accepted layout (docs/data.md, "Panoptic predictions"): `<pred.json>` holds
`{"annotations": [{"video_id": V, "annotations": [{"file_name": F, "segments_info": [{"id", "category_id", ...}]}]}]}`
(a bare list of the per-video entries is accepted too) and `<pan_pred>/<V>/<stem of F>.png` is an RGB PNG whose
pixel's segment id is R + 256 G + 256^2 B (panopticapi's rgb2id). Category ids are VIPSeg's 0-based category ids
(panoVIPSeg_categories.json: raw VIPSeg class - 1), which are our train ids; `category_offset=1` reads 1-based ids.
Pixels of id 0 are unlabelled (-> 255); a non-zero id that the frame's `segments_info` does not list is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from isam2.data.labels import IGNORE, NUM_CLASSES
from isam2.data.video import DataError


@dataclass(frozen=True)
class PanopticFrame:
    """One frame of a panoptic prediction: its video, file stem, PNG and segment id -> category id."""

    video_id: str
    stem: str
    png: Path
    categories: dict[int, int]


def rgb_to_segment_id(rgb: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8 -> [H,W] int64 segment ids, R + 256 G + 256^2 B."""
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def panoptic_to_semantic(
    segment_ids: np.ndarray, categories: dict[int, int], category_offset: int = 0, source: str = "prediction"
) -> np.ndarray:
    """[H,W] uint8 train ids: each segment's category - `category_offset`; id 0 (unlabelled) -> 255.

    A non-zero id that `categories` does not list, or a category outside the 124 classes, raises DataError."""
    lut_ids = np.asarray(sorted(categories), dtype=np.int64)
    train = np.asarray([categories[i] - category_offset for i in lut_ids.tolist()], dtype=np.int64)
    bad = [
        (i, c + category_offset) for i, c in zip(lut_ids.tolist(), train.tolist()) if not 0 <= c < NUM_CLASSES
    ]
    if bad:
        raise DataError(
            f"{source}: category ids {sorted({c for _, c in bad})[:5]} are outside "
            f"{category_offset}..{NUM_CLASSES - 1 + category_offset} (category_offset={category_offset})"
        )
    out = np.full(segment_ids.shape, IGNORE, np.uint8)
    labelled = segment_ids != 0
    pos = np.searchsorted(lut_ids, segment_ids[labelled])
    known = (pos < len(lut_ids)) & (lut_ids[pos.clip(max=max(len(lut_ids) - 1, 0))] == segment_ids[labelled])
    if not known.all():
        unknown = np.unique(segment_ids[labelled][~known])
        raise DataError(
            f"{source}: segment ids {unknown[:5].tolist()} are in the PNG but not in its segments_info"
        )
    out[labelled] = train[pos].astype(np.uint8)
    return out


def _entries(data: Any, json_path: Path) -> list[dict]:
    entries = data.get("annotations") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise DataError(f"{json_path} holds no list of per-video entries (expected {{'annotations': [...]}})")
    return entries


def panoptic_frames(json_path: str | Path, png_dir: str | Path) -> Iterator[PanopticFrame]:
    """Every frame that `json_path` lists, with its PNG under `png_dir/<video>/<stem>.png` (checked to exist)."""
    json_path, png_dir = Path(json_path), Path(png_dir)
    try:
        data = json.loads(json_path.read_text())
    except FileNotFoundError:
        raise DataError(f"missing panoptic prediction file {json_path}") from None
    except (OSError, ValueError) as e:
        raise DataError(f"unreadable panoptic prediction file {json_path}: {e}") from None
    for v, video in enumerate(_entries(data, json_path)):
        try:
            video_id = str(video["video_id"])
            frames = list(video["annotations"])
            for frame in frames:
                stem = Path(str(frame["file_name"])).stem
                categories = {int(s["id"]): int(s["category_id"]) for s in frame["segments_info"]}
                png = png_dir / video_id / f"{stem}.png"
                if not png.is_file():
                    raise DataError(f"missing panoptic PNG {png} (listed in {json_path})")
                yield PanopticFrame(video_id, stem, png, categories)
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(
                f"{json_path}: entry {v} is not a video of frames with file_name and segments_info "
                f"[{{id, category_id}}] ({type(e).__name__}: {e})"
            ) from None


def read_panoptic_png(path: Path) -> np.ndarray:
    """[H,W] int64 segment ids of an RGB panoptic PNG."""
    try:
        with Image.open(path) as im:
            if im.mode != "RGB":
                raise DataError(f"{path} is not an RGB panoptic PNG (mode {im.mode})")
            return rgb_to_segment_id(np.asarray(im))
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"unreadable panoptic PNG {path}: {e}") from None
