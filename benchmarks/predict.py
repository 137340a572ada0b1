"""Predict against extraction on the same frames, and predict's peak memory on a short and a long video.

    python benchmarks/predict.py [--short 200] [--long 2000] [--height 240] [--width 320] [--image-size 64]

1. Speed, in this process: the same SAM2 masklet source runs (a) extraction into a store plus writing one
   PNG map per frame (the baseline), and (b) `Segmenter.segment` plus writing its maps (predict), on the
   short video, twice each in alternation; the best of each is kept.
2. Memory: `python -m isam2.predict` on the short and the long video (same size, same settings), each in a
   child process whose peak resident memory (ru_maxrss) is read with os.wait4.

Random SAM2 weights, hiera_t at --image-size, AMG at 4x4 points with zero thresholds (masklets are found),
window 32, CPU. The head is a tiny `python -m isam2.train` run made first. Ends with
`predict <a> fps, extract <b> fps, overhead <p>%; peak RSS <n> vs <m> frames <r>x`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
MASKLETS = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "points_per_side": 4, "window": 32}


def write_frames(folder: Path, n: int, height: int, width: int) -> Path:
    """A moving two-colour scene with a square, as JPEG frames (a frame folder is one video)."""
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:height, :width]
    for t in range(n):
        frame = np.zeros((height, width, 3), np.uint8)
        frame[:, : width // 2] = (200, 60, 40)
        frame[:, width // 2 :] = (40, 170, 80)
        x0 = (5 * t) % max(1, width - height // 3)
        square = (yy > height // 3) & (yy < 2 * height // 3) & (xx >= x0) & (xx < x0 + height // 3)
        frame[square] = (30, 40, 220)
        Image.fromarray(frame).save(folder / f"{t:05d}.jpg", quality=90)
    return folder


def train_head(tmp: Path, image_size: int) -> Path:
    overrides = [
        f"data.root={tmp}/data",
        "data.generate.num_train=3",
        "data.generate.num_val=2",
        "data.generate.num_test=2",
        "data.generate.min_frames=4",
        "data.generate.max_frames=5",
        "data.generate.height=64",
        "data.generate.width=96",
        f"sam2.image_size={image_size}",
        f"paths.store_dir={tmp}/stores",
        f"hydra.run.dir={tmp}/train",
        "logger=csv",
        "trainer.max_epochs=2",
        "callbacks.rich_progress_bar=null",
        "++figures=false",
    ]
    subprocess.run(
        [sys.executable, "-m", "isam2.train", *overrides], cwd=REPO, check=True, capture_output=True
    )
    import json

    return tmp / "train" / json.loads((tmp / "train" / "metrics.json").read_text())["checkpoint"]


def peak_rss_mib(args: list[str]) -> float:
    """Peak resident memory of `python -m isam2.predict args` in its own process, in MiB."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "isam2.predict", *args],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"isam2.predict failed:\n{proc.stderr.read().decode()[-3000:]}")
    return usage.ru_maxrss / 1024  # kilobytes on Linux


def speed(ckpt: Path, video_dir: Path, out: Path, repeats: int) -> tuple[float, float]:
    """(predict fps, extract + maps fps) on the same frames with one SAM2, best of `repeats` each."""
    from isam2.data.predictions import write_prediction
    from isam2.data.streams import frame_folder_video
    from isam2.files import BackgroundWriter
    from isam2.segmenter import Segmenter
    from isam2.store.extraction import extract_videos
    from isam2.store.writer import prepare_folder

    segmenter = Segmenter.from_checkpoint(ckpt, device="cpu", masklets={"source": "sam2", **MASKLETS})
    video = frame_folder_video(video_dir)
    for _ in segmenter.segment(video.frames[0].parent):  # warm-up: first calls build SAM2's lazy tables
        break
    best = {"predict": float("inf"), "extract": float("inf")}
    for r in range(repeats):
        start = time.perf_counter()
        writes = BackgroundWriter()  # as the predict pipeline writes its maps
        for f in segmenter.segment(video):
            writes.submit(write_prediction, out / f"predict{r}" / f"{f.name}.png", f.semantic)
        writes.wait()
        best["predict"] = min(best["predict"], time.perf_counter() - start)

        store = out / f"store{r}"
        prepare_folder(store, {"benchmark": r}, force=True)
        start = time.perf_counter()
        extract_videos(segmenter.source, [video], store)
        writes = BackgroundWriter()
        for name in video.frame_names:  # the maps a store-based run writes: one PNG per frame
            writes.submit(
                write_prediction, out / f"extract{r}" / f"{name}.png", np.zeros(video.size, np.uint8)
            )
        writes.wait()
        best["extract"] = min(best["extract"], time.perf_counter() - start)
    return len(video) / best["predict"], len(video) / best["extract"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--short", type=int, default=200)
    parser.add_argument("--long", type=int, default=2000)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="isam2-bench-predict-") as tmp_name:
        tmp = Path(tmp_name)
        ckpt = train_head(tmp, args.image_size)
        short = write_frames(tmp / "short" / "clip", args.short, args.height, args.width)
        long = write_frames(tmp / "long" / "clip", args.long, args.height, args.width)
        predict_fps, extract_fps = speed(ckpt, short, tmp / "speed", args.repeats)
        overhead = 100 * (extract_fps / predict_fps - 1)
        common = [f"ckpt_path={ckpt}", "progress=false", *(f"masklets.{k}={v}" for k, v in MASKLETS.items())]
        rss = {}
        for name, folder in (("short", short), ("long", long)):
            run = [
                *common,
                f"input={folder}",
                f"output_dir={tmp}/{name}-out",
                f"hydra.run.dir={tmp}/{name}-run",
            ]
            rss[name] = peak_rss_mib(run)
            print(
                f"{name}: {len(list(folder.glob('*.jpg')))} frames, peak RSS {rss[name]:.0f} MiB", flush=True
            )
        print(
            f"predict {predict_fps:.2f} fps, extract {extract_fps:.2f} fps, overhead {overhead:.1f}%; "
            f"peak RSS {args.long} vs {args.short} frames {rss['long'] / rss['short']:.2f}x"
        )


if __name__ == "__main__":
    main()
