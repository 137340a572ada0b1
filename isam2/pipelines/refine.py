"""The refine pipeline: the SAM2 refiner (Eq. 1-2) over a folder of base predictions, scored and timed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from isam2.errors import ConfigError
from isam2.files import check_output_apart, write_json
from isam2.pipelines.common import (
    DEMO_NOTE,
    Stopwatch,
    dataset_record,
    flat_metrics,
    report,
    speed_line,
    speed_record,
)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Refine every video of data.split: PNGs into cfg.output_dir, metrics.json ({"base", "refined", "speed"})
    into the run directory and output_dir. "speed" covers the refine loop (reading the base and GT PNGs,
    refining, writing, scoring); building the masklet store is excluded.
    Returns {"metrics": {"base/miou", "refined/miou", ...}, "results", "run_dir", "output_dir"}."""
    from isam2.data import DataError, open_split
    from isam2.data.predictions import check_predictions, prediction_path, read_prediction, write_prediction
    from isam2.masklets.store import ensure_store, store_folder, store_identity
    from isam2.metrics import VideoSegmentationMetrics, format_table
    from isam2.metrics.report import mvc_videos, mvc_videos_note, paper_columns
    from isam2.segment.refine import VOTES, refine_video

    if not cfg.get("base_pred_dir"):
        raise ConfigError(
            f"base_pred_dir is not set (data={cfg.data.name} has no data.base_predictions): set "
            "base_pred_dir=<folder of <video>/<frame>.png base predictions>"
        )
    base_dir = Path(cfg.base_pred_dir)
    out_dir = Path(cfg.output_dir).resolve()
    inputs = {
        "base_pred_dir": base_dir,
        "data.root": Path(cfg.data.root),
        "masklet store": store_folder(cfg.paths.store_dir, store_identity(cfg, cfg.data.split)),
    }
    vote = str(cfg.refine.vote)
    if vote not in VOTES:
        raise ConfigError(f"refine.vote={vote!r} is not one of {list(VOTES)}")
    check_output_apart(out_dir, "output_dir", inputs)  # before any work: refine never writes over its input
    if cfg.masklets.source == "gt" and cfg.sam2.get("checkpoint") is None:
        print(DEMO_NOTE, flush=True)
    dataset = open_split(cfg.data, cfg.data.split)
    check_predictions(base_dir, dataset.videos, size_hint=dataset.size_hint)
    store = ensure_store(cfg, cfg.data.split, force=cfg.force)
    metrics = {
        name: VideoSegmentationMetrics(num_classes=dataset.num_classes, **cfg.metrics)
        for name in ("base", "refined")
    }
    with Stopwatch() as clock:
        for video in tqdm(dataset, desc="refine", unit="video"):
            base = np.stack(
                [
                    read_prediction(prediction_path(base_dir, video.id, f), video.size)
                    for f in video.frame_names
                ]
            )
            if base.dtype != np.uint8:
                raise DataError(
                    f"base predictions of video {video.id!r} in {base_dir} are not 8-bit label PNGs"
                )
            base = torch.from_numpy(base)
            refined = refine_video(base, store, video.id, vote=vote, window=int(cfg.masklets.window))
            for name, frame in zip(video.frame_names, refined.numpy(), strict=True):
                write_prediction(out_dir / video.id / f"{name}.png", frame)
            gt = torch.from_numpy(video.load_masks())
            metrics["base"].update(base, gt)
            metrics["refined"].update(refined, gt)
    results: dict[str, Any] = {name: m.compute() for name, m in metrics.items()}
    measured = "refine loop: reading base and GT PNGs, Eq. 1-2, writing, scoring; store building excluded"
    results["speed"] = speed_record(dataset.num_frames, clock.seconds, len(store), measured)
    results["vote"] = vote
    results["dataset"] = dataset_record(dataset)
    results["mvc_videos"] = mvc_videos(
        [len(v) for v in dataset], cfg.metrics.vc_lengths, str(cfg.metrics.vc_protocol)
    )
    results["paper"] = {name: paper_columns(results[name]) for name in ("base", "refined")}
    for path in {Path(cfg.paths.output_dir) / "metrics.json", out_dir / "metrics.json"}:
        write_json(path, results)
    table = format_table(
        {"base": results["base"], "SAM2-refiner": results["refined"]},
        protocol_note=mvc_videos_note(results["mvc_videos"]),
    )
    report(f"{table}\n{speed_line(results['speed'])}\nrefined predictions: {out_dir}")
    return {
        "metrics": {**flat_metrics("base", results["base"]), **flat_metrics("refined", results["refined"])},
        "results": results,
        "run_dir": str(cfg.paths.output_dir),
        "output_dir": str(out_dir),
    }
