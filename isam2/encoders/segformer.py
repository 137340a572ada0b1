"""MiT-B0..B5 (SegFormer's encoder, CFFM's backbone) through `transformers.SegformerModel`, and the mmseg key converter.

Weights: `pretrained=<local HF folder>` (e.g. a converted nvidia/mit-b1), or `checkpoint=<mmseg .pth>` (a
CFFM/SegFormer release: `backbone.*` keys of mmseg's mix_transformer), converted by `convert_mmseg_mit`;
neither: random weights (tests). The encoder pools the four stages (strides 4, 8, 16, 32 of its input),
or those of `levels`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from isam2.encoders.base import IMAGENET_MEAN, IMAGENET_STD, FrameEncoder
from isam2.encoders.hf import from_local_folder, offline_transformers, random_model, warn_random_weights
from isam2.errors import ConfigError, ISAM2Error
from isam2.files import load_weights

# The MiT variants (SegFormer paper, Table 6): depths per stage; B0 is narrower than the rest.
MIT_DEPTHS = {
    "b0": [2, 2, 2, 2],
    "b1": [2, 2, 2, 2],
    "b2": [3, 4, 6, 3],
    "b3": [3, 4, 18, 3],
    "b4": [3, 8, 27, 3],
    "b5": [3, 6, 40, 3],
}
MIT_WIDTHS = {"b0": [32, 64, 160, 256], **{v: [64, 128, 320, 512] for v in ("b1", "b2", "b3", "b4", "b5")}}
STAGE_STRIDES = (4, 8, 16, 32)

# mmseg mix_transformer name (after `backbone.`) -> SegformerModel name (transformers 5), per stage i / block j.
_BLOCK_PARTS = {
    "norm1": "layernorm_before",
    "attn.q": "attention.q_proj",
    "attn.proj": "attention.o_proj",
    "attn.sr": "attention.sequence_reduction.sequence_reduction",
    "attn.norm": "attention.sequence_reduction.layer_norm",
    "norm2": "layernorm_after",
    "mlp.fc1": "mlp.fc1",
    "mlp.dwconv.dwconv": "mlp.dwconv.dwconv",
    "mlp.fc2": "mlp.fc2",
}
_PATCH = re.compile(r"patch_embed(\d)\.(proj|norm)\.(weight|bias)")
_BLOCK = re.compile(r"block(\d)\.(\d+)\.(.+)\.(weight|bias)")
_NORM = re.compile(r"norm(\d)\.(weight|bias)")
_DROPPED = ("decode_head.", "auxiliary_head.", "head.")


def mit_config(variant: str, overrides: Mapping[str, Any] | None = None) -> Any:
    """The SegformerConfig of MiT-`variant` (b0..b5), with `overrides` (e.g. a tiny test model)."""
    transformers = offline_transformers()
    if variant not in MIT_DEPTHS:
        raise ConfigError(f"encoder.segformer.variant={variant!r} is not one of {', '.join(MIT_DEPTHS)}")
    settings = {
        "depths": MIT_DEPTHS[variant],
        "hidden_sizes": MIT_WIDTHS[variant],
        "num_attention_heads": [1, 2, 5, 8],
        "sr_ratios": [8, 4, 2, 1],
        **dict(overrides or {}),
    }
    return transformers.SegformerConfig(**settings)


def convert_mmseg_mit(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An mmseg/SegFormer/CFFM MiT state dict (`backbone.patch_embed1.proj.weight`, `backbone.block1.0.attn.q.
    weight`, `backbone.block1.0.attn.kv.weight`, `backbone.norm1.weight`, ...) -> SegformerModel names
    (`stages.0.patch_embeddings.proj.weight`, `stages.0.blocks.0.attention.q_proj.weight`, k_proj/v_proj split
    from kv, `stages.0.layer_norm.weight`, ...). Decode heads are dropped; an unknown key is an ISAM2Error."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(_DROPPED):
            continue
        name = key.removeprefix("backbone.")  # mmseg checkpoints prefix it; ImageNet MiT releases do not
        if m := _PATCH.fullmatch(name):
            part = "proj" if m[2] == "proj" else "layer_norm"
            out[f"stages.{int(m[1]) - 1}.patch_embeddings.{part}.{m[3]}"] = value
        elif m := _BLOCK.fullmatch(name):
            prefix = f"stages.{int(m[1]) - 1}.blocks.{m[2]}."
            if m[3] == "attn.kv":  # key and value stacked along the output dimension
                half = value.shape[0] // 2
                out[f"{prefix}attention.k_proj.{m[4]}"] = value[:half]
                out[f"{prefix}attention.v_proj.{m[4]}"] = value[half:]
            elif m[3] in _BLOCK_PARTS:
                out[f"{prefix}{_BLOCK_PARTS[m[3]]}.{m[4]}"] = value
            else:
                raise ISAM2Error(f"unknown MiT key {key!r}: not an mmseg mix_transformer checkpoint")
        elif m := _NORM.fullmatch(name):
            out[f"stages.{int(m[1]) - 1}.layer_norm.{m[2]}"] = value
        else:
            raise ISAM2Error(f"unknown MiT key {key!r}: not an mmseg mix_transformer checkpoint")
    return out


def load_mmseg_checkpoint(model: torch.nn.Module, path: str, setting: str) -> None:
    """Load a CFFM/mmseg checkpoint's MiT backbone into `model` (strict: every key present, every shape right)."""
    obj = load_weights(path, setting)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict):
        raise ISAM2Error(f"{setting}={path} holds no state dict")
    try:
        converted = convert_mmseg_mit(state)
    except ISAM2Error as e:
        raise ISAM2Error(f"{setting}={path}: {e}") from None
    try:
        model.load_state_dict(converted, strict=True)
    except RuntimeError as e:
        raise ISAM2Error(f"{setting}={path} does not fit the configured MiT variant: {e}") from None


