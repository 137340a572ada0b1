"""The score pipeline: prediction PNGs against a split's ground truth, each rank a shard of whole videos."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from isam2.errors import ISAM2Error
from isam2.logs import get_logger
from isam2.pipelines.report import flat_metrics, report
from isam2.pipelines.trainer import known_warnings_silenced, quiet_lightning

log = get_logger(__name__)


def make_trainer(trainer_cfg: DictConfig) -> Any:
    """The configured Lightning Trainer for scoring: no logger or checkpoints, our own sampler, ddp when >1
    device (Lightning launches the other ranks by re-running the command)."""
    from hydra.utils import instantiate

    from isam2.distributed import asks_for_several_processes

    quiet_lightning()
    strategy = trainer_cfg.get("strategy", "auto")
    if strategy == "auto" and asks_for_several_processes(trainer_cfg):
        strategy = "ddp"
    return instantiate(
        trainer_cfg,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )


def run(cfg: DictConfig) -> dict[str, Any]:
    """Validate the predictions (cfg.pred_dir), score the split (DDP-exact), and on rank 0 write metrics.json
    (and cfg.output) and print the table. A bad file ends every rank; rank 0 reports it once.
    Returns {"metrics": {"score/miou", ...}, "results": metrics.json's dict, "run_dir"} ({} metrics on other
    ranks)."""
    from isam2.distributed import launched_rank

    try:
        return _score(cfg)
    except ISAM2Error:
        if launched_rank() != 0:
            sys.exit(2)  # rank 0 meets the same error and reports it once
        raise


def _score(cfg: DictConfig) -> dict[str, Any]:
    from isam2.data import open_split
    from isam2.data.predictions import check_predictions
    from isam2.files import write_json
    from isam2.metrics import VideoSegmentationMetrics, format_table
    from isam2.metrics.report import mvc_videos, mvc_videos_note, paper_columns
    from isam2.metrics.results import ScoreResults
    from isam2.pipelines.scoring import score_videos

    if cfg.pred_dir is None or str(cfg.pred_dir) == "":
        raise ISAM2Error(
            f"pred_dir is not set (data={cfg.data.name} has no data.base_predictions): set "
            "pred_dir=<folder of <video>/<frame>.png predictions>"
        )
    pred_dir = Path(str(cfg.pred_dir)).expanduser()
    dataset = open_split(cfg.data, cfg.data.split)
    check_predictions(pred_dir, dataset.videos, size_hint=dataset.size_hint)
    metrics = VideoSegmentationMetrics(num_classes=int(cfg.data.num_classes), **cfg.metrics)
    trainer = make_trainer(cfg.trainer)
    with known_warnings_silenced():
        scores = score_videos(
            trainer, dataset.videos, pred_dir, metrics, num_workers=int(cfg.get("num_workers", 0))
        )
    if not trainer.is_global_zero:
        return {"metrics": {}, "results": scores, "run_dir": str(cfg.paths.output_dir)}

    result: ScoreResults = {
        **scores,
        "dataset": str(cfg.data.name),
        "split": str(cfg.data.split),
        "pred_dir": str(pred_dir.resolve()),
        "layout": dataset.layout,
        "mvc_videos": mvc_videos(
            [len(v) for v in dataset], cfg.metrics.vc_lengths, str(cfg.metrics.vc_protocol)
        ),
        "paper": paper_columns(scores),
    }
    if result["num_invalid_pred"]:
        log.warning(
            "%d prediction pixels hold values outside [0, %d) other than 255; they count as misses",
            result["num_invalid_pred"],
            metrics.num_classes,
        )
    written = [write_json(Path(cfg.paths.output_dir) / "metrics.json", result)]
    if cfg.get("output"):
        written.append(write_json(Path(str(cfg.output)).expanduser(), result))
    p = result["protocol"]
    note = mvc_videos_note(result["mvc_videos"])
    classes = "classes present in GT" if p["miou_classes"] == "gt" else "classes with a non-empty union"
    report(
        f"{format_table({pred_dir.name or str(pred_dir): result}, dataset.class_names, note)}\n\n"
        f"{dataset.name}/{dataset.split}: {result['num_videos']} videos, {result['num_frames']} frames; "
        f"mIoU over {classes}; mVC protocol {p['vc_protocol']}\n"
        "metrics: " + ", ".join(str(w) for w in written)
    )
    return {"metrics": flat_metrics("score", result), "results": result, "run_dir": str(cfg.paths.output_dir)}
