"""Trained heads on disk: loading one checked, and rebuilding the SAM2 and masklet source it was trained on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isam2.errors import ISAM2Error
from isam2.files import is_unset
from isam2.logs import get_logger

log = get_logger(__name__)
# Parts of a head's recorded feature identity that say which masks were pooled, not which feature space:
# predicting may find masklets another way (AMG on a video without labels) with the same vectors.
MASK_CHOICE_KEYS = ("masklets",)


def load_head_checkpoint(path: str | Path) -> dict[str, Any]:
    """A head checkpoint's dict (weights_only), refused when it is not one of `python -m isam2.train`."""
    from isam2.files import load_weights

    checkpoint = load_weights(Path(path), "ckpt_path")
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise ISAM2Error(
            f"ckpt_path={path} is not a checkpoint of the masklet head (no state_dict); "
            "use one from <run>/checkpoints/ of python -m isam2.train"
        )
    return checkpoint


@dataclass
class SegmenterParts:
    """What a `Segmenter` is made of: the head, the masklet source on its SAM2, the other encoders."""

    model: Any
    source: Any
    encoders: dict[str, Any]
    checkpoint: dict[str, Any]


def load_segmenter_parts(
    path: str | Path,
    sam2_checkpoint: str | Path | None = None,
    device: str = "auto",
    masklets: Mapping[str, Any] | None = None,
    encoders: Mapping[str, Mapping[str, Any]] | None = None,
    segment: Mapping[str, Any] | None = None,
    allow_feature_mismatch: bool = False,
) -> SegmenterParts:
    """The head at `path` with the SAM2 it was trained on (variant, version, image size, pooling levels from
    its recorded feature identity; weights from `sam2_checkpoint`, checked by sha256), a masklet source
    (`masklets`: settings of the `masklets` group; default: the paper's AMG), the other encoders of its
    features (`encoders`: name -> settings, as `encoder_configs`), and `segment` overrides (fill, track_vote)."""
    from hydra.utils import instantiate

    from isam2.encoders import SAM2_ENCODER, build_encoder, encoder_identity
    from isam2.masklets.generator import build_masklet_source
    from isam2.masklets.settings import SAM2_DEFAULTS
    from isam2.model.module import MaskletClassifier, check_features
    from isam2.store.identity import checkpoint_sha256

    checkpoint = load_head_checkpoint(path)
    hparams = checkpoint.get("hyper_parameters", {})
    trained = hparams.get("feature_identity")
    if not isinstance(trained, dict) or "sam2" not in trained or "masklets" not in trained:
        raise ISAM2Error(
            f"ckpt_path={path} records no feature identity (saved before isam2 recorded it): the SAM2 it was "
            "trained on cannot be rebuilt; train it again with this version"
        )
    sam2 = dict(trained["sam2"])
    sam2.update(checkpoint=None if is_unset(sam2_checkpoint) else str(sam2_checkpoint), device=device)
    masklet_settings = dict(masklets or {"source": "sam2", **SAM2_DEFAULTS})
    masklet_settings["pooling"] = dict(trained["masklets"].get("pooling") or {"levels": [0]})
    configs = dict(encoders or {SAM2_ENCODER: {"name": SAM2_ENCODER}})
    current = {"sam2": {**trained["sam2"], "checkpoint": checkpoint_sha256(sam2["checkpoint"])}}
    current["masklets"] = trained["masklets"]  # the masks may be found otherwise; the vectors may not
    if "encoders" in trained or list(configs) != [SAM2_ENCODER]:
        current["encoders"] = [
            {"name": n} if n == SAM2_ENCODER else _without_paths(encoder_identity(c))
            for n, c in configs.items()
        ]
        trained = {**trained, "encoders": [_without_paths(e) for e in trained.get("encoders", [])]}
    check_features(trained, current, f"checkpoint {path}", allow=allow_feature_mismatch)
    painting = {**hparams.get("segment", {}), **{k: v for k, v in (segment or {}).items() if v is not None}}
    if (segment or {}).get("window") is None and "window" in masklet_settings:
        painting["window"] = masklet_settings["window"]  # track votes stay inside this run's keyframe windows
    model = MaskletClassifier.load_from_checkpoint(
        path, map_location="cpu", weights_only=True, segment=painting
    )
    backbone = instantiate(sam2)
    source = build_masklet_source(masklet_settings, backbone)
    model = model.to(backbone.device)
    others = {n: None if n == SAM2_ENCODER else build_encoder(c) for n, c in configs.items()}
    return SegmenterParts(model, source, others, checkpoint)


def _without_paths(identity: Mapping[str, Any]) -> dict[str, Any]:
    """An encoder identity without the folders it reads input from (a base model's predictions of other
    videos are another folder, the same feature)."""
    from isam2.encoders.base import PATH_KEYS

    return {k: v for k, v in identity.items() if k not in PATH_KEYS}
