"""Test helper: a noisy "base segmentor" made from ground truth by random label flips inside blobs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from isam2.data.datasets import VideoDataset


def noisy_labels(gt: np.ndarray, rng: np.random.Generator, classes: np.ndarray, blobs: int = 6) -> np.ndarray:
    """GT with `blobs` random elliptic blobs relabelled to a random class each; void becomes a guess too."""
    h, w = gt.shape
    out = gt.copy()
    out[out == 255] = rng.choice(classes)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(blobs):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        ry, rx = rng.uniform(0.05, 0.15) * h, rng.uniform(0.05, 0.15) * w
        out[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = rng.choice(classes)
    return out


def write_noisy_base(dataset: VideoDataset, out_dir: Path, seed: int = 0) -> Path:
    """Write `<out_dir>/<video>/<frame>.png` noisy predictions for every frame of `dataset`."""
    rng = np.random.default_rng(seed)
    for video in dataset:
        gts = video.load_masks()
        classes = np.unique(gts[gts != 255])
        (out_dir / video.id).mkdir(parents=True, exist_ok=True)
        for name, gt in zip(video.frame_names, gts, strict=True):
            Image.fromarray(noisy_labels(gt, rng, classes)).save(out_dir / video.id / f"{name}.png")
    return out_dir
