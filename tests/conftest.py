"""Shared fixtures. `tiny_backbone`: one random-weight hiera_t SAM2Backbone at 128 px on CPU per session.

Tests that change its `pooling_levels` must restore them (use the `tiny_backbone_levels` helper).
"""

from __future__ import annotations

import os

# Each pytest-xdist worker gets its share of the cores, before torch starts its OpenMP pool: otherwise every
# worker, and every process a test starts (they inherit the variable), runs one thread per core of the machine,
# and the threads of two workers spin against each other. Set OMP_NUM_THREADS yourself to override.
if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
    _share = (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _share)))

import contextlib
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_backbone():
    import torch

    from isam2.masklets.sam2_backbone import SAM2Backbone

    torch.manual_seed(0)
    return SAM2Backbone(variant="hiera_t", version="2.1", checkpoint=None, image_size=128, device="cpu")


@contextlib.contextmanager
def pooling_levels(backbone, levels):
    """Temporarily set a (shared) backbone's pooling levels."""
    saved = backbone.pooling_levels
    backbone.pooling_levels = levels
    try:
        yield backbone
    finally:
        backbone.pooling_levels = saved


def toy_video(T: int = 5, H: int = 64, W: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames [T,H,W,3] uint8 and train-id masks [T,H,W]: two coloured halves and a blue box moving right."""
    rng = np.random.default_rng(seed)
    frames = np.zeros((T, H, W, 3), np.uint8)
    gt = np.zeros((T, H, W), np.uint8)
    for t in range(T):
        frames[t, :, : W // 2] = (200, 40, 40)
        frames[t, :, W // 2 :] = (40, 190, 70)
        gt[t, :, W // 2 :] = 3
        y0, x0 = H // 4, W // 8 + 3 * t
        frames[t, y0 : y0 + H // 3, x0 : x0 + W // 4] = (30, 40, 220)
        gt[t, y0 : y0 + H // 3, x0 : x0 + W // 4] = 7
    gt[:, :3, :3] = 255
    noise = rng.integers(-12, 13, frames.shape)
    return np.clip(frames.astype(np.int16) + noise, 0, 255).astype(np.uint8), gt


@pytest.fixture(scope="session")
def dashboard_run(tmp_path_factory) -> Path:
    """One tiny `python -m isam2.train` with offline wandb (figures/, wandb/offline-run-*), shared by the
    wandb and notebook tests."""
    from tests.test_wandb import WANDB_OVERRIDES
    from tests.train_helpers import run_cli, tiny_overrides

    tmp = tmp_path_factory.mktemp("dashboard")
    overrides = [o for o in tiny_overrides(tmp) if o not in ("logger=csv", "++figures=false")]
    run_cli("isam2.train", [*overrides, *WANDB_OVERRIDES], env={"WANDB_DIR": str(tmp / "wandb")})
    return tmp / "run"
