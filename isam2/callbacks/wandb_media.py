"""Test-stage figures (confusion, per-class IoU, overlays) saved as PNGs and logged to wandb, and wandb run helpers."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_only

from isam2.metrics.confusion import ClassConfusion, per_class_iou

SUMMARY_METRICS = ("miou", "fwiou", "mbiou", "mvc8", "mvc16")


def wandb_loggers(loggers: Iterable[Any]) -> list[Any]:
    """The WandbLoggers among `loggers`."""
    from lightning.pytorch.loggers import WandbLogger

    return [lg for lg in loggers if isinstance(lg, WandbLogger)]


# Overrides left out of run names: where things are, not what the run does (they would only make names long).
NAME_EXCLUDED = (
    "data.root",
    "paths.",
    "hydra.",
    "sam2.checkpoint",
    "ckpt_path",
    "base_pred_dir",
    "output_dir",
)
NAME_EXCLUDED += ("logger", "callbacks", "tags", "data.generate.")


def run_name(base: str, overrides: Iterable[str]) -> str:
    """`base` plus the job's overrides that say what it does, e.g. `train-vspw_isam2[model.lr=0.001,seed=1]`."""
    kept = [o for o in overrides if not o.lstrip("+~").startswith(NAME_EXCLUDED)]
    return f"{base}[{','.join(kept)}]" if kept else base


def wandb_logger(name: str, **kwargs: Any) -> Any:
    """Lightning's WandbLogger, named `run_name(name, <this Hydra job's overrides>)` (a sweep's jobs are told
    apart by their swept values); outside a Hydra job, just `name`."""
    from hydra.core.hydra_config import HydraConfig
    from lightning.pytorch.loggers import WandbLogger

    overrides = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    return WandbLogger(name=run_name(name, overrides), **kwargs)


@rank_zero_only
def log_config(loggers: Iterable[Any], cfg: Any) -> None:
    """The full resolved config (data, sam2, masklets, trainer, ...) as every logger's hyperparameters."""
    from omegaconf import OmegaConf

    resolved = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    for logger in loggers:
        logger.log_hyperparams(resolved)


@rank_zero_only
def log_run_artifacts(
    loggers: Iterable[Any], checkpoint: str | os.PathLike | None, metrics_json: str | os.PathLike | None
) -> None:
    """The head checkpoint (type `model`) and metrics.json (type `metrics`) as artifacts of each wandb run, and
    metrics.json's final metrics (per method) in the run summary."""
    import wandb

    from isam2.runs import read_json, run_methods

    for logger in wandb_loggers(loggers):
        run = logger.experiment
        name = _artifact_name(run)
        if checkpoint and Path(checkpoint).is_file():
            artifact = wandb.Artifact(f"head-{name}", type="model")
            artifact.add_file(str(checkpoint), name=Path(checkpoint).name)
            run.log_artifact(artifact)
        if metrics_json and Path(metrics_json).is_file():
            artifact = wandb.Artifact(f"metrics-{name}", type="metrics")
            artifact.add_file(str(metrics_json), name="metrics.json")
            run.log_artifact(artifact)
            for method, values in run_methods(read_json(Path(metrics_json))).items():
                for key in SUMMARY_METRICS:
                    if values.get(key) is not None:
                        run.summary[f"final/{method}/{key}"] = values[key]


def _artifact_name(run: Any) -> str:
    # artifact names allow [A-Za-z0-9_.-]; the run id keeps them apart between the jobs of a sweep
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in str(run.id))


def finish_wandb() -> None:
    """Close the active wandb run, if any (call in a `finally`: each multirun job is then a run of its own)."""
    import sys

    wandb = sys.modules.get("wandb")  # never imported: no run can be active
    if wandb is not None and wandb.run is not None:
        wandb.finish()


