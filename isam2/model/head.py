"""The masklet classification head: feature standardisation (buffers) then a configurable MLP; `build_head` picks a head class."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from isam2.errors import ISAM2Error

ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh}
NORMS = ("layernorm", "batchnorm", "none")


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "layernorm":
        return nn.LayerNorm(width)
    if kind == "batchnorm":
        return nn.BatchNorm1d(width)
    return nn.Identity()


class MLPHead(nn.Module):
    """Standardise [B, in_dim] masklet vectors with training-set statistics, then an MLP to [B, num_classes].

    `depth` counts hidden layers (0 = a linear classifier). The statistics are buffers, so they travel in
    every checkpoint with the weights; `set_statistics` fills them from the training store.
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        hidden_dim: int = 512,
        depth: int = 2,
        dropout: float = 0.1,
        norm: str = "layernorm",
        activation: str = "gelu",
    ):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ISAM2Error(f"model.head.activation={activation!r} is not one of {sorted(ACTIVATIONS)}")
        if norm not in NORMS:
            raise ISAM2Error(f"model.head.norm={norm!r} is not one of {list(NORMS)}")
        if depth < 0 or in_dim < 1 or num_classes < 1 or hidden_dim < 1:
            raise ISAM2Error(
                f"model.head: depth ({depth}) must be >= 0 and widths (in {in_dim}, hidden {hidden_dim}, "
                f"classes {num_classes}) >= 1"
            )
        self.in_dim, self.num_classes = in_dim, num_classes
        self.register_buffer("feature_mean", torch.zeros(in_dim))
        self.register_buffer("feature_std", torch.ones(in_dim))
        layers: list[nn.Module] = []
        width = in_dim
        for _ in range(depth):
            layers += [nn.Linear(width, hidden_dim), _norm(norm, hidden_dim), ACTIVATIONS[activation]()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = hidden_dim
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)

    @torch.no_grad()
    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor, eps: float = 1e-6) -> None:
        """Per-dimension mean and std of the training vectors (std clamped so constant dims stay finite)."""
        if mean.shape != (self.in_dim,) or std.shape != (self.in_dim,):
            raise ISAM2Error(
                f"feature statistics of shape {tuple(mean.shape)} do not match the head's feature width {self.in_dim}"
            )
        self.feature_mean.copy_(mean.float())
        self.feature_std.copy_(std.float().clamp_min(eps))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # (x - mean) / std as one fused multiply-add: a broadcast division is ~10x slower on CPU
        scale = self.feature_std.reciprocal()
        x = torch.addcmul(-self.feature_mean * scale, features.float(), scale)
        return self.mlp(x)


def build_head(
    in_dim: int,
    num_classes: int,
    head: Mapping[str, Any] | None = None,
    feature_identity: Mapping[str, Any] | None = None,
) -> nn.Module:
    """The head of `model.head`: `MLPHead` by default, or the class named by `model.head._target_`, called
    as cls(in_dim, num_classes, feature_identity=..., **rest) (e.g. `isam2.model.fusion.FusionHead`)."""
    settings = dict(head or {})
    target = settings.pop("_target_", None)
    if target is None:
        return MLPHead(in_dim, num_classes, **settings)
    from hydra.utils import get_class

    try:
        cls = get_class(str(target))
    except (ImportError, ValueError) as e:
        raise ISAM2Error(f"model.head._target_={target!r} is not a class: {e}") from None
    return cls(in_dim, num_classes, feature_identity=feature_identity, **settings)
