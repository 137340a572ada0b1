"""Lightning Trainers as every pipeline builds them: loggers, callbacks, SLURM requeue, atomic checkpoints, quiet logs."""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from isam2.logs import get_logger

log = get_logger(__name__)


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
                        log.info(f"requeued SLURM job {job}: resuming from {last}")
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