def frame_key(seed: int, video: str, frame: str) -> int:
    """A seeded key per frame; the frames with the smallest keys are the overlay sample: the same frames in
    every run of a split, whatever order the videos come in."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{video}/{frame}".encode()).digest()[:8], "big")


class WandbMedia(Callback):
    """Test-stage figures: a confusion matrix (normalised, the classes of the top confusions), per-class IoU bars,
    and overlays (class names, void masked out, masklet outlines) on `num_overlays` frames chosen by `seed`.

    `on_test_batch_end` takes the step's `PaintedVideo` (isam2.model.batches) and accumulates the confusion
    (synced over ranks); on test end rank zero writes `<output_dir>/figures/*.png` (always) and, with a
    WandbLogger, logs them with a per-class IoU table and the best checkpoint score in the run summary.
    Overlays come from rank zero's videos (under DDP, its shard of the split)."""

    def __init__(
        self,
        output_dir: str | os.PathLike | None = None,
        num_overlays: int = 4,
        top_k: int = 10,
        seed: int = 0,
        class_names: Sequence[str] | None = None,
    ):
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.num_overlays, self.top_k, self.seed = int(num_overlays), int(top_k), int(seed)
        self.class_names = list(class_names) if class_names is not None else None
        self.confusion: ClassConfusion | None = None
        self.samples: list[tuple[int, str, str, int, np.ndarray, np.ndarray, np.ndarray]] = []
        self.figures: dict[str, Path] = {}

    # ---- accumulation --------------------------------------------------------------------------------
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.confusion = ClassConfusion(int(pl_module.hparams.num_classes)).to(pl_module.device)
        self.samples, self.figures = [], {}

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        painted = outputs  # MaskletClassifier.test_step's PaintedVideo
        pred = painted.predictions[painted.primary]
        self.confusion.update(pred, painted.gt)
        if trainer.global_rank != 0:
            return
        for index, frame in enumerate(painted.frame_names):
            key = frame_key(self.seed, painted.video, frame)
            if len(self.samples) < self.num_overlays or key < self.samples[-1][0]:
                maps = (pred[index], painted.gt[index], painted.id_maps[index])
                sample = (key, painted.video, frame, index, *(m.cpu().numpy() for m in maps))
                self.samples = sorted([*self.samples, sample], key=lambda s: s[0])[: self.num_overlays]

    # ---- figures and logging -------------------------------------------------------------------------
    def on_test_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.confusion is None:
            return
        matrix = self.confusion.compute().cpu()  # every rank: the sum over ranks is collective
        ious = per_class_iou(matrix)
        if trainer.global_rank == 0:
            self._write_and_log(trainer, matrix.numpy(), ious)

    def _names(self, trainer: pl.Trainer, num_classes: int) -> list[str]:
        if self.class_names is not None:
            return self.class_names
        datasets = getattr(getattr(trainer, "datamodule", None), "datasets", None) or {}
        dataset = datasets.get("test") if isinstance(datasets, Mapping) else None
        return (
            list(dataset.class_names) if dataset is not None else [f"class_{i}" for i in range(num_classes)]
        )

    def _frame(self, trainer: pl.Trainer, video: str, index: int, shape: tuple[int, int]) -> np.ndarray:
        """The RGB frame from the test dataset, or mid grey when the data module has no dataset to read."""
        datasets = getattr(getattr(trainer, "datamodule", None), "datasets", None) or {}
        dataset = datasets.get("test") if isinstance(datasets, Mapping) else None
        for candidate in getattr(dataset, "videos", []):
            if candidate.id == video:
                return candidate.load_frame(index)
        return np.full((*shape, 3), 128, np.uint8)

    def _write_and_log(self, trainer: pl.Trainer, matrix: np.ndarray, ious: list[float | None]) -> None:
        from isam2 import viz

        names = self._names(trainer, matrix.shape[0])
        folder = (self.output_dir or Path(trainer.default_root_dir)) / "figures"
        figures = {
            "confusion_matrix": viz.confusion_matrix_plot(matrix, names, self.top_k),
            "per_class_iou": viz.per_class_iou_bars(ious, names),
        }
        for _, video, frame, index, pred, gt, id_map in self.samples:
            image = self._frame(trainer, video, index, pred.shape)
            for what, labels in (("prediction", pred), ("ground_truth", gt)):
                title = f"{video}/{frame} {what.replace('_', ' ')}"
                figures[f"overlay_{video}_{frame}_{what}"] = viz.overlay(
                    image, labels, names, title=title, id_map=id_map
                )
        from isam2.files import atomic_file

        for name, fig in figures.items():
            path = folder / f"{name}.png"
            with atomic_file(path) as f:
                fig.savefig(f, format="png", dpi=100)
            self.figures[name] = path
        loggers = wandb_loggers(trainer.loggers)
        if loggers:
            self._log_wandb(loggers, trainer, figures, ious, names)

    def _log_wandb(
        self,
        loggers: list[Any],
        trainer: pl.Trainer,
        figures: Mapping[str, Any],
        ious: list[float | None],
        names: list[str],
    ) -> None:
        import wandb

        rows = [[i, names[i], v] for i, v in enumerate(ious) if v is not None]
        media: dict[str, Any] = {
            "test/per_class_iou_table": wandb.Table(columns=["class_id", "class", "iou"], data=rows),
            "test/confusion_matrix": wandb.Image(str(self.figures["confusion_matrix"])),
            "test/per_class_iou": wandb.Image(str(self.figures["per_class_iou"])),
        }
        overlays = [name for name in figures if name.startswith("overlay_")]
        if overlays:
            media["test/overlays"] = [
                wandb.Image(str(self.figures[n]), caption=n[len("overlay_") :]) for n in overlays
            ]
        best = _best_checkpoint(trainer)
        final = {
            k[len("test/") :]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test/")
        }
        for logger in loggers:
            run = logger.experiment
            run.log(media)
            if best is not None:
                run.summary[f"best/{best[0]}"] = best[1]
                run.summary["best/checkpoint"] = best[2]
            for key, value in final.items():
                run.summary[f"final/{key}"] = value


def _best_checkpoint(trainer: pl.Trainer) -> tuple[str, float, str] | None:
    """(monitored metric, best score, checkpoint path) of the first ModelCheckpoint with a monitor and a score."""
    for callback in trainer.checkpoint_callbacks:
        if (
            isinstance(callback, ModelCheckpoint)
            and callback.monitor
            and callback.best_model_score is not None
        ):
            score = callback.best_model_score
            value = float(score.item() if isinstance(score, torch.Tensor) else score)
            return callback.monitor, value, str(callback.best_model_path)
    return None
