"""The train pipeline: stores, the selection split, the fit of the masklet head, the test stage, the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from omegaconf import DictConfig

from isam2.errors import ConfigError, ISAM2Error
from isam2.files import atomic_file, load_weights
from isam2.logs import get_logger
from isam2.pipelines.inputs import (
    DEMO_NOTE,
    build_datamodule,
    open_stores_and_datasets,
    require_base_if_filling,
)
from isam2.pipelines.report import flat_metrics, test_and_report
from isam2.pipelines.trainer import (
    build_trainer,
    instantiate_all,
    known_warnings_silenced,
    resume_checkpoint,
    stage_callbacks,
)

log = get_logger(__name__)

SELECTION_MODES = {
    "held_out": "held-out selection split: a seeded fraction of the train videos, never trained on",
    "paper_val": "paper-literal: the checkpoint is selected on the val split, which is also the reported split",
}


def run(cfg: DictConfig) -> dict[str, Any]:
    """Build the stores if missing, fit the masklet head (checkpoint selected on the selection split), test
    the selected checkpoint once on the test split. A training store without a labelled masklet skips the
    fit (`untrained_test_stage`).

    Writes into cfg.paths.output_dir: checkpoints/, predictions/<video>/<frame>.png (test split),
    metrics.json (with "selection"), metadata.json (and Hydra's .hydra/ and train.log).
    Returns {"metrics": {"selection/miou_best", "test/miou", ...}, "results": metrics.json's dict,
    "run_dir": str, "checkpoint": str | None}.
    """
    from hydra.utils import instantiate

    require_training(cfg.trainer)
    require_base_if_filling(cfg.segment.fill, cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.masklets.source == "gt" and cfg.sam2.get("checkpoint") is None:
        log.warning(DEMO_NOTE)
    roles, videos, selection = selection_split(cfg)
    stores, datasets = open_stores_and_datasets(cfg, roles)
    datamodule = build_datamodule(cfg, stores, datasets, videos)
    model = instantiate(
        cfg.model,
        num_classes=int(cfg.data.num_classes),
        feature_dim=int(stores["train"].dim),
        feature_identity=stores["train"].feature_identity,
        segment=cfg.segment,
        metrics=cfg.metrics,
        seed=int(cfg.seed),
        _recursive_=False,
    )
    trainer = build_trainer(cfg, [*instantiate_all(cfg.get("callbacks")), *stage_callbacks(cfg)])
    check_videos_per_process(
        {
            role: len(videos[role]) if videos and role in videos else len(datasets[role].videos)
            for role in ("val", "test")
        },
        trainer.world_size,
        selection,
    )
    if cfg.get("ckpt_path"):
        load_weights(cfg.ckpt_path, "ckpt_path")  # names a missing or damaged file, refuses pickled objects
    class_names = datasets["test"].class_names
    if len(datamodule.train_rows) == 0:
        results = untrained_test_stage(cfg, trainer, model, datamodule, stores, class_names, selection)
        return _returned(cfg, results, None)
    model.set_training_statistics(**datamodule.training_statistics())
    with known_warnings_silenced():
        trainer.fit(
            model, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg, trainer), weights_only=True
        )
    # the checkpoint of the monitored metric (last.ckpt has a callback of its own, with no monitor)
    monitored = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)]
    best = monitored[0].best_model_path if monitored else ""
    score = monitored[0].best_model_score if monitored else None
    selection = {**selection, "monitor": monitored[0].monitor if monitored else None}
    selection["miou_best"] = None if score is None else float(score)
    results = test_and_report(
        cfg,
        trainer,
        model,
        datamodule,
        stores,
        class_names,
        ckpt_path=best or None,
        metadata={"selection": selection},
        checkpoint=best or None,
        trained=True,
        selection=selection,
    )
    return _returned(cfg, results, best or None)


def _returned(cfg: DictConfig, results: dict[str, Any], checkpoint: str | None) -> dict[str, Any]:
    selection = results.get("selection") or {}
    metrics = {"selection/miou_best": selection.get("miou_best"), **flat_metrics("test", results)}
    return {
        "metrics": metrics,
        "results": results,
        "run_dir": str(cfg.paths.output_dir),
        "checkpoint": checkpoint,
    }


def selection_split(cfg: DictConfig) -> tuple[dict[str, str], dict[str, list[str]] | None, dict[str, Any]]:
    """(role -> split, role -> video ids or None, the "selection" record of metrics.json) of
    `data.selection.mode`: `held_out` (default) selects the checkpoint on `data.selection.fraction` of the
    train videos, drawn with `data.selection.seed` and left out of training; `paper_val` selects on
    `data.val_split`, as the paper does (on VSPW that is also the reported split)."""
    from isam2.data import open_split
    from isam2.datamodules.stores import held_out_videos

    data = cfg.data
    settings = data.get("selection") or {}
    mode = settings.get("mode", "held_out")
    if mode not in SELECTION_MODES:
        raise ConfigError(f"data.selection.mode={mode!r} is not one of {sorted(SELECTION_MODES)}")
    record: dict[str, Any] = {"mode": mode, "label": SELECTION_MODES[mode]}
    if mode == "paper_val":
        roles = {"train": data.train_split, "val": data.val_split, "test": data.test_split}
        return roles, None, {**record, "split": str(data.val_split), "videos": None}
    train_ids = [v.id for v in open_split(data, data.train_split).videos]
    fraction, seed = float(settings.get("fraction", 0.1)), int(settings.get("seed", 0))
    held_out = held_out_videos(train_ids, fraction, seed)
    roles = {"train": data.train_split, "val": data.train_split, "test": data.test_split}
    kept = [v for v in train_ids if v not in set(held_out)]
    record |= {"split": str(data.train_split), "fraction": fraction, "seed": seed, "videos": held_out}
    return roles, {"train": kept, "val": held_out}, record


def check_videos_per_process(counts: dict[str, int], world_size: int, selection: dict[str, Any]) -> None:
    """Whole videos are sharded over the processes with no padding (exact metrics), so each evaluated split
    needs at least one video per process; Lightning would otherwise stop one rank with a bare error."""
    for role, count in counts.items():
        if count >= world_size:
            continue
        if role == "val" and selection.get("mode") == "held_out":
            raise ConfigError(
                f"data.selection.fraction={selection.get('fraction')} holds out {count} training video(s) for "
                f"{world_size} processes, and every process needs one; raise data.selection.fraction or select "
                "on val with data.selection.mode=paper_val"
            )
        raise ConfigError(
            f"the {role} split has {count} video(s) for {world_size} processes, and every process needs one; "
            "use fewer devices (trainer.devices, trainer.num_nodes)"
        )


def require_training(trainer: DictConfig) -> None:
    """A fit of zero epochs or steps trains nothing: the test stage would score the untrained head as if
    trained. (A store with nothing to fit is another matter: `untrained_test_stage` says so.)"""
    for key in ("max_epochs", "max_steps"):
        if trainer.get(key) == 0:
            raise ConfigError(
                f"trainer.{key}=0 trains nothing, and the test stage would score an untrained head; set "
                f"trainer.{key} >= 1 (to test a trained checkpoint: python -m isam2.evaluate ckpt_path=...)"
            )


def save_untrained_checkpoint(model: pl.LightningModule, path: str | Path, note: str) -> Path:
    """The head as initialised (nothing was fitted) in Lightning's checkpoint layout, so isam2.evaluate and
    `load_from_checkpoint` take it like any other; `note` (why it is untrained) travels under UNTRAINED_KEY."""
    from isam2.model.module import UNTRAINED_KEY

    checkpoint = {
        "state_dict": model.state_dict(),
        "hyper_parameters": dict(model.hparams),
        "pytorch-lightning_version": pl.__version__,
        "epoch": 0,
        "global_step": 0,
        UNTRAINED_KEY: note,
    }
    with atomic_file(path) as f:
        torch.save(checkpoint, f)
    return Path(path)


def untrained_test_stage(
    cfg: DictConfig,
    trainer: Any,
    model: Any,
    datamodule: Any,
    stores: dict[str, Any],
    class_names: list[str],
    selection: dict[str, Any],
) -> dict[str, Any]:
    """A training store without a single masklet with a target (e.g. SAM2 kept no mask) leaves nothing to
    fit: say so, keep the head as initialised, save it as checkpoints/untrained.ckpt (so isam2.evaluate
    can use it) and run the test stage anyway; pixels under no masklet are void (or the base)."""
    store = stores["train"]
    note = (
        f"the training store {store.path} has no masklet with a target ({len(store)} masklets, none labelled): "
        "nothing to fit, the head stays UNTRAINED (its initial weights)"
    )
    if cfg.get("ckpt_path"):
        raise ISAM2Error(
            f"ckpt_path={cfg.ckpt_path} resumes training, but {note}; test that checkpoint with "
            "python -m isam2.evaluate ckpt_path=..."
        )
    log.warning(f"{note}; the test stage still runs")
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "untrained.ckpt"
    if trainer.is_global_zero:
        save_untrained_checkpoint(model, ckpt, note)
    selection = {**selection, "monitor": None, "miou_best": None}
    return test_and_report(
        cfg,
        trainer,
        model,
        datamodule,
        stores,
        class_names,
        metadata={"selection": selection},
        checkpoint=str(ckpt),
        trained=False,
        note=note,
        selection=selection,
    )
