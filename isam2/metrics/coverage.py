"""Masklet coverage: the fraction of valid GT pixels under a masklet, and pixel accuracy inside versus outside."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from isam2.constants import VOID as IGNORE


class MaskletCoverage(Metric):
    """Sum-reducible pixel counts; `update(pred, gt, covered)` with [T,H,W] maps and a bool coverage mask."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        for name in ("valid", "covered", "correct_inside", "correct_outside"):
            self.add_state(name, torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred: torch.Tensor, gt: torch.Tensor, covered: torch.Tensor) -> None:
        if not pred.shape == gt.shape == covered.shape:
            raise ValueError(
                f"shapes differ: pred {tuple(pred.shape)}, gt {tuple(gt.shape)}, covered {tuple(covered.shape)}"
            )
        valid = gt != IGNORE
        correct = valid & (pred.long() == gt.long())
        self.valid += valid.sum()
        self.covered += (valid & covered).sum()
        self.correct_inside += (correct & covered).sum()
        self.correct_outside += (correct & ~covered).sum()

    def compute(self) -> dict[str, float | None]:
        valid, covered = int(self.valid), int(self.covered)
        uncovered = valid - covered
        return {
            "coverage": covered / valid if valid else None,
            "acc_inside": int(self.correct_inside) / covered if covered else None,
            "acc_outside": int(self.correct_outside) / uncovered if uncovered else None,
        }
