"""What every pipeline shares: opening stores and datasets, the Trainer, run metadata, the report, the speed."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import sys
import time
import warnings
from collections.abc import Iterator, Mapping
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from isam2.constants import VOID
from isam2.errors import ConfigError, ISAM2Error

DEMO_NOTE = (
    "note: SAM2 runs with RANDOM weights (sam2.checkpoint=null) and ground-truth masklets "
    "(masklets=gt): a smoke-scale demo whose numbers say nothing about SAM2. With a real checkpoint: "
    "python -m isam2.train experiment=vspw_isam2 sam2.checkpoint=<sam2.1_hiera_large.pt> data.root=<VSPW_480p>"
)
TABLE_KEYS = ("miou", "fwiou", "mbiou", "mvc8", "mvc16")  # the paper's columns, in its order

log = logging.getLogger("isam2")


# ---- stores, datasets, data module ------------------------------------------------------------------------
def open_stores_and_datasets(
    cfg: DictConfig, roles: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """For each role -> split: the masklet store (built first when missing) and the dataset reader."""
    from isam2.data import open_split
    from isam2.store.build import ensure_store

    by_split_store: dict[str, Any] = {}
    by_split_data: dict[str, Any] = {}
    for split in dict.fromkeys(roles.values()):
        by_split_data[split] = open_split(cfg.data, split)
        by_split_store[split] = ensure_store(cfg, split)
        check_store_targets(by_split_store[split])
        check_store_labels(by_split_store[split], int(cfg.data.num_classes))
    return (
        {role: by_split_store[split] for role, split in roles.items()},
        {role: by_split_data[split] for role, split in roles.items()},
    )


def check_store_targets(store: Any) -> None:
    """Training and scoring need a store whose every video had ground truth (its masklets have targets)."""
    targets = store.manifest.get("targets", "all")
    if targets != "all":
        raise ConfigError(
            f"masklet store {store.path} has no targets for {'any' if targets == 'none' else 'some'} of its "
            "videos (built from a split without ground-truth masks): train and evaluate need a labelled split"
        )


def dataset_record(dataset: Any) -> dict[str, Any]:
    """Which data a result was computed on: reader name, split, root, the layout found and the split list read."""
    return {
        "name": dataset.name,
        "split": dataset.split,
        "root": str(dataset.root),
        "layout": dataset.layout,
        "split_list": str(dataset.split_source),
    }


def check_store_labels(store: Any, num_classes: int) -> None:
    """Every masklet target must be a class of `data.num_classes` (or VOID, no target)."""
    labels = np.asarray(store.label)
    targeted = labels[labels != VOID]
    if targeted.size and int(targeted.max()) >= num_classes:
        raise ConfigError(
            f"data.num_classes={num_classes}, but the masklet store {store.path} has targets up to class "
            f"{int(targeted.max())}; set data.num_classes to the dataset's class count"
        )


def build_datamodule(
    cfg: DictConfig,
    stores: dict[str, Any],
    datasets: dict[str, Any],
    videos: Mapping[str, list[str]] | None = None,
) -> Any:
    """The data module of cfg.datamodule over the opened stores; base predictions load when given."""
    from hydra.utils import instantiate

    return instantiate(
        cfg.datamodule,
        stores=stores,
        datasets=datasets,
        seed=int(cfg.seed),
        base_pred_dir=cfg.get("base_pred_dir"),
        videos=dict(videos) if videos else None,
    )


def require_base_if_filling(fill: str | None, cfg: DictConfig) -> None:
    """segment.fill=base paints uncovered pixels from a base segmentor: its predictions must be given."""
    if fill == "base" and not cfg.get("base_pred_dir"):
        raise ISAM2Error(
            "segment.fill=base needs base_pred_dir=<dir with <video>/<frame>.png base predictions>"
        )


# ---- the Trainer ------------------------------------------------------------------------------------------
def use_wandb_offline_without_key() -> None:
    """wandb runs offline (`wandb sync` later) unless an API key is configured or WANDB_MODE is set."""
    if os.environ.get("WANDB_MODE") or os.environ.get("WANDB_API_KEY"):
        return
    netrc = Path(os.environ.get("NETRC", Path.home() / ".netrc"))
    if netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore"):
        return
    os.environ["WANDB_MODE"] = "offline"


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


def stage_callbacks(cfg: DictConfig) -> list[Any]:
    """The callbacks every train/evaluate Trainer gets besides cfg.callbacks, both consuming the test steps'
    `PaintedVideo`s: the prediction PNGs (`PredictionWriter`, into <run>/predictions) and the figures
    (`WandbMedia`: <run>/figures/*.png always, and wandb media when a WandbLogger is configured)."""
    from isam2.callbacks import PredictionWriter
    from isam2.callbacks.wandb_media import WandbMedia

    run_dir = Path(cfg.paths.output_dir)
    callbacks: list[Any] = [PredictionWriter(run_dir / "predictions")]
    if cfg.get("figures", True):
        callbacks.append(WandbMedia(output_dir=run_dir, seed=int(cfg.seed)))
    return callbacks


class _DropLightningTips(logging.Filter):
    """Lightning advertises litlogger and litmodels in INFO lines ("💡 Tip: ...") of every Trainer."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


def quiet_lightning() -> None:
    """Lightning's INFO lines once: the `lightning` package logger has a console handler of its own ("INFO:
    ..." on stderr) and also propagates to the root logger, where Hydra's console and <run>/<task>.log handlers
    print it again; its own handler goes when the root has handlers. And without the litlogger/litmodels tips
    (filtered on the logger that emits them)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if logging.getLogger().handlers:
            for handler in list(logger.handlers):
                if type(handler) is logging.StreamHandler:
                    logger.removeHandler(handler)
            logger.propagate = True
    tips = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if not any(isinstance(f, _DropLightningTips) for f in tips.filters):
        tips.addFilter(_DropLightningTips())


@contextlib.contextmanager
def known_warnings_silenced() -> Iterator[None]:
    """Within a fit or test loop only: Lightning's advice to use DataLoader workers (our loaders have none on
    purpose: the training rows are gathered on the device, a validation step is one whole video) and its
    treespec deprecation under torch 2.14."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*treespec, LeafSpec.*")
        yield


def build_trainer(cfg: DictConfig, callbacks: list[Any] | None = None, **overrides: Any) -> Any:
    """The Lightning Trainer of cfg.trainer with cfg.logger, `callbacks` (default: cfg.callbacks) and
    `trainer_plugins()`; `overrides` replace settings of cfg.trainer."""
    from hydra.utils import instantiate
    from lightning.pytorch.callbacks import LearningRateMonitor

    quiet_lightning()
    if cfg.get("logger") and "wandb" in cfg.logger:
        use_wandb_offline_without_key()
    loggers = instantiate_all(cfg.get("logger"))
    if callbacks is None:
        callbacks = instantiate_all(cfg.get("callbacks"))
    if not loggers:  # LearningRateMonitor refuses to run without a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    settings = {"logger": loggers or False, "callbacks": callbacks, "plugins": trainer_plugins(), **overrides}
    trainer = instantiate(cfg.trainer, **settings)
    if loggers:
        from isam2.callbacks.wandb_media import log_config

        log_config(trainer.loggers, cfg)  # the whole resolved config, not only the head's hyperparameters
    return trainer


# ---- what a run writes ------------------------------------------------------------------------------------
def run_metadata(cfg: DictConfig, stores: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What produced a run: SAM2 checkpoint hash (or "random"), _C availability and versions (from the
    store manifests), the stores, this process's package versions, and `extra`."""

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
        **extra,
    }


def report(text: str) -> None:
    """Print `text` (the results table, a summary) and write it into the task's log file (<run>/<task>.log,
    Hydra's file handler) too, once in each place."""
    print(text, flush=True)
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, text, None, None)
    for logger in (log, logging.getLogger()):
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)


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


def flat_metrics(prefix: str, results: Mapping[str, Any]) -> dict[str, float | None]:
    """`{prefix/miou: ..., ...}`: the table's columns of a metrics dict, as a pipeline's `metrics`."""
    return {f"{prefix}/{k}": results.get(k) for k in TABLE_KEYS}


def optimized_value(cfg: DictConfig, result: Mapping[str, Any]) -> float | None:
    """The value of `cfg.optimized_metric` among a pipeline's `result["metrics"]` (what main returns to Hydra,
    e.g. to the Optuna sweeper); None when the key is null."""
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    metrics = result.get("metrics") or {}
    if name not in metrics:
        raise ConfigError(
            f"optimized_metric={name} is not a metric of this task; one of: {', '.join(metrics)}"
        )
    value = metrics[name]
    return None if value is None else float(value)


# ---- speed ------------------------------------------------------------------------------------------------
class Stopwatch:
    """Wall seconds of a `with` block (`seconds`)."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def speed_record(frames: int, seconds: float, masklets: int, measured: str) -> dict[str, Any]:
    """metrics.json "speed": frames per second over `measured` (what the clock covered) and masklets per frame
    of the store the frames came from."""
    return {
        "fps": frames / seconds if seconds > 0 else None,
        "frames": int(frames),
        "seconds": float(seconds),
        "masklets_per_frame": masklets / frames if frames else None,
        "measured": measured,
    }


def speed_line(speed: Mapping[str, Any]) -> str:
    fps = "-" if speed["fps"] is None else f"{speed['fps']:.2f}"
    per_frame = "-" if speed["masklets_per_frame"] is None else f"{speed['masklets_per_frame']:.1f}"
    return (
        f"speed: {fps} frames/s ({speed['frames']} frames in {speed['seconds']:.1f} s, {speed['measured']}); "
        f"{per_frame} masklets/frame"
    )


# ---- the test stage of train and evaluate -----------------------------------------------------------------
def test_and_report(
    cfg: DictConfig,
    trainer: Any,
    model: Any,
    datamodule: Any,
    stores: dict[str, Any],
    class_names: list[str],
    ckpt_path: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    timed: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Train's test stage, shared by evaluate: paint and score the test split (DDP-exact; the trainer's
    PredictionWriter writes the PNGs), then on rank zero metrics.json, metadata.json and the paper-style table.
    With `timed`, metrics.json has "speed" over the test loop (store building excluded). Returns the
    metrics.json dict (on every rank)."""
    from isam2.metrics import format_table
    from isam2.metrics.report import paper_columns

    out_dir = Path(cfg.paths.output_dir)
    with known_warnings_silenced(), Stopwatch() as clock:
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    if extra.get(
        "checkpoint"
    ):  # relative inside the run: two runs of one config write identical metrics.json
        checkpoint = Path(extra["checkpoint"]).resolve()
        if checkpoint.is_relative_to(out_dir.resolve()):
            extra["checkpoint"] = str(checkpoint.relative_to(out_dir.resolve()))
    results = {**(model.test_results or {}), **extra}
    results["paper"] = {name: paper_columns(method) for name, method in results["methods"].items()}
    if timed:
        store = stores["test"]
        frames = sum(store.num_frames(v) for v in store.videos())
        measured = "test loop: head, painting, scoring, PNG writing; store building excluded"
        results["speed"] = speed_record(frames, clock.seconds, len(store), measured)
    if trainer.global_rank == 0:
        from isam2.files import write_json

        write_json(out_dir / "metadata.json", run_metadata(cfg, stores, **(metadata or {})))
        write_json(out_dir / "metrics.json", results)
        lines = [
            format_table(results["methods"], class_names=class_names),
            coverage_lines(results["methods"]),
        ]
        if timed:
            lines.append(speed_line(results["speed"]))
        report("\n".join([*lines, f"run directory: {out_dir}"]))
        from isam2.callbacks.wandb_media import log_run_artifacts

        checkpoint = extra.get("checkpoint")
        log_run_artifacts(trainer.loggers, checkpoint and out_dir / checkpoint, out_dir / "metrics.json")
    return results
