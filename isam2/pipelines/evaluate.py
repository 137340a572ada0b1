"""The evaluate pipeline: a trained head's checkpoint through exactly train's test stage, timed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from isam2.logs import get_logger
from isam2.pipelines.inputs import build_datamodule, open_stores_and_datasets, require_base_if_filling
from isam2.pipelines.report import flat_metrics, test_and_report
from isam2.pipelines.trainer import build_trainer, instantiate_all, stage_callbacks
from isam2.runs import newest_train_checkpoint
from isam2.segmenter.parts import load_head_checkpoint

log = get_logger(__name__)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Test a trained head (cfg.ckpt_path; null: the best checkpoint of the newest train run under
    paths.log_dir) on cfg.data.split with train's test stage; metrics.json also has "speed".
    Returns {"metrics": {"test/miou", ...}, "results": metrics.json's dict, "run_dir", "checkpoint"}."""
    from isam2.model.module import UNTRAINED_KEY, MaskletClassifier, check_compatible, check_features
    from isam2.store.identity import feature_identity, store_identity

    ckpt = Path(cfg.ckpt_path) if cfg.get("ckpt_path") else newest_train_checkpoint(Path(cfg.paths.log_dir))
    checkpoint = load_head_checkpoint(ckpt)
    hparams = checkpoint.get("hyper_parameters", {})
    overrides = {k: v for k, v in OmegaConf.to_container(cfg.segment, resolve=True).items() if v is not None}
    require_base_if_filling(overrides.get("fill"), cfg)
    # before any store is built: the vectors this run gives the head must be those it was trained on
    mismatch = check_features(
        hparams.get("feature_identity"),
        feature_identity(store_identity(cfg, cfg.data.split)),
        f"checkpoint {ckpt}",
        allow=bool(cfg.get("allow_feature_mismatch", False)),
    )
    stores, datasets = open_stores_and_datasets(cfg, {"test": cfg.data.split})
    check_compatible(hparams, int(cfg.data.num_classes), int(stores["test"].dim), f"checkpoint {ckpt}")
    model = MaskletClassifier.load_from_checkpoint(
        ckpt,
        map_location="cpu",
        weights_only=True,
        segment={**hparams.get("segment", {}), **overrides},
        metrics=OmegaConf.to_container(cfg.metrics, resolve=True),
    )
    datamodule = build_datamodule(cfg, stores, datasets)
    trainer = build_trainer(cfg, [*instantiate_all(cfg.get("callbacks")), *stage_callbacks(cfg)])
    note = f"checkpoint {ckpt}: {checkpoint[UNTRAINED_KEY]}" if checkpoint.get(UNTRAINED_KEY) else None
    if note:
        log.warning(note)
    results = test_and_report(
        cfg,
        trainer,
        model,
        datamodule,
        stores,
        datasets["test"].class_names,
        timed=True,
        checkpoint=str(ckpt),
        trained=not checkpoint.get(UNTRAINED_KEY),
        note=note,
        feature_mismatch=mismatch,
    )
    metrics = flat_metrics("test", results)
    return {
        "metrics": metrics,
        "results": results,
        "run_dir": str(cfg.paths.output_dir),
        "checkpoint": str(ckpt),
    }
