"""Learned fusion (beyond the paper): a masklet's class from its pooled features AND the base model's histogram over it.

The base histogram is the vector of the `base_histogram` encoder (isam2.encoders.histogram): the fraction of
the masklet's pixels that the base segmentor labels c, i.e. the soft form of Eq. 1's vote. It must be the
LAST encoder of the store's vectors (`encoder=[sam2,base_histogram]`). The head adds, per class, a learned
weight times log(histogram + eps) to an MLP's logits on the other features:

    logits_c = MLP(standardised features)_c + w_c * log(h_c + eps) + b_c

With w = 1 and an MLP near 0 this is the refiner's majority vote (argmax of h); training moves each class's
trust in the base and lets the features overrule it where the base is wrong. The result is I-SAM2_fusion.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from isam2.errors import ISAM2Error
from isam2.model.head import MLPHead

HISTOGRAM_ENCODER = "base_histogram"


def histogram_start(
    in_dim: int, num_classes: int, feature_identity: Mapping[str, Any] | None, encoder: str
) -> int:
    """Where the base histogram starts in the vectors: the last `num_classes` dims, which must be `encoder`'s."""
    encoders = (feature_identity or {}).get("encoders") or []
    last = encoders[-1] if encoders else {}
    if last.get("name") != encoder:
        names = [e.get("name") for e in encoders] or ["sam2"]
        raise ISAM2Error(
            f"model=fusion needs the {encoder} encoder last in the store's vectors (encoder=[sam2,{encoder}]), "
            f"got encoder={names}"
        )
    if int(last.get("num_classes", num_classes)) != num_classes or in_dim <= num_classes:
        raise ISAM2Error(
            f"model=fusion: the {encoder} encoder has {last.get('num_classes')} classes and the vectors {in_dim} "
            f"dims, but the data has {num_classes} classes"
        )
    return in_dim - num_classes


class FusionHead(nn.Module):
    """MLP logits on the features (standardised) + per-class learned weights on the log base histogram."""

    method_name = "I-SAM2_fusion"  # how the paper-style tables name the maps it paints

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        feature_identity: Mapping[str, Any] | None = None,
        histogram_encoder: str = HISTOGRAM_ENCODER,
        eps: float = 1e-3,
        histogram_weight: float = 1.0,
        **mlp: Any,
    ):
        super().__init__()
        self.start = histogram_start(in_dim, num_classes, feature_identity, histogram_encoder)
        self.in_dim, self.num_classes, self.eps = in_dim, num_classes, float(eps)
        self.features = MLPHead(self.start, num_classes, **mlp)
        self.histogram_weight = nn.Parameter(torch.full((num_classes,), float(histogram_weight)))
        self.histogram_bias = nn.Parameter(torch.zeros(num_classes))

    @torch.no_grad()
    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-6) -> None:
        """Standardise the features only; the histogram enters as a log-probability."""
        if mean.shape != (self.in_dim,) or std.shape != (self.in_dim,):
            raise ISAM2Error(
                f"feature statistics of shape {tuple(mean.shape)} do not match the head's feature width {self.in_dim}"
            )
        self.features.set_statistics(mean[: self.start], std[: self.start], eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hist = x[:, self.start :].float().clamp_min(0)
        log_hist = torch.log(hist + self.eps)
        return self.features(x[:, : self.start]) + self.histogram_weight * log_hist + self.histogram_bias
