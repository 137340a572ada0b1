"""Training targets of masklets: the GT class histogram inside each masklet, its majority class and purity."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from isam2.constants import VOID as IGNORE  # GT train id that is never a target ("others"/void)
from isam2.errors import ISAM2Error

NUM_IDS = 256  # every uint8 train id gets a histogram bin; the IGNORE bin is dropped


@dataclass(frozen=True)
class MaskletTargets:
    """Per-masklet targets: `label` uint8 (255 = no valid GT pixel), `purity` f32 in [0, 1],
    `valid` int64 (GT pixels inside the masklet that are not void), `histogram` int64 [n, 255]."""

    label: np.ndarray
    purity: np.ndarray
    valid: np.ndarray
    histogram: np.ndarray


def class_histograms(masks: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor) -> np.ndarray:
    """[n, 255] int64: for each masklet, how many of its pixels carry each GT train id (void 255 excluded).

    One matrix product, masks [n, HW] x one-hot of the classes present [HW, k], on the masks' device (numpy
    arrays count on the CPU); masklets may overlap. It is exact: every operand is 0 or 1 (exact in fp32,
    TF32 and bf16 alike) and every partial sum is an integer below 2^24, so fp32 accumulation rounds nothing;
    larger frames count in fp64. Only the histogram comes back to the host.
    """
    masks_t = torch.as_tensor(masks)
    gt_t = torch.as_tensor(gt)
    if masks_t.dim() != 3 or tuple(gt_t.shape) != tuple(masks_t.shape[1:]):
        raise ISAM2Error(
            f"masks {tuple(masks_t.shape)} and GT {tuple(gt_t.shape)} must be [n,H,W] and [H,W] of the same H, W"
        )
    if gt_t.dtype != torch.uint8:
        raise ISAM2Error(f"GT must be uint8 train ids, got dtype {gt_t.dtype}")
    n, device = int(masks_t.shape[0]), masks_t.device
    hist = torch.zeros(n, IGNORE, dtype=torch.int64, device=device)
    gt_flat = gt_t.to(device).flatten()
    classes = torch.unique(gt_flat)
    classes = classes[classes != IGNORE]
    if n and len(classes):
        dtype = torch.float32 if gt_flat.numel() < 2**24 else torch.float64
        with torch.autocast(device.type, enabled=False):  # a bf16 product would round counts above 256
            onehot = (gt_flat[:, None] == classes[None, :]).to(dtype)
            counts = masks_t.to(device).flatten(1).to(dtype) @ onehot
        hist[:, classes.long()] = counts.round().long()
    return hist.cpu().numpy()


def masklet_targets(masks: np.ndarray | torch.Tensor, gt: np.ndarray | torch.Tensor | None) -> MaskletTargets:
    """Targets of `masks` [n,H,W] bool against `gt` [H,W] uint8 train ids; `gt=None` (no GT) -> all 255.

    label = majority train id (ties: the smaller id), purity = majority pixels / valid pixels; a masklet
    with no valid pixel gets label 255 and purity 0.
    """
    n = int(np.shape(masks)[0])
    if gt is None:
        return MaskletTargets(
            label=np.full(n, IGNORE, np.uint8),
            purity=np.zeros(n, np.float32),
            valid=np.zeros(n, np.int64),
            histogram=np.zeros((n, IGNORE), np.int64),
        )
    hist = class_histograms(masks, gt)
    valid = hist.sum(axis=1)
    label = hist.argmax(axis=1)
    majority = hist[np.arange(n), label]
    has_target = valid > 0
    purity = np.where(has_target, majority / np.maximum(valid, 1), 0.0).astype(np.float32)
    label = np.where(has_target, label, IGNORE).astype(np.uint8)
    return MaskletTargets(label=label, purity=purity, valid=valid.astype(np.int64), histogram=hist)
