"""The encoder interface (`Encoder`, `FrameEncoder`), the `encoder` config group's selection and identities.

An encoder turns the frames of a video into one or more feature maps with known strides; the store pools
them per masklet (Eq. 3) over each masklet's region of the stored id map. The `encoder` group is a list
(`encoder=[sam2,dinov2]`); each option lives at `encoder.<name>`, so `cfg.encoder` is an ordered mapping
name -> settings and the pooled vectors are concatenated in that order. `sam2` is special: its vectors are
the store's own `features.npy`, pooled from the same SAM2 forward that made the masklets.

Every encoder is frozen (eval, no gradients, inference mode) and never part of a head's checkpoint. Its
identity (name, settings that decide its output, weights by sha256) decides where its vectors are stored
and is what a head trained on them records.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from isam2.constants import IMAGENET_MEAN, IMAGENET_STD
from isam2.errors import ConfigError, ISAM2Error
from isam2.files import cached_sha256, is_unset

SAM2_ENCODER = "sam2"
# Settings that change only speed or where an encoder runs, never its vectors: out of its identity.
NOT_IDENTITY = ("device", "frames_per_batch")
# Folders an encoder reads its input from (by path: their files are not hashed).
PATH_KEYS = ("base_predictions",)


def encoder_configs(cfg: Mapping | DictConfig) -> dict[str, dict[str, Any]]:
    """The configured encoders, in order: name -> plain settings. No `encoder` key means `[sam2]`."""
    node = cfg.get("encoder") if cfg is not None else None
    if node is None:
        return {SAM2_ENCODER: {"name": SAM2_ENCODER}}
    plain = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    if not isinstance(plain, dict) or not plain:
        raise ConfigError(f"encoder={plain!r}: choose one or more encoders, e.g. encoder=[sam2,dinov2]")
    out = {}
    for name, settings in plain.items():
        if not isinstance(settings, dict):
            raise ConfigError(f"encoder.{name}={settings!r} is not a group of settings (encoder=[sam2,...])")
        out[str(name)] = {"name": str(name), **settings}
    return out


def weights_sha256(path: str | Path | None, setting: str) -> str:
    """sha256 of a weights file, or of a folder's weight files (name + digest, sorted); "random" for none."""
    if is_unset(path):
        return "random"
    p = Path(path).expanduser()
    if p.is_file():
        return cached_sha256(p)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".pt", ".pth", ".json"))
        if not files:
            raise ISAM2Error(f"{setting}={p} holds no weights (*.safetensors, *.bin, *.pt) or config.json")
        digest = hashlib.sha256()
        for f in files:
            digest.update(f"{f.name}:{cached_sha256(f)}\n".encode())
        return digest.hexdigest()
    raise ISAM2Error(f"{setting}={p} does not exist")


def encoder_identity(settings: Mapping[str, Any]) -> dict[str, Any]:
    """What decides an encoder's vectors: its settings without speed keys, weights by sha256."""
    ident = {k: v for k, v in settings.items() if k not in NOT_IDENTITY}
    name = ident["name"]
    for key in ("pretrained", "checkpoint"):
        if key in ident:
            ident[key] = weights_sha256(ident[key], f"encoder.{name}.{key}")
    for key in PATH_KEYS:  # a folder read as input: the same folder from any working directory
        if ident.get(key):
            ident[key] = str(Path(ident[key]).expanduser().resolve())
    return ident


def build_encoder(settings: Mapping[str, Any]) -> Encoder:
    """Instantiate an encoder from its settings (`_target_`), frozen, on its device."""
    from hydra.utils import instantiate

    if "_target_" not in settings:
        raise ConfigError(f"encoder.{settings.get('name')} has no _target_")
    kwargs = {k: v for k, v in settings.items() if k != "name"}
    encoder = instantiate(kwargs, name=settings["name"], _recursive_=False, _convert_="all")
    if not isinstance(encoder, Encoder):
        raise ConfigError(f"encoder.{settings['name']}._target_ did not build an isam2 Encoder")
    return encoder


class Encoder:
    """Frames of one video -> per-level feature maps [B, d_l, h_l, w_l]; `width` = sum d_l.

    `maps(frames, video, indices)` gets uint8 RGB frames [B,H,W,3] (the frames `indices` of `video`); each
    returned map's grid covers the whole frame (see isam2.masklets.pooling), at the declared `strides`
    relative to the encoder's input. `pool_frame` pools one frame's maps over its id-map regions.
    """

    name: str = "encoder"
    widths: tuple[int, ...] = ()
    strides: tuple[int, ...] = ()
    frames_per_batch: int = 8
    device: torch.device = torch.device("cpu")

    @property
    def width(self) -> int:
        return int(sum(self.widths))

    def maps(self, frames: np.ndarray, video: Any, indices: Sequence[int]) -> list[torch.Tensor]:
        raise NotImplementedError

    def pool_frame(self, maps: list[torch.Tensor], id_map: torch.Tensor, n: int) -> torch.Tensor:
        """Eq. 3 over each of `n` masklet regions of a LOCAL id map [H,W] (-1 none) -> [n, width] float32."""
        from isam2.masklets.pooling import pool_levels

        if n == 0:
            return torch.zeros(0, self.width, device=id_map.device)
        masks = id_map[None] == torch.arange(n, device=id_map.device)[:, None, None]
        return pool_levels(maps, masks)


def resolve_encoder_device(device: Any) -> torch.device:
    from isam2.masklets.settings import resolve_device

    return resolve_device(device)


class FrameEncoder(Encoder):
    """An encoder that runs a frozen torch module on normalised, resized frames.

    Preprocessing: RGB / 255, resized to `input_size` (an int: square, aspect not kept, as SAM2 does; so
    every map's grid covers the whole frame), then (x - mean) / std. Subclasses give `self.net` and
    `forward_maps(x) -> list[[B,d,h,w]]`.
    """

    def __init__(
        self,
        name: str,
        input_size: int | Sequence[int],
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        device: str = "auto",
        frames_per_batch: int = 8,
    ):
        self.name = name
        size = (input_size, input_size) if isinstance(input_size, int) else tuple(input_size)
        if len(size) != 2 or any(int(s) < 1 for s in size):
            raise ConfigError(f"encoder.{name}.input_size={input_size!r} must be a size or [height, width]")
        self.input_size = (int(size[0]), int(size[1]))
        self.device = resolve_encoder_device(device)
        if int(frames_per_batch) < 1:
            raise ConfigError(f"encoder.{name}.frames_per_batch={frames_per_batch} must be >= 1")
        self.frames_per_batch = int(frames_per_batch)
        self._mean = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        self._std = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1).to(self.device)
        self.calls = 0  # frames encoded

    def freeze(self, net: torch.nn.Module) -> torch.nn.Module:
        net = net.to(self.device).eval()
        net.requires_grad_(False)
        return net

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        t = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        t = t.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        if tuple(t.shape[-2:]) != self.input_size:
            t = F.interpolate(t, size=self.input_size, mode="bilinear", align_corners=False, antialias=True)
        return (t - self._mean) / self._std

    def forward_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        raise NotImplementedError

    def maps(self, frames: np.ndarray, video: Any, indices: Sequence[int]) -> list[torch.Tensor]:
        with torch.inference_mode():
            out = self.forward_maps(self.preprocess(frames))
        self.calls += len(frames)
        got = tuple(int(m.shape[1]) for m in out)
        if got != tuple(self.widths):
            raise ISAM2Error(
                f"encoder.{self.name} gave maps of widths {list(got)}, declared {list(self.widths)}"
            )
        return [m.float() for m in out]
