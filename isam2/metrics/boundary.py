"""mBIoU (paper Eq. 5-6): IoU inside the GT boundary band of each image, averaged over images."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from isam2.errors import ConfigError
from isam2.metrics.labels import check_num_classes, frame_chunks, label_pair, per_frame_counts


def check_width(width: int) -> int:
    if int(width) < 1 or int(width) % 2 == 0:
        raise ConfigError(
            f"metrics.boundary_width must be an odd positive window side (5 = 5x5), got {width}"
        )
    return int(width)


def _box(x: torch.Tensor, radius: int, op) -> torch.Tensor:
    """Max (or min) of x over a (2r+1)^2 square clipped to the image, separably over W then H."""
    out = x
    for dim in (-1, -2):
        src, out = out, out.clone()
        size = src.shape[dim]
        for s in range(1, min(radius, size - 1) + 1):
            a = out.narrow(dim, s, size - s)
            op(a, src.narrow(dim, 0, size - s), out=a)
            b = out.narrow(dim, 0, size - s)
            op(b, src.narrow(dim, s, size - s), out=b)
    return out


def boundary_band(gt: torch.Tensor, num_classes: int, width: int = 5) -> torch.Tensor:
    """B = union over GT classes c of M_c minus erode(M_c, width x width); outside the image never erodes.

    A non-void pixel is in M_c minus erode(M_c) iff some pixel of its window inside the image has another
    label (void counts as another label), i.e. iff the window's max and min labels differ.
    gt: uint8 codes [N, H, W]; returns bool [N, H, W]. Void pixels are never in B.
    """
    r = check_width(width) // 2
    varied = _box(gt, r, torch.maximum) != _box(gt, r, torch.minimum)
    rows = gt.clamp_max(num_classes)
    return varied & (rows != torch.full_like(rows, num_classes))


def boundary_counts(pred: torch.Tensor, gt: torch.Tensor, num_classes: int, width: int = 5) -> torch.Tensor:
    """Per image int64 [3, N]: |B|, |B & (P == G)|, |B & P valid| (uint8-coded maps)."""
    band = boundary_band(gt, num_classes, width)
    hit = band & (pred == gt)  # gt is a class inside B, so P == G implies a valid prediction
    p = pred.clamp_max(num_classes)
    valid = band & (p != torch.full_like(p, num_classes))
    return torch.stack([per_frame_counts(band), per_frame_counts(hit), per_frame_counts(valid)])


def image_boundary_ratios(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the ratio |B&hit| / (|B| + |B&valid| - |B&hit|) as float64 (0 where B is empty), B non-empty."""
    band, hit, valid = counts.double()
    has_band = counts[0] > 0
    ratio = hit / torch.where(has_band, band + valid - hit, torch.ones_like(band))
    return torch.where(has_band, ratio, torch.zeros_like(ratio)), has_band


def image_boundary_iou(counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of per-image ratios |B&hit| / (|B| + |B&valid| - |B&hit|) as float64, number of images with B)."""
    ratio, has_band = image_boundary_ratios(counts)
    return ratio.sum(), has_band.sum()


class BoundaryIoU(Metric):
    """mBIoU: mean over images (with a non-empty band) of the band IoU. `compute()` -> float or None."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, num_classes: int = 124, width: int = 5, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_num_classes(num_classes)
        self.width = check_width(width)
        self.add_state("iou_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("num_images", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred, gt) -> None:
        pred, gt = label_pair(pred, gt, self.num_classes, self.device)
        for s in frame_chunks(gt.shape[0], gt[0].numel()):
            total, images = image_boundary_iou(boundary_counts(pred[s], gt[s], self.num_classes, self.width))
            self.iou_sum += total
            self.num_images += images

    def compute(self) -> float | None:
        n = int(self.num_images)
        return float(self.iou_sum) / n if n else None
