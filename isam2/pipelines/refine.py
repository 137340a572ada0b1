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
from isam2.logs import get_logger
from isam2.metrics.results import RefineResults
from isam2.pipelines.inputs import DEMO_NOTE, dataset_record
from isam2.pipelines.report import Stopwatch, flat_metrics, report, speed_line, speed_record

log = get_logger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Refine every video of data.split: PNGs into cfg.output_dir, metrics.json ({"base", "refined", "speed"})
    into the run directory and output_dir. "speed" covers the refine loop (reading the base and GT PNGs,
    refining, writing, scoring); building the masklet store is excluded.
    Returns {"metrics": {"base/miou", "refined/miou", ...}, "results", "run_dir", "output_dir"}."""
    from isam2.data import DataError, open_split
    from isam2.data.predictions import check_predictions, prediction_path, read_prediction, write_prediction
    from isam2.metrics import VideoSegmentationMetrics, format_table
    from isam2.metrics.report import mvc_videos, mvc_videos_note, paper_columns
    from isam2.segment.refine import VOTES, refine_video
    from isam2.store.build import ensure_store
    from isam2.store.identity import store_folder, store_identity

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
        log.warning(DEMO_NOTE)
    # unlabelled videos: refined, not scored
    dataset = open_split(cfg.data, cfg.data.split, require_masks=False)
    labelled = [v.id for v in dataset.videos if v.masks is not None]
    if len(labelled) < len(dataset):
        log.warning(
            f"{len(dataset) - len(labelled)} of {len(dataset)} videos of split {cfg.data.split!r} have no "
            "ground truth: they are refined and written, and "
            + ("only the others are scored" if labelled else "nothing is scored")
        )
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
            if video.masks is not None:
                gt = torch.from_numpy(video.load_masks())
                metrics["base"].update(base, gt)
                metrics["refined"].update(refined, gt)
    if not labelled:
        return _unscored(cfg, dataset, clock.seconds, len(store), vote, out_dir)
    scores = {name: m.compute() for name, m in metrics.items()}
    results: RefineResults = {
        "base": scores["base"],
        "refined": scores["refined"],
        "scored_videos": len(labelled),
        "speed": speed_record(dataset.num_frames, clock.seconds, len(store), REFINE_MEASURED),
        "vote": vote,
        "dataset": dataset_record(dataset),
        "mvc_videos": mvc_videos(
            [len(v) for v in dataset if v.masks is not None],
            cfg.metrics.vc_lengths,
            str(cfg.metrics.vc_protocol),
        ),
        "paper": {name: paper_columns(score) for name, score in scores.items()},
    }
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


REFINE_MEASURED = "refine loop: reading base and GT PNGs, Eq. 1-2, writing, scoring; store building excluded"


def _unscored(cfg: DictConfig, dataset: Any, seconds: float, masklets: int, vote: str, out_dir: Path) -> dict:
    """A split without ground truth: the refined maps are written; metrics.json holds no scores."""
    results: RefineResults = {
        "base": None,
        "refined": None,
        "scored_videos": 0,
        "speed": speed_record(dataset.num_frames, seconds, masklets, REFINE_MEASURED),
        "vote": vote,
        "dataset": dataset_record(dataset),
    }
    for path in {Path(cfg.paths.output_dir) / "metrics.json", out_dir / "metrics.json"}:
        write_json(path, results)
    report(f"no ground truth: nothing scored\n{speed_line(results['speed'])}\nrefined predictions: {out_dir}")
    return {
        "metrics": {},
        "results": results,
        "run_dir": str(cfg.paths.output_dir),
        "output_dir": str(out_dir),
    }
