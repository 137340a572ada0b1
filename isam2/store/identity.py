"""A store's identity: the settings that decide its rows, their hash, and the folder they name."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from isam2.errors import ISAM2Error
from isam2.files import cached_sha256, is_unset

# Settings that change only speed, memory or where SAM2 runs, never what the store holds (beyond floating
# point): they stay out of the config hash, so changing them never re-extracts; the manifest records them.
_SAM2_NOT_IDENTITY = ("device", "tf32")
_MASKLETS_NOT_IDENTITY = (
    "points_per_batch",
    "objects_per_batch",
    "frames_per_batch",
    "offload_state_to_cpu",
    "amg",
    "propagation",
)


FEATURE_PARTS = ("sam2", "masklets")  # the parts of a store identity that decide its feature space
# The optional part of an identity listing the encoders whose vectors a reader concatenates (absent for the
# default `encoder=[sam2]`, so heads and stores of sam2 features keep their identity). It never decides the
# folder: every encoder's vectors of the same masklets live in the one store folder.
ENCODERS_PART = "encoders"


# ----------------------------------------------------------------------------------------- identity


def checkpoint_sha256(checkpoint: str | os.PathLike | None) -> str:
    """sha256 of a checkpoint file's bytes, or "random" for random weights (checkpoint=null)."""
    if is_unset(checkpoint):
        return "random"
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ISAM2Error(f"sam2.checkpoint not found: {path}")
    return cached_sha256(path)  # the same digest SAM2Backbone.metadata() records


def store_identity(cfg: DictConfig, split: str, targets: str = "all") -> dict[str, Any]:
    """The config that decides a store's content: data name+root+split, sam2 (checkpoint by sha256), masklets;
    without the settings that change only speed or memory (`_SAM2_NOT_IDENTITY`, `_MASKLETS_NOT_IDENTITY`).
    `targets`: which videos have ground truth ("all", "none", "some"); recorded only when not "all", so a
    labelled store keeps its identity and an unlabelled one of the same frames is another store."""
    sam2 = OmegaConf.to_container(cfg.sam2, resolve=True)
    for key in _SAM2_NOT_IDENTITY:
        sam2.pop(key, None)
    sam2["checkpoint"] = checkpoint_sha256(sam2.get("checkpoint"))
    masklets = OmegaConf.to_container(cfg.masklets, resolve=True)
    for key in _MASKLETS_NOT_IDENTITY:
        masklets.pop(key, None)
    if masklets.get("source") == "gt":
        masklets.pop("window", None)  # oracle masklets have no keyframes
    identity = {
        "data": {
            "name": str(cfg.data.name),
            "root": str(Path(cfg.data.root).expanduser().resolve()),
            "split": split,
            **({} if targets == "all" else {"targets": targets}),
        },
        "sam2": sam2,
        "masklets": masklets,
    }
    encoders = encoders_identity(cfg)
    if encoders is not None:
        identity[ENCODERS_PART] = encoders
    return identity


def encoders_identity(cfg: DictConfig) -> list[dict[str, Any]] | None:
    """The identities of cfg.encoder's encoders in order (`isam2.encoders.encoder_identity`); None for the
    default `[sam2]`, whose vectors are the store's own `features.npy`."""
    from isam2.encoders import SAM2_ENCODER, encoder_configs, encoder_identity

    configs = encoder_configs(cfg)
    if list(configs) == [SAM2_ENCODER]:
        return None
    return [{"name": SAM2_ENCODER} if n == SAM2_ENCODER else encoder_identity(c) for n, c in configs.items()]


def feature_identity(identity: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of a store identity that decides the feature space of its vectors: its `sam2` and
    `masklets` parts (everything but the dataset and split), and its `encoders` when it has them; None for a
    store that recorded no identity."""
    if not isinstance(identity, dict) or not all(k in identity for k in FEATURE_PARTS):
        return None
    parts = FEATURE_PARTS + ((ENCODERS_PART,) if ENCODERS_PART in identity else ())
    return {k: identity[k] for k in parts}


def config_hash(identity: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of `identity` without its `encoders` part (the
    vectors of every encoder of the same masklets share one store folder)."""
    masklets_only = {k: v for k, v in identity.items() if k != ENCODERS_PART}
    canonical = json.dumps(masklets_only, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def masklet_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """`identity` without its `encoders` part: what a store folder records (identity.json, the manifest)."""
    return {k: v for k, v in identity.items() if k != ENCODERS_PART}


def store_folder(store_dir: str | os.PathLike, identity: dict[str, Any]) -> Path:
    """`<store_dir>/<dataset>-<split>-<hash12>`, absolute."""
    name = f"{identity['data']['name']}-{identity['data']['split']}-{config_hash(identity)[:12]}"
    return Path(store_dir).expanduser().resolve() / name


def read_hash(path: Path) -> str | None:
    """The config hash recorded in a store folder (manifest first, then identity.json), None if none."""
    for name in ("manifest.json", "identity.json"):
        file = Path(path) / name
        if file.is_file():
            try:
                return json.loads(file.read_text())["config_hash"]
            except (OSError, ValueError, KeyError, TypeError) as e:  # ValueError: not JSON, not UTF-8
                raise ISAM2Error(f"corrupt store file {file}: {e}; rebuild with force=true") from None
    return None


def _mismatch_message(path: Path, found: str, expected: str) -> str:
    return (
        f"masklet store {path} was built with config hash {found}, but the current config has hash "
        f"{expected}; pass force=true to rebuild it, or set paths.store_dir elsewhere"
    )
