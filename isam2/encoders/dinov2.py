"""DINOv2 through `transformers.Dinov2Model`: its final patch tokens (after the last layer norm) as one stride-14 map."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from isam2.encoders.base import IMAGENET_MEAN, IMAGENET_STD, FrameEncoder
from isam2.encoders.hf import from_local_folder, offline_transformers, random_model, warn_random_weights
from isam2.errors import ConfigError


class Dinov2Encoder(FrameEncoder):
    """`pretrained=<local HF folder>` (dinov2-small/base/large), or a random model from `config` (tests)."""

    def __init__(
        self,
        name: str = "dinov2",
        pretrained: str | None = None,
        config: Mapping[str, Any] | None = None,
        input_size: int | Sequence[int] = 448,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        device: str = "auto",
        frames_per_batch: int = 8,
    ):
        super().__init__(name, input_size, mean, std, device, frames_per_batch)
        transformers = offline_transformers()
        if pretrained:
            net = from_local_folder(transformers.Dinov2Model, pretrained, f"encoder.{name}.pretrained")
        else:
            warn_random_weights(f"encoder.{name}.pretrained")
            net = random_model(transformers.Dinov2Model, transformers.Dinov2Config(**dict(config or {})))
        self.patch = int(net.config.patch_size)
        if any(s % self.patch for s in self.input_size):
            raise ConfigError(
                f"encoder.{name}.input_size={list(self.input_size)} must be a multiple of the patch size {self.patch}"
            )
        self.widths = (int(net.config.hidden_size),)
        self.strides = (self.patch,)
        self.net = self.freeze(net)

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        tokens = self.net(pixel_values=x).last_hidden_state  # [B, 1 + h*w, d], class token first
        h, w = (s // self.patch for s in self.input_size)
        patches = tokens[:, tokens.shape[1] - h * w :]
        return [patches.transpose(1, 2).reshape(x.shape[0], -1, h, w)]
