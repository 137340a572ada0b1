"""`encoder=module`: any user `torch.nn.Module` (a Hydra `_target_`) with its declared widths and strides."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from isam2.encoders.base import IMAGENET_MEAN, IMAGENET_STD, FrameEncoder
from isam2.errors import ConfigError, ISAM2Error
from isam2.files import load_weights


class ModuleEncoder(FrameEncoder):
    """`module` (a `_target_` config) maps [B,3,H,W] normalised frames to a map [B,d,h,w] or a list of them,
    one per declared (width, stride). `checkpoint` (optional) is a state dict loaded with weights_only, strict."""

    def __init__(
        self,
        name: str = "module",
        module: Mapping[str, Any] | None = None,
        widths: Sequence[int] = (),
        strides: Sequence[int] = (),
        checkpoint: str | None = None,
        input_size: int | Sequence[int] = 512,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        device: str = "auto",
        frames_per_batch: int = 8,
    ):
        from hydra.utils import instantiate

        super().__init__(name, input_size, mean, std, device, frames_per_batch)
        if not module or "_target_" not in module:
            raise ConfigError(f"encoder.{name}.module needs a _target_ naming a torch.nn.Module")
        if not widths or len(widths) != len(strides):
            raise ConfigError(f"encoder.{name}: declare widths and strides, one per feature map")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = instantiate(dict(module))
        if not isinstance(net, torch.nn.Module):
            raise ConfigError(f"encoder.{name}.module._target_ did not build a torch.nn.Module")
        if checkpoint:
            state = load_weights(checkpoint, f"encoder.{name}.checkpoint")
            try:
                net.load_state_dict(state, strict=True)
            except (RuntimeError, TypeError, AttributeError) as e:
                raise ISAM2Error(
                    f"encoder.{name}.checkpoint={checkpoint} does not fit the module: {e}"
                ) from None
        self.widths = tuple(int(w) for w in widths)
        self.strides = tuple(int(s) for s in strides)
        self.net = self.freeze(net)

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = self.net(x)
        return [out] if isinstance(out, torch.Tensor) else list(out)
