"""The typed batches of the masklet head, and what its test stage hands to callbacks (PaintedVideo)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import torch
from typing_extensions import NotRequired


class MaskletBatch(TypedDict):
    """A training batch of masklet rows from the store."""

    features: torch.Tensor  # [B, d] float
    label: torch.Tensor  # [B] majority GT class per masklet (255 = none)
    purity: torch.Tensor  # [B] float32, the majority class's share of the masklet


class VideoBatch(TypedDict):
    """One whole video for validation and test: its masklet rows, their id maps and the ground truth."""

    video: str
    frame_names: list[str]
    features: torch.Tensor  # [n, d]
    label: torch.Tensor  # [n]
    purity: torch.Tensor  # [n]
    track: torch.Tensor  # [n] int64, track id of each row
    frame: torch.Tensor  # [n] int64, frame index of each row
    id_maps: torch.Tensor  # [T, H, W] int64, local row per pixel, -1 = no masklet
    gt: torch.Tensor  # [T, H, W] uint8 train ids, 255 = void
    base: NotRequired[torch.Tensor]  # [T, H, W] uint8, a base segmentor's predictions
    preview: NotRequired[torch.Tensor]  # [H, W, 3] uint8, first frame (overlays)


@dataclass
class PaintedVideo:
    """One video as painted by the head: what prediction writers and logging callbacks consume (returned by
    `MaskletClassifier.test_step` and `validation_step`; tensors on the module's device)."""

    video: str
    frame_names: list[str]
    gt: torch.Tensor  # [T, H, W] uint8, 255 = void
    id_maps: torch.Tensor  # [T, H, W] int64, -1 = no masklet
    predictions: dict[str, torch.Tensor]  # method key (isam2, isam2_base, base, refiner) -> [T, H, W] uint8
    primary: str  # the method key whose maps are written and logged
    preview: torch.Tensor | None = None  # [H, W, 3] uint8 first frame, on validation batches (overlays)
