"""MaskletClassifier: the LightningModule that trains the masklet head and paints and scores videos (no file I/O)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torchmetrics.classification import MulticlassAccuracy

from isam2.constants import VOID as IGNORE
from isam2.errors import ISAM2Error
from isam2.logs import get_logger
from isam2.metrics.coverage import MaskletCoverage
from isam2.model.batches import MaskletBatch, PaintedVideo, VideoBatch
from isam2.model.head import build_head
from isam2.segment.methods import METHOD_NAMES

log = get_logger(__name__)

CLASS_WEIGHTINGS = {"none": 0.0, "inverse_sqrt": 0.5, "inverse": 1.0}  # weight = frequency ** -power
SEGMENT_DEFAULTS = {"fill": "none", "track_vote": False, "window": 32}
FILLS = ("none", "base")
UNTRAINED_KEY = "isam2_untrained"  # checkpoint key: why the head in it was never fitted
# validation logs: selection/miou etc., the split the checkpoint is selected on
SELECTION_PREFIX = "selection"


def _plain(cfg: Any) -> Any:
    """Plain containers for hparams (checkpoints then load with weights_only=True)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else cfg


def class_weights_from_counts(counts: torch.Tensor, weighting: str) -> torch.Tensor:
    """[C] loss weights from training label counts: frequency ** -power, scaled so the mean weight per
    training sample is 1; classes absent from training get weight 0 (they are never a target)."""
    if weighting not in CLASS_WEIGHTINGS:
        raise ISAM2Error(f"model.class_weighting={weighting!r} is not one of {sorted(CLASS_WEIGHTINGS)}")
    counts = counts.double()
    freq = counts / counts.sum().clamp_min(1)
    weights = torch.where(freq > 0, freq.clamp_min(1e-12) ** -CLASS_WEIGHTINGS[weighting], 0.0)
    return (weights / (freq * weights).sum().clamp_min(1e-12)).float()


def check_compatible(hparams: Mapping[str, Any], num_classes: int, feature_dim: int, source: str) -> None:
    """Refuse a checkpoint trained for another number of classes or another feature width."""
    have = (int(hparams.get("num_classes", -1)), int(hparams.get("feature_dim", -1)))
    if have != (int(num_classes), int(feature_dim)):
        raise ISAM2Error(
            f"{source} was trained for {have[0]} classes and {have[1]}-dim features, but this run has "
            f"{num_classes} classes and {feature_dim}-dim features (check data and sam2 settings)"
        )


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings as {dotted key: value}; lists are values."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            out.update(_leaves(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def check_features(
    trained: Mapping[str, Any] | None, current: Mapping[str, Any] | None, source: str, allow: bool
) -> list[str]:
    """Refuse a head trained on another feature space than this run's vectors: the sam2 and masklets identity
    its checkpoint records (hparams `feature_identity`) against this run's (`isam2.store.identity.
    feature_identity`). With `allow` (allow_feature_mismatch=true) a difference is a warning. Returns the
    differences, one `key: trained value (head) vs this run's value` each."""
    if trained is None or current is None:
        log.warning(
            f"{source} records no feature identity (saved before isam2 recorded it): its sam2 and "
            "masklets settings cannot be checked against this run's"
        )
        return []
    head, run = _leaves(trained), _leaves(current)
    diffs = [
        f"{key}: {head.get(key, 'absent')!r} (head) vs {run.get(key, 'absent')!r} (this run)"
        for key in sorted(set(head) | set(run))
        if key not in head or key not in run or head[key] != run[key]
    ]
    if not diffs:
        return []
    message = f"{source} was trained on other features than this run gives it: {'; '.join(diffs)}"
    if not allow:
        raise ISAM2Error(
            f"{message}; evaluate with the sam2 and masklets settings of its training run (the same "
            "experiment and overrides), or pass allow_feature_mismatch=true to score it anyway"
        )
    log.warning(f"{message}; evaluating anyway (allow_feature_mismatch=true)")
    return diffs


