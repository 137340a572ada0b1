"""Process-wide torch settings for the frozen SAM2 (TF32), applied by the entry points from `cfg.sam2`."""

from __future__ import annotations

from collections.abc import Mapping

import torch


def apply_tf32(sam2_cfg: Mapping | None) -> bool:
    """TF32 matmuls and cuDNN convolutions (Ampere and later) as `sam2.tf32` says (default on); returns it.
    Entry points call this, so that building a model never changes a global setting as a side effect."""
    enabled = True if sam2_cfg is None or sam2_cfg.get("tf32") is None else bool(sam2_cfg.get("tf32"))
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    return enabled
