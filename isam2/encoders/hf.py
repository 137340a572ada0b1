"""Loading `transformers` models offline: a local folder only (local_files_only, HF_HUB_OFFLINE), or random weights."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from isam2.errors import ISAM2Error
from isam2.logs import get_logger


def offline_transformers() -> Any:
    """`transformers`, with the hub switched off for this process: nothing is ever downloaded."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    import transformers

    return transformers


def from_local_folder(model_class: Any, folder: str | Path, setting: str) -> torch.nn.Module:
    """`model_class.from_pretrained(folder, local_files_only=True)`; a missing or unfit folder is an ISAM2Error."""
    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise ISAM2Error(f"{setting}={path} is not a local Hugging Face model folder (no config.json)")
    try:
        return model_class.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise ISAM2Error(f"{setting}={path} cannot be loaded as {model_class.__name__}: {e}") from None


log = get_logger(__name__)


def warn_random_weights(setting: str) -> None:
    """Say loudly that an encoder runs with random weights (its vectors are meaningless for real use)."""
    msg = (
        f"{setting} is not set: the encoder runs with RANDOM WEIGHTS (fine for tests, meaningless otherwise)"
    )
    log.warning(msg)


def random_model(model_class: Any, config: Any) -> torch.nn.Module:
    """A model with random weights, the same in every process (seeded, the caller's RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return model_class(config)
