"""The `sam2` and `masklets` settings, checked before any work: every check of the masklet stage lives here.

The entry points (through `ensure_store`) call `check_extraction_settings(cfg)` before a store folder is made
or a frame is read; `SAM2Backbone` and the masklet sources call the same functions, so a setting is checked
in one place however it arrives. Nothing here imports sam2 (fast, and usable before the model exists).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch

from isam2.errors import ConfigError

VARIANTS = ("hiera_t", "hiera_s", "hiera_b+", "hiera_l")
VERSIONS = ("2.1", "2.0")
# Pooling levels: 0 = the encoder's `vision_features` (stride 16), 1 = the FPN level at stride 8,
# 2 = the FPN level at stride 4 (both before the SAM decoder's conv_s0/conv_s1 projections). 256-d each.
POOLING_LEVELS = {0: 16, 1: 8, 2: 4}
SOURCES = ("sam2", "gt")
AMG_ENGINES = ("native", "sam2")
PROPAGATION_ENGINES = ("batched", "per_object")
# The paper's AMG settings (sam2 argument names) and our defaults for the rest.
SAM2_DEFAULTS: dict[str, Any] = {
    "window": 32,
    "points_per_side": 16,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.6,
    "stability_score_thresh": 0.8,
    "stability_score_offset": 0.9,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "min_area": 0,
    "offload_state_to_cpu": False,
    "amg": "native",
    "propagation": "batched",
    "objects_per_batch": None,
    "frames_per_batch": 8,
}
GT_DEFAULTS: dict[str, Any] = {"min_area": 16, "track_iou": 0.5, "frames_per_batch": 8}


# ------------------------------------------------------------------------------------------------ sam2


def sam2_version_str(version: Any) -> str:
    v = str(version).strip()
    return {"2": "2.0", "2.00": "2.0", "2.10": "2.1"}.get(v, v)


def check_variant(variant: Any, version: Any) -> tuple[str, str]:
    version = sam2_version_str(version)
    if variant not in VARIANTS:
        raise ConfigError(f"sam2.variant={variant!r} is not one of {', '.join(VARIANTS)}")
    if version not in VERSIONS:
        raise ConfigError(f"sam2.version={version!r} is not one of {', '.join(VERSIONS)}")
    return str(variant), version


def check_image_size(image_size: Any) -> int:
    try:
        size = int(image_size)
        if size != float(image_size):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"sam2.image_size={image_size!r} is not an integer") from None
    if size <= 0 or size % 32:
        raise ConfigError(f"sam2.image_size={size} must be a positive multiple of 32 (e.g. 256, 512, 1024)")
    return size


def resolve_device(device: Any) -> torch.device:
    """`auto` (the launcher's local-rank GPU, else the CPU), `cpu`, `cuda` or `cuda:N`."""
    name = str(device)
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        # one GPU per process under DDP / torchrun / srun: the launcher's local rank picks it
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)) % torch.cuda.device_count())
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"sam2.device={name!r} is not a torch device (auto, cpu, cuda, cuda:1, ...)"
        ) from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"sam2.device={name} but CUDA is not available here (use auto or cpu)")
    if dev.type not in ("cuda", "cpu"):
        raise ConfigError(f"sam2.device={name}: only cpu and cuda are supported")
    return dev


def check_pooling_levels(levels: Any) -> tuple[int, ...]:
    try:
        out = tuple(int(x) for x in levels)
    except (TypeError, ValueError):
        raise ConfigError(f"masklets.pooling.levels={levels!r} must be a list of integers") from None
    bad = [x for x in out if x not in POOLING_LEVELS]
    if not out or bad or len(set(out)) != len(out):
        raise ConfigError(
            f"masklets.pooling.levels={list(out)} must be distinct values among 0 (vision_features, "
            "stride 16), 1 (FPN stride 8), 2 (FPN stride 4)"
        )
    return out


def check_sam2_settings(sam2_cfg: Mapping) -> None:
    """Every `sam2.*` setting that can be checked without building the model."""
    check_variant(sam2_cfg.get("variant", "hiera_t"), sam2_cfg.get("version", "2.1"))
    check_image_size(sam2_cfg.get("image_size", 1024))
    resolve_device(sam2_cfg.get("device", "auto"))


# -------------------------------------------------------------------------------------------- masklets


def positive_int(settings: Mapping, key: str) -> int:
    try:
        value = int(settings[key])
        if value < 1 or value != float(settings[key]):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"masklets.{key}={settings[key]!r} must be an integer >= 1") from None
    return value


def _fraction(settings: Mapping, key: str) -> None:
    try:
        ok = 0.0 <= float(settings[key]) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"masklets.{key}={settings[key]!r} must be a number in [0, 1]")


def _non_negative(settings: Mapping, key: str) -> None:
    try:
        ok = int(settings[key]) >= 0 and int(settings[key]) == float(settings[key])
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ConfigError(f"masklets.{key}={settings[key]!r} must be an integer >= 0")


def masklet_settings(masklets_cfg: Mapping | None) -> tuple[str, dict[str, Any], tuple[int, ...]]:
    """(source, its settings with defaults filled in, pooling levels) of `cfg.masklets`, all checked."""
    source = "sam2" if masklets_cfg is None else str(masklets_cfg.get("source", "sam2"))
    if source not in SOURCES:
        raise ConfigError(f"masklets.source={source!r} is not one of {', '.join(SOURCES)}")
    defaults = GT_DEFAULTS if source == "gt" else SAM2_DEFAULTS
    settings = dict(defaults)
    for key in defaults:
        if masklets_cfg is not None and key in masklets_cfg and masklets_cfg[key] is not None:
            settings[key] = masklets_cfg[key]
    pooling = None if masklets_cfg is None else masklets_cfg.get("pooling")
    levels = check_pooling_levels(
        [0] if pooling is None or pooling.get("levels") is None else pooling["levels"]
    )
    positive_int(settings, "frames_per_batch")
    _non_negative(settings, "min_area")
    if source == "gt":
        _fraction(settings, "track_iou")
        return source, settings, levels
    for key in ("window", "points_per_side", "points_per_batch"):
        positive_int(settings, key)
    if settings["objects_per_batch"] is not None:
        positive_int(settings, "objects_per_batch")
    for key in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
        _fraction(settings, key)
    _non_negative(settings, "crop_n_layers")
    if settings["amg"] not in AMG_ENGINES:
        raise ConfigError(f"masklets.amg={settings['amg']!r} is not one of {', '.join(AMG_ENGINES)}")
    if settings["propagation"] not in PROPAGATION_ENGINES:
        raise ConfigError(
            f"masklets.propagation={settings['propagation']!r} is not one of {', '.join(PROPAGATION_ENGINES)}"
        )
    return source, settings, levels


def check_extraction_settings(cfg: Mapping) -> None:
    """The `sam2` and `masklets` settings of a config: raises ConfigError naming the first bad one."""
    check_sam2_settings(cfg["sam2"])
    masklet_settings(cfg.get("masklets"))


__all__ = [
    "AMG_ENGINES",
    "GT_DEFAULTS",
    "POOLING_LEVELS",
    "PROPAGATION_ENGINES",
    "SAM2_DEFAULTS",
    "SOURCES",
    "VARIANTS",
    "VERSIONS",
    "check_extraction_settings",
    "masklet_settings",
    "positive_int",
    "resolve_device",
]
