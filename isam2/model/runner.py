"""The train and evaluate stages as library functions (the CLIs only compose config and call these)."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from isam2.errors import ConfigError, ISAM2Error
from isam2.files import load_weights, write_json

ROLES = ("train", "val", "test")
DEMO_NOTE = (
    "note: SAM2 runs with RANDOM weights (sam2.checkpoint=null) and ground-truth masklets "
    "(masklets=gt): a smoke-scale demo whose numbers say nothing about SAM2. With a real checkpoint: "
    "python -m isam2.train experiment=vspw_isam2 sam2.checkpoint=<sam2.1_hiera_tiny.pt> data.root=<VSPW_480p>"
)


def use_wandb_offline_without_key() -> None:
    """wandb runs offline (`wandb sync` later) unless an API key is configured or WANDB_MODE is set."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    os.environ["WANDB_MODE"] = "offline"


def _split_names(cfg: DictConfig) -> dict[str, str]:
    return {"train": cfg.data.train_split, "val": cfg.data.val_split, "test": cfg.data.test_split}


def open_stores_and_datasets(cfg: DictConfig, roles: dict[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """For each role -> split: the masklet store (built first when missing) and the dataset reader."""
    from isam2.data import open_split
    from isam2.masklets.store import ensure_store

    by_split_store: dict[str, Any] = {}
    by_split_data: dict[str, Any] = {}
    for split in dict.fromkeys(roles.values()):
        by_split_data[split] = open_split(cfg.data, split)
        by_split_store[split] = ensure_store(cfg, split)
        _check_store_labels(by_split_store[split], int(cfg.data.num_classes))
    return (
        {role: by_split_store[split] for role, split in roles.items()},
        {role: by_split_data[split] for role, split in roles.items()},
    )


def _check_store_labels(store: Any, num_classes: int) -> None:
    """Every masklet target must be a class of `data.num_classes` (or 255, no target)."""
    labels = np.asarray(store.label)
    targeted = labels[labels != 255]
    if targeted.size and int(targeted.max()) >= num_classes:
        raise ConfigError(
            f"data.num_classes={num_classes}, but the masklet store {store.path} has targets up to class "
            f"{int(targeted.max())}; set data.num_classes to the dataset's class count"
        )


def instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every `_target_` entry of a logger/callback group (null entries are skipped)."""
    from hydra.utils import instantiate

    if not group:
        return []
    return [instantiate(entry) for entry in group.values() if entry is not None and "_target_" in entry]


def trainer_plugins() -> list[Any]:
    """The plugins of every Trainer: checkpoint files written atomically (`AtomicCheckpointIO`) and, under srun,
    Lightning's SLURMEnvironment with auto-requeue on SIGUSR1 (`#SBATCH --signal=SIGUSR1@90`): Lightning saves
    its own mid-epoch `hpc_ckpt_<n>.ckpt` and runs `scontrol requeue`; the requeued job resumes from last.ckpt
    (`resume_checkpoint`)."""
    import signal

    from lightning.fabric.plugins.environments import SLURMEnvironment

    from isam2.model.checkpointing import AtomicCheckpointIO

    plugins: list[Any] = [AtomicCheckpointIO()]
    if SLURMEnvironment.detect():
        plugins.append(SLURMEnvironment(auto_requeue=True, requeue_signal=signal.SIGUSR1))
    return plugins


def resume_checkpoint(cfg: DictConfig, trainer: Any) -> str | None:
    """What the fit resumes from: cfg.ckpt_path, but a requeued SLURM job (SLURM_RESTART_COUNT >= 1: preempted,
    or requeued by Lightning on SIGUSR1) continues from its own last.ckpt when there is one, the last completed
    epoch (the run directory is pinned per job id, so a requeued job finds it). With none yet, Lightning takes
    its hpc checkpoint if it saved one (resumed mid-epoch: not exact) and otherwise starts over."""
    if int(os.environ.get("SLURM_RESTART_COUNT") or 0) >= 1:
        for callback in trainer.checkpoint_callbacks:
            if getattr(callback, "monitor", "") is None and callback.filename == "last":
                last = Path(callback.dirpath) / f"last{callback.FILE_EXTENSION}"
                if last.is_file():
                    if trainer.is_global_zero:
                        job = os.environ.get("SLURM_JOB_ID")
                        print(f"requeued SLURM job {job}: resuming from {last}", flush=True)
                    return str(last)
    return cfg.get("ckpt_path")


def build_trainer(cfg: DictConfig, with_callbacks: bool = True) -> Any:
    """The Lightning Trainer of cfg.trainer with cfg.logger, cfg.callbacks and `trainer_plugins()`."""
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import LearningRateMonitor

    if cfg.get("logger") and "wandb" in cfg.logger:
        use_wandb_offline_without_key()
    loggers = instantiate_all(cfg.get("logger"))
    callbacks = instantiate_all(cfg.get("callbacks")) if with_callbacks else []
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    return instantiate(cfg.trainer, logger=loggers or False, callbacks=callbacks, plugins=trainer_plugins())


def run_metadata(cfg: DictConfig, stores: dict[str, Any]) -> dict[str, Any]:
    """What produced a run: SAM2 checkpoint hash (or "random"), _C availability and versions (from the
    store manifests), the stores, this process's package versions."""

    def version(name: str) -> str:
        try:
            return importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            return "absent"

    first = next(iter(stores.values()))
    return {
        "backbone": first.manifest.get("backbone"),
        "store_versions": first.manifest.get("versions"),
        "stores": {role: str(store.path) for role, store in stores.items()},
        "seed": int(cfg.seed),
        "versions": {
            "python": platform.python_version(),
            **{p: version(p) for p in ("isam2", "torch", "lightning", "sam2", "torchmetrics", "hydra-core")},
        },
        "argv": sys.argv,
    }


def require_training(trainer: DictConfig) -> None:
    """A fit of zero epochs or steps trains nothing: the test stage would score the untrained head as if
    trained. (A store with nothing to fit is another matter: `untrained_test_stage` says so.)"""
    for key in ("max_epochs", "max_steps"):
        if trainer.get(key) == 0:
            raise ConfigError(
                f"trainer.{key}=0 trains nothing, and the test stage would score an untrained head; set "
                f"trainer.{key} >= 1 (to test a trained checkpoint: python -m isam2.evaluate ckpt_path=...)"
            )


def require_base_if_filling(fill: str | None, cfg: DictConfig) -> None:
    """segment.fill=base paints uncovered pixels from a base segmentor: its predictions must be given."""
    if fill == "base" and not cfg.get("base_pred_dir"):
        raise ISAM2Error(
            "segment.fill=base needs base_pred_dir=<dir with <video>/<frame>.png base predictions>"
        )


def build_datamodule(cfg: DictConfig, stores: dict[str, Any], datasets: dict[str, Any]) -> Any:
    """The data module of cfg.datamodule over the opened stores; base predictions load when given."""
    from hydra.utils import instantiate

    return instantiate(
        cfg.datamodule,
        stores=stores,
        datasets=datasets,
        seed=int(cfg.seed),
        base_pred_dir=cfg.get("base_pred_dir"),
    )


def coverage_lines(methods: dict[str, dict[str, Any]]) -> str:
    """Masklet coverage of the GT pixels and each method's accuracy inside versus outside the masklets."""

    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    first = next(iter(methods.values()))
    lines = [
        f"masklets cover {pct(first.get('coverage'))}% of the valid GT pixels; pixel accuracy inside / outside:"
    ]
    lines += [
        f"  {name}: {pct(m.get('acc_inside'))}% / {pct(m.get('acc_outside'))}%" for name, m in methods.items()
    ]
    return "\n".join(lines)


def test_and_report(
    cfg: DictConfig,
    trainer: Any,
    model: Any,
    datamodule: Any,
    stores: dict[str, Any],
    class_names: list[str],
    ckpt_path: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Train's test stage, shared by isam2.evaluate: paint and score the test split (DDP-exact), write the
    prediction PNGs, then on rank zero metrics.json, metadata.json and the paper-style table."""
    from isam2.metrics import format_table

    out_dir = Path(cfg.paths.output_dir)
    model.prediction_dir = out_dir / "predictions"
    trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    if extra.get(
        "checkpoint"
    ):  # relative inside the run: two runs of one config write identical metrics.json
        checkpoint = Path(extra["checkpoint"]).resolve()
        if checkpoint.is_relative_to(out_dir.resolve()):
            extra["checkpoint"] = str(checkpoint.relative_to(out_dir.resolve()))
    results = {**(model.test_results or {}), **extra}
    if trainer.global_rank == 0:
        write_json(out_dir / "metadata.json", run_metadata(cfg, stores))
        write_json(out_dir / "metrics.json", results)
        print(format_table(results["methods"], class_names=class_names), flush=True)
        print(coverage_lines(results["methods"]), flush=True)
        print(f"run directory: {out_dir}", flush=True)
    return results


def train(cfg: DictConfig) -> dict[str, Any]:
    """Build stores if missing, fit the masklet head, test with the best checkpoint; returns test metrics.
    A training store without a labelled masklet skips the fit (`untrained_test_stage`).

    Writes into cfg.paths.output_dir: checkpoints/, predictions/<video>/<frame>.png (test split),
    metrics.json, metadata.json (and Hydra's .hydra/ with the resolved config).
    """
    import lightning.pytorch as pl
    from hydra.utils import instantiate

    require_training(cfg.trainer)
    require_base_if_filling(cfg.segment.fill, cfg)
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    if cfg.masklets.source == "gt" and cfg.sam2.get("checkpoint") is None:
        print(DEMO_NOTE, flush=True)
    stores, datasets = open_stores_and_datasets(cfg, _split_names(cfg))
    datamodule = build_datamodule(cfg, stores, datasets)
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
    trainer = build_trainer(cfg)
    if cfg.get("ckpt_path"):
        load_weights(cfg.ckpt_path, "ckpt_path")  # names a missing or damaged file, refuses pickled objects
    class_names = datasets["test"].class_names
    if len(datamodule.train_rows) == 0:
        return untrained_test_stage(cfg, trainer, model, datamodule, stores, class_names)
    trainer.fit(model, datamodule=datamodule, ckpt_path=resume_checkpoint(cfg, trainer), weights_only=True)
    # the checkpoint of the monitored metric (last.ckpt has a callback of its own, with no monitor)
    monitored = [c for c in trainer.checkpoint_callbacks if getattr(c, "monitor", None)]
    best = monitored[0].best_model_path if monitored else ""
    return test_and_report(
        cfg,
        trainer,
        model,
        datamodule,
        stores,
        class_names,
        best or None,
        checkpoint=best or None,
        trained=True,
    )


def untrained_test_stage(
    cfg: DictConfig, trainer: Any, model: Any, datamodule: Any, stores: dict[str, Any], class_names: list[str]
) -> dict[str, Any]:
    """A training store without a single masklet with a target (e.g. SAM2 kept no mask) leaves nothing to
    fit: say so, keep the head as initialised, save it as checkpoints/untrained.ckpt (so isam2.evaluate
    can use it) and run the test stage anyway; pixels under no masklet are void (or the base)."""
    from isam2.model.module import save_untrained_checkpoint

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
    print(f"warning: {note}; the test stage still runs", flush=True)
    ckpt = Path(cfg.paths.output_dir) / "checkpoints" / "untrained.ckpt"
    if trainer.is_global_zero:
        save_untrained_checkpoint(model, ckpt, note)
    return test_and_report(
        cfg, trainer, model, datamodule, stores, class_names, checkpoint=str(ckpt), trained=False, note=note
    )


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a trained head (cfg.ckpt_path) on cfg.data.split with exactly train's test stage."""

    from isam2.masklets.store import feature_identity, store_identity
    from isam2.model.module import UNTRAINED_KEY, MaskletClassifier, check_compatible, check_features

    ckpt = Path(cfg.ckpt_path)
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
    trainer = build_trainer(cfg, with_callbacks=False)
    extra: dict[str, Any] = {"feature_mismatch": mismatch} if mismatch else {}
    if checkpoint.get(UNTRAINED_KEY):
        extra["note"] = f"checkpoint {ckpt}: {checkpoint[UNTRAINED_KEY]}"
        print(f"warning: {extra['note']}", flush=True)
    return test_and_report(
        cfg,
        trainer,
        model,
        datamodule,
        stores,
        datasets["test"].class_names,
        checkpoint=str(ckpt),
        trained=not checkpoint.get(UNTRAINED_KEY),
        **extra,
    )
