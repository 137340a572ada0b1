"""Label-map inputs of the metrics: checked integer tensors in one uint8 code, and fast per-frame pixel counts."""

from __future__ import annotations

import numpy as np
import torch

from isam2.constants import VOID as NONE  # "no prediction" / void ground truth
from isam2.errors import ConfigError

# Why uint8 codes: on CPU, torch compares a tensor with a Python scalar ~10x slower than with another
# tensor, and counts (count_nonzero) ~5x slower than numpy. The metrics therefore work on uint8 maps and
# use clamps, uint8 wrap-around and tensor-tensor compares, and count through numpy views on CPU.


def check_num_classes(num_classes: int) -> int:
    """Classes are 0..C-1 with C <= 254, so 255 (none) and 254 (other invalid values) stay outside [0, C)."""
    if not 1 <= int(num_classes) <= 254:
        raise ConfigError(f"data.num_classes must be in [1, 254], got {num_classes}")
    return int(num_classes)


def as_label_codes(
    x, num_classes: int, device: torch.device | str | None = None, name: str = "labels"
) -> torch.Tensor:
    """An integer label map (tensor or numpy array, any integer dtype, [T,H,W] or [H,W]) as uint8 [T,H,W].

    uint8 input is kept as is. Wider input keeps values in [0, C) and 255; any other value becomes 254,
    which like 255 lies outside [0, C) (a miss for predictions, void for ground truth).
    """
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "iu":
            raise TypeError(f"{name} must hold integers, got numpy dtype {x.dtype}")
        if x.dtype.kind == "u" and x.dtype.itemsize > 1:
            x = x.astype(np.int64)  # torch has few kernels for uint16/32/64
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor or numpy array, got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer label map, got dtype {x.dtype}")
    if x.ndim == 2:
        x = x.unsqueeze(0)
    if x.ndim != 3:
        raise ValueError(f"{name} must be [T, H, W] (or [H, W]), got shape {tuple(x.shape)}")
    if device is not None:
        x = x.to(device)
    if x.dtype != torch.uint8:
        x = x.long()
        ok = (x >= 0) & (x < num_classes)
        x = torch.where(ok, x, torch.where(x == NONE, NONE, NONE - 1)).to(torch.uint8)
    return x.contiguous()


def check_pair(pred: torch.Tensor, gt: torch.Tensor) -> None:
    if pred.shape != gt.shape:
        raise ValueError(
            f"prediction shape {tuple(pred.shape)} differs from ground-truth shape {tuple(gt.shape)}"
        )


def label_pair(
    pred, gt, num_classes: int, device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(pred, gt) as uint8 label codes on `device`, checked to have the same shape."""
    pred = as_label_codes(pred, num_classes, device, "pred")
    gt = as_label_codes(gt, num_classes, device, "gt")
    check_pair(pred, gt)
    return pred, gt


def per_frame_counts(mask: torch.Tensor) -> torch.Tensor:
    """Number of true pixels in each frame of a bool [N, H, W] mask, as int64 [N] on the mask's device."""
    if mask.device.type == "cpu":
        return torch.tensor([np.count_nonzero(m) for m in mask.numpy()], dtype=torch.int64)
    return torch.count_nonzero(mask, dim=(1, 2))


def frame_chunks(num_frames: int, frame_pixels: int, budget: int = 1 << 22) -> list[slice]:
    """Slices over frames holding about `budget` pixels each, to bound temporary memory on long videos."""
    step = max(1, budget // max(frame_pixels, 1))
    return [slice(i, min(i + step, num_frames)) for i in range(0, num_frames, step)]
