"""The evaluate pipeline: a trained head's checkpoint through exactly train's test stage, timed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from isam2.errors import ISAM2Error
from isam2.files import load_weights
from isam2.pipelines.common import (
    build_datamodule,
    build_trainer,
    flat_metrics,
    instantiate_all,
    open_stores_and_datasets,
    require_base_if_filling,
    stage_callbacks,
    test_and_report,
)


def run(cfg: DictConfig) -> dict[str, Any]:
    """Test a trained head (cfg.ckpt_path; null: the best checkpoint of the newest train run under
    paths.log_dir) on cfg.data.split with train's test stage; metrics.json also has "speed".
    Returns {"metrics": {"test/miou", ...}, "results": metrics.json's dict, "run_dir", "checkpoint"}."""
    from isam2.masklets.store import feature_identity, store_identity
    from isam2.model.module import UNTRAINED_KEY, MaskletClassifier, check_compatible, check_features

    ckpt = Path(cfg.ckpt_path) if cfg.get("ckpt_path") else newest_train_checkpoint(Path(cfg.paths.log_dir))
    checkpoint = load_weights(ckpt, "ckpt_path")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ISAM2Error(
            f"ckpt_path={ckpt} is not a checkpoint of the masklet head (no state_dict); "
            "use one from <run>/checkpoints/ of python -m isam2.train"
        )
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
    extra: dict[str, Any] = {"feature_mismatch": mismatch} if mismatch else {}
    if checkpoint.get(UNTRAINED_KEY):
        extra["note"] = f"checkpoint {ckpt}: {checkpoint[UNTRAINED_KEY]}"
        print(f"warning: {extra['note']}", flush=True)
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
        **extra,
    )
    metrics = flat_metrics("test", results)
    return {
        "metrics": metrics,
        "results": results,
        "run_dir": str(cfg.paths.output_dir),
        "checkpoint": str(ckpt),
    }


def newest_train_checkpoint(log_dir: Path) -> Path:
    """The checkpoint that the newest finished train run under `log_dir`/train tested (its metrics.json's
    "checkpoint": the best one by the selection metric), said in one printed line."""
    import json

    runs = sorted((log_dir / "train").glob("**/metrics.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for metrics in runs:
        try:
            recorded = json.loads(metrics.read_text()).get("checkpoint")
        except (OSError, ValueError):
            continue
        if recorded and (metrics.parent / recorded).is_file():
            ckpt = metrics.parent / recorded  # absolute `recorded` stays as it is
            print(f"ckpt_path not set: evaluating {ckpt}, the checkpoint of the newest train run", flush=True)
            return ckpt
    raise ISAM2Error(
        f"ckpt_path is not set and no finished train run with a checkpoint is under {log_dir / 'train'} "
        "(paths.log_dir); set ckpt_path=<run>/checkpoints/<best>.ckpt or run python -m isam2.train first"
    )