class MaskletClassifier(pl.LightningModule):
    """Classifies masklet vectors; validation and test paint whole videos and score them pixel-wise.

    Train batches are `MaskletBatch`es, validation/test batches one whole video each (`VideoBatch`); validation
    and test steps return a `PaintedVideo` for the callbacks (PNG writer, logging). Feature statistics and
    class weights are set by the caller before fitting (`set_training_statistics`); the methods that need a
    base segmentor are scored when the test batches carry `base`. `optimizer`/`scheduler` are Hydra configs
    with `_partial_: true`. SAM2 is not part of this module, so checkpoints hold only the head.
    """

    def __init__(
        self,
        num_classes: int,
        feature_dim: int,
        head: Mapping[str, Any] | None = None,
        optimizer: Mapping[str, Any] | None = None,
        scheduler: Mapping[str, Any] | None = None,
        label_smoothing: float = 0.0,
        class_weighting: str = "none",
        min_purity: float = 0.0,
        purity_weighting: bool = False,
        segment: Mapping[str, Any] | None = None,
        metrics: Mapping[str, Any] | None = None,
        seed: int = 0,
        feature_identity: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        head, optimizer, scheduler, segment, metrics = map(
            _plain, (head, optimizer, scheduler, segment, metrics)
        )
        segment = {**SEGMENT_DEFAULTS, **(segment or {})}
        if segment["fill"] not in FILLS:
            raise ISAM2Error(f"segment.fill={segment['fill']!r} is not one of {list(FILLS)}")
        if class_weighting not in CLASS_WEIGHTINGS:
            raise ISAM2Error(
                f"model.class_weighting={class_weighting!r} is not one of {sorted(CLASS_WEIGHTINGS)}"
            )
        if not 0.0 <= float(min_purity) <= 1.0:
            raise ISAM2Error(f"model.min_purity={min_purity} must lie in [0, 1]")
        self.save_hyperparameters(
            {
                "num_classes": int(num_classes),
                "feature_dim": int(feature_dim),
                "head": dict(head or {}),
                "optimizer": optimizer or {"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-3},
                "scheduler": scheduler,
                "label_smoothing": float(label_smoothing),
                "class_weighting": class_weighting,
                "min_purity": float(min_purity),
                "purity_weighting": bool(purity_weighting),
                "segment": segment,
                "metrics": dict(metrics or {}),
                "seed": int(seed),
                # the sam2 and masklets identity of the training store: what the head's inputs must be
                "feature_identity": _plain(feature_identity),
            }
        )
        self.head = build_head(int(feature_dim), int(num_classes), head, self.hparams.feature_identity)
        self.register_buffer("class_weights", torch.ones(int(num_classes)))
        self.train_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE)
        self.val_acc = MulticlassAccuracy(num_classes, average="micro", ignore_index=IGNORE)
        self.val_metrics = self._video_metrics()
        # one set per method of the paper's tables; those needing a base run only when one is given
        self.test_metrics = torch.nn.ModuleDict({k: self._video_metrics() for k in METHOD_NAMES})
        self.test_coverage = torch.nn.ModuleDict({k: MaskletCoverage() for k in METHOD_NAMES})
        self._saw_base = False  # a test batch carried base predictions (all four methods are scored)
        self.test_results: dict[str, Any] | None = None  # set at the end of the test epoch, on every rank

    def _video_metrics(self):
        from isam2.metrics import VideoSegmentationMetrics

        return VideoSegmentationMetrics(self.hparams.num_classes, **self.hparams.metrics)

    # ---- data statistics -------------------------------------------------------------------------------
    def set_training_statistics(
        self, mean: torch.Tensor, std: torch.Tensor, label_counts: torch.Tensor
    ) -> None:
        """Feature standardisation and class weights from the training store (kept in the checkpoint)."""
        self.head.set_statistics(mean, std)
        self.class_weights.copy_(class_weights_from_counts(label_counts, self.hparams.class_weighting))

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        check_compatible(
            checkpoint.get("hyper_parameters", {}),
            self.hparams.num_classes,
            self.hparams.feature_dim,
            "the checkpoint",
        )

    # ---- forward and loss ------------------------------------------------------------------------------
    def masklet_logits(self, features: torch.Tensor) -> torch.Tensor:
        """[n, C] class logits of masklet vectors [n, d]."""
        return self.head(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.masklet_logits(features)

    def _targets(self, label: torch.Tensor, purity: torch.Tensor) -> torch.Tensor:
        target = label.long()
        return torch.where(purity >= self.hparams.min_purity, target, torch.full_like(target, IGNORE))

    def _loss(self, logits: torch.Tensor, target: torch.Tensor, purity: torch.Tensor) -> torch.Tensor:
        keep = target != IGNORE
        if not bool(keep.any()):
            return logits.sum() * 0.0  # keeps the graph (and DDP's gradient sync) alive
        if self.hparams.class_weighting == "none" and not self.hparams.purity_weighting:
            # unweighted: the fused kernel skips ignored rows itself (no masked copy of the logits)
            return F.cross_entropy(
                logits, target, ignore_index=IGNORE, label_smoothing=self.hparams.label_smoothing
            )
        logits, target = logits[keep], target[keep]
        per_row = F.cross_entropy(
            logits, target, label_smoothing=self.hparams.label_smoothing, reduction="none"
        )
        weight = self.class_weights[target]
        if self.hparams.purity_weighting:
            weight = weight * purity[keep].float()
        return (per_row * weight).sum() / weight.sum().clamp_min(1e-12)

    # ---- training --------------------------------------------------------------------------------------
    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        # Dropout draws from the global generator, reseeded before every batch from (seed, epoch, batch, rank):
        # other draws (a DataLoader iterator takes one, created in another order on resume) cannot shift it,
        # so a run resumed from an epoch checkpoint continues exactly like an uninterrupted one.
        key = [self.hparams.seed, self.current_epoch, batch_idx, self.global_rank]
        torch.manual_seed(int(np.random.SeedSequence(key).generate_state(1)[0]))

    def training_step(self, batch: MaskletBatch, batch_idx: int) -> torch.Tensor:
        logits = self.masklet_logits(batch["features"])
        target = self._targets(batch["label"], batch["purity"])
        loss = self._loss(logits, target, batch["purity"])
        self.train_acc(logits.detach(), target)
        n = len(target)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        self.log("train/acc", self.train_acc, on_step=False, on_epoch=True, batch_size=n)
        return loss

    # ---- whole-video evaluation ------------------------------------------------------------------------
    @property
    def primary_method(self) -> str:
        """The method whose maps are written and logged: I-SAM2, or I-SAM2_base with segment.fill=base."""
        return "isam2_base" if self.hparams.segment["fill"] == "base" else "isam2"

    def classify_video(self, batch: VideoBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits [n,C], class per row [n]) of one video, with per-track voting when configured."""
        from isam2.segment.compose import track_vote

        logits = self.masklet_logits(batch["features"])
        segment = self.hparams.segment
        if segment["track_vote"]:
            probs = track_vote(logits.float().softmax(-1), batch["track"], batch["frame"], segment["window"])
            return logits, probs.argmax(-1)
        return logits, logits.argmax(-1)

    def method_name(self, key: str) -> str:
        """The table name of a method key; a head that names itself (fusion: I-SAM2_fusion) renames I-SAM2."""
        own = getattr(self.head, "method_name", None)
        return (
            METHOD_NAMES[key].replace("I-SAM2", own) if own and key.startswith("isam2") else METHOD_NAMES[key]
        )

    def predict_video(
        self, batch: VideoBatch, require_base: bool = True
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(logits [n,C], semantic maps [T,H,W] uint8 per method key) of one video batch."""
        from isam2.segment.methods import method_predictions

        if require_base and self.primary_method == "isam2_base" and batch.get("base") is None:
            raise ISAM2Error("segment.fill=base needs base_pred_dir=<dir of base predictions>")
        logits, row_class = self.classify_video(batch)
        return logits, method_predictions(row_class, batch["id_maps"], batch.get("base"))

    def painted(
        self, batch: VideoBatch, predictions: dict[str, torch.Tensor], primary: str | None = None
    ) -> PaintedVideo:
        """What callbacks receive from a validation or test step (prediction writer, logging callbacks)."""
        return PaintedVideo(
            video=batch["video"],
            frame_names=list(batch["frame_names"]),
            gt=batch["gt"],
            id_maps=batch["id_maps"],
            predictions=predictions,
            primary=primary or self.primary_method,
            preview=batch.get("preview"),
        )

    def _eval_loss(self, batch: VideoBatch, logits: torch.Tensor, stage: str) -> torch.Tensor:
        target = self._targets(batch["label"], batch["purity"])
        n = max(int((target != IGNORE).sum()), 1)
        self.log(f"{stage}/loss", self._loss(logits, target, batch["purity"]), batch_size=n, sync_dist=True)
        return target

    def validation_step(self, batch: VideoBatch, batch_idx: int) -> PaintedVideo:
        """One video of the selection split (SELECTION_PREFIX): loss, masklet accuracy and the mIoU of the head's
        own maps (I-SAM2: a base fill leaves the uncovered pixels alone whatever the head, and a held-out train
        video has no base prediction)."""
        logits, preds = self.predict_video(batch, require_base=False)
        target = self._eval_loss(batch, logits, SELECTION_PREFIX)
        if len(target):  # a video without masklets has no masklet to classify (torchmetrics needs one)
            self.val_acc(logits, target)
        n = max(int((target != IGNORE).sum()), 1)
        self.log(f"{SELECTION_PREFIX}/acc", self.val_acc, on_step=False, on_epoch=True, batch_size=n)
        self.val_metrics.update(preds["isam2"], batch["gt"])
        return self.painted(batch, preds, primary="isam2")

    def on_validation_epoch_end(self) -> None:
        results = self.val_metrics.compute()  # already reduced over ranks: the same value everywhere
        self.val_metrics.reset()
        for key in ("miou", "fwiou"):
            self.log(f"{SELECTION_PREFIX}/{key}", float(results[key]), prog_bar=key == "miou")

    def on_test_epoch_start(self) -> None:
        self._saw_base = False

    def test_step(self, batch: VideoBatch, batch_idx: int) -> PaintedVideo:
        """One test video: every method its batch allows (with a base: all four) into the test metrics."""
        logits, preds = self.predict_video(batch)
        self._eval_loss(batch, logits, "test")
        covered = batch["id_maps"] >= 0
        for key, pred in preds.items():
            self.test_metrics[key].update(pred, batch["gt"])
            self.test_coverage[key].update(pred, batch["gt"], covered)
        self._saw_base = self._saw_base or "base" in batch
        return self.painted(batch, preds)

    def on_test_epoch_end(self) -> None:
        # Every rank must compute the same metrics (their syncs line up), also a rank that got no video: the
        # methods needing a base are scored when any rank's batches carried one.
        has_base = self.trainer.strategy.reduce_boolean_decision(self._saw_base, all=False)
        methods = {}
        for key in METHOD_NAMES if has_base else ("isam2",):
            methods[self.method_name(key)] = {
                **self.test_metrics[key].compute(),
                **self.test_coverage[key].compute(),
            }
            self.test_metrics[key].reset()
            self.test_coverage[key].reset()
        primary = self.method_name(self.primary_method)
        self.test_results = {**methods[primary], "method": primary, "methods": methods}
        for key in ("miou", "fwiou", "mbiou", "mvc8", "mvc16"):
            value = self.test_results.get(key)
            if value is not None and np.isfinite(float(value)):
                self.log(f"test/{key}", float(value))

    # ---- optimisation ----------------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        from hydra.utils import instantiate

        optimizer = instantiate(self.hparams.optimizer)(params=self.parameters())
        if not self.hparams.scheduler:
            return optimizer
        scheduler = instantiate(self.hparams.scheduler)(optimizer=optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