class SegformerEncoder(FrameEncoder):
    """MiT-B0..B5 hidden states (one map per stage in `levels`) as the encoder's feature maps."""

    def __init__(
        self,
        name: str = "segformer",
        variant: str = "b1",
        pretrained: str | None = None,
        checkpoint: str | None = None,
        config: Mapping[str, Any] | None = None,
        levels: Sequence[int] = (0, 1, 2, 3),
        input_size: int | Sequence[int] = 512,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        device: str = "auto",
        frames_per_batch: int = 8,
    ):
        super().__init__(name, input_size, mean, std, device, frames_per_batch)
        transformers = offline_transformers()
        if pretrained and checkpoint:
            raise ConfigError(
                f"encoder.{name}: set pretrained (HF folder) or checkpoint (mmseg .pth), not both"
            )
        if pretrained:
            net = from_local_folder(transformers.SegformerModel, pretrained, f"encoder.{name}.pretrained")
        else:
            net = random_model(transformers.SegformerModel, mit_config(variant, config))
            if checkpoint:
                load_mmseg_checkpoint(net, checkpoint, f"encoder.{name}.checkpoint")
            else:
                warn_random_weights(f"encoder.{name}.pretrained / encoder.{name}.checkpoint")
        sizes = list(net.config.hidden_sizes)
        self.levels = tuple(int(level) for level in levels)
        if not self.levels or any(not 0 <= level < len(sizes) for level in self.levels):
            raise ConfigError(
                f"encoder.{name}.levels={list(levels)} must be stages among 0..{len(sizes) - 1}"
            )
        self.widths = tuple(sizes[level] for level in self.levels)
        self.strides = tuple(STAGE_STRIDES[level] for level in self.levels)
        self.net = self.freeze(net)

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        hidden = self.net(pixel_values=x, output_hidden_states=True).hidden_states
        return [hidden[level] for level in self.levels]
