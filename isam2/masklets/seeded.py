"""A SAM2 masklet source whose keyframe masks are K smooth random blobs instead of AMG's (real-load benchmarks)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from isam2.masklets.generator import SAM2MaskletSource
from isam2.masklets.sam2_backbone import EncodedFrame


def blob_masks(k: int, hw: tuple[int, int], seed: int) -> torch.Tensor:
    """[k, H, W] bool: k smooth blobs (thresholded upsampled noise), each non-empty, overlapping freely."""
    H, W = hw
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(k, 1, 6, 8, generator=g)
    smooth = F.interpolate(noise, size=(H, W), mode="bicubic", align_corners=False)[:, 0]
    level = torch.quantile(smooth.flatten(1), 0.8, dim=1)  # each blob covers about a fifth of the frame
    return smooth > level[:, None, None]


class SeededMaskletSource(SAM2MaskletSource):
    """SAM2 propagation of `seed_objects` blobs per keyframe (the same blobs for a given keyframe and seed),
    bypassing AMG: the load of a trained AMG that keeps many masklets, with random weights."""

    def __init__(self, *args, seed_objects: int, seed: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.seed_objects, self.seed = int(seed_objects), int(seed)
        self._keyframes = 0

    def video(self, frames: Any, gt: np.ndarray | None = None):
        self._keyframes = 0
        return super().video(frames, gt)

    def keyframe_masks(self, frame: np.ndarray, enc: EncodedFrame) -> tuple[torch.Tensor, torch.Tensor]:
        masks = blob_masks(self.seed_objects, frame.shape[:2], self.seed + self._keyframes)
        self._keyframes += 1
        device = self.backbone.device
        return masks.to(device), torch.ones(self.seed_objects, device=device)
