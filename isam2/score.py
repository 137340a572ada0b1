"""`python -m isam2.score pred_dir=<dir> data.root=<root> data.split=val`: score prediction PNGs against a split's GT."""

from __future__ import annotations

import logging
import os
import sys
import warnings
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig

from isam2.errors import ISAM2Error, user_errors_exit
from isam2.files import write_json

log = logging.getLogger(__name__)


def _launched_rank() -> int:
    """This process's rank as set by the launcher (Lightning's DDP children, torchrun, SLURM); 0 otherwise."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(key, "0") or "0"
        if value.isdigit() and int(value) != 0:
            return int(value)
    return 0


def _wants_ddp(devices, num_nodes: int) -> bool:
    if num_nodes > 1:
        return True
    if isinstance(devices, (list, tuple, ListConfig)):
        return len(devices) > 1
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()]) > 1
    return text == "-1" or (text.isdigit() and int(text) > 1)


def make_trainer(trainer_cfg: DictConfig):
    """The configured Lightning Trainer for scoring: no logger or checkpoints, our own sampler, ddp when >1 device."""
    from hydra.utils import instantiate

    strategy = trainer_cfg.get("strategy", "auto")
    if strategy == "auto" and _wants_ddp(trainer_cfg.get("devices", 1), int(trainer_cfg.get("num_nodes", 1))):
        strategy = "ddp"
    return instantiate(
        trainer_cfg,
        strategy=strategy,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        use_distributed_sampler=False,
    )


def score(cfg: DictConfig) -> dict | None:
    """Validate the predictions, score the split (DDP-exact), and on rank 0 write metrics.json and print the table."""
    from isam2.data import open_split
    from isam2.data.predictions import check_predictions
    from isam2.metrics import VideoSegmentationMetrics, format_table
    from isam2.metrics.scoring import score_videos

    if cfg.pred_dir is None or str(cfg.pred_dir) == "":
        raise ISAM2Error("set pred_dir=<folder of <video>/<frame>.png predictions>")
    pred_dir = Path(str(cfg.pred_dir)).expanduser()
    dataset = open_split(cfg.data, cfg.data.split)
    check_predictions(pred_dir, dataset.videos)
    m = cfg.metrics
    try:
        metrics = VideoSegmentationMetrics(
            num_classes=int(cfg.data.num_classes),
            miou_classes=str(m.miou_classes),
            vc_protocol=str(m.vc_protocol),
            vc_lengths=list(m.vc_lengths),
            boundary_width=int(m.boundary_width),
        )
    except ValueError as e:
        raise ISAM2Error(f"bad metrics setting: {e}") from None

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")  # lightning vs torch 2.14 deprecation
    trainer = make_trainer(cfg.trainer)
    result = score_videos(
        trainer, dataset.videos, pred_dir, metrics, num_workers=int(cfg.get("num_workers", 0))
    )
    if not trainer.is_global_zero:
        return None

    result |= {
        "dataset": str(cfg.data.name),
        "split": str(cfg.data.split),
        "pred_dir": str(pred_dir.resolve()),
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
    print(format_table({pred_dir.name or str(pred_dir): result}, dataset.class_names))
    print(
        f"\n{dataset.name}/{dataset.split}: {result['num_videos']} videos, {result['num_frames']} frames; "
        f"mIoU over {'classes present in GT' if p['miou_classes'] == 'gt' else 'classes with a non-empty union'}; "
        f"mVC protocol {p['vc_protocol']}"
    )
    print("metrics: " + ", ".join(str(w) for w in written), flush=True)
    return result


@hydra.main(version_base="1.3", config_path="../conf", config_name="score")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    try:
        score(cfg)
    except ISAM2Error:
        if _launched_rank() != 0:
            sys.exit(2)  # rank 0 meets the same error and reports it once
        raise


if __name__ == "__main__":
    main()
