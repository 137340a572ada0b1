"""Augmented mode: one augmentation draw per clip (frames and id maps alike), and a CPU fit at a tiny size."""

from __future__ import annotations

import json
from pathlib import Path

import albumentations as A
import numpy as np
import pytest
import torch

from isam2.datamodules.augmented import ClipAugmenter

from .train_helpers import cpu_trainer, run_cli, tiny_overrides


def _clip(T: int = 4, H: int = 40, W: int = 56):
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    ids = np.full((H, W), -1, np.int64)
    ids[5:20, 4:30], ids[22:38, 30:50] = 0, 7
    return np.repeat(frame[None], T, 0), np.repeat(ids[None], T, 0)


def test_every_frame_and_mask_of_a_clip_gets_the_same_geometric_transform():
    pipeline = A.Compose(
        [
            A.HorizontalFlip(p=0.5),
            A.Affine(scale=(0.7, 1.3), rotate=(-25, 25), translate_percent=(-0.1, 0.1), p=1.0),
        ]
    )
    frames, ids = _clip()
    out_frames, out_ids = ClipAugmenter(pipeline)(frames, ids, seed=3)
    assert out_frames.shape == frames.shape and out_ids.shape == ids.shape
    for t in range(1, len(frames)):  # identical inputs -> identical outputs only if the parameters are shared
        assert np.array_equal(out_frames[t], out_frames[0]) and np.array_equal(out_ids[t], out_ids[0])
    assert not np.array_equal(out_ids[0], ids[0])  # the transform did something
    assert set(np.unique(out_ids)) <= {-1, 0, 7}  # nearest: ids never blended
    # masks moved with the image: the same draw applied to an image that paints the ids reproduces them
    painted = (
        np.where(ids[..., None] == 7, 200, np.where(ids[..., None] == 0, 100, 0))
        .astype(np.uint8)
        .repeat(3, -1)
    )
    out_painted, _ = ClipAugmenter(pipeline)(painted, ids, seed=3)
    agree = (out_painted[0, ..., 0] > 150) == (out_ids[0] == 7)
    assert agree.mean() > 0.97  # only interpolated border pixels may differ
    _, again = ClipAugmenter(pipeline)(frames, ids, seed=3)
    assert np.array_equal(again, out_ids)  # seeded draws repeat


def _untrained_miou(run: Path, data_root: Path, seed: int, tmp: Path) -> float:
    """Test mIoU of the run's head with freshly initialised weights (seed) and the run's feature
    statistics: what the test stage reports for a head that learned nothing."""
    from isam2.data.datasets import VSPW
    from isam2.datamodules.stores import StoreDataModule
    from isam2.model import MaskletClassifier
    from isam2.store.reader import MaskletStore

    trained = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    torch.manual_seed(seed)
    model = MaskletClassifier(**trained["hyper_parameters"])
    statistics = ("head.feature_mean", "head.feature_std", "class_weights")
    model.load_state_dict({**model.state_dict(), **{k: trained["state_dict"][k] for k in statistics}})
    stores = {"test": MaskletStore(json.loads((run / "metadata.json").read_text())["stores"]["test"])}
    datamodule = StoreDataModule(stores, {"test": VSPW(data_root, "test")})
    cpu_trainer(tmp, max_epochs=1).test(model, datamodule=datamodule, verbose=False)
    return model.test_results["miou"]


@pytest.mark.slow
def test_augmented_mode_fits_on_cpu_and_keeps_sam2_out_of_the_checkpoint(tmp_path_factory, tmp_path):
    shared = tmp_path_factory.getbasetemp() / "augment_shared"
    run_cli(
        "isam2.train",
        [
            *tiny_overrides(tmp_path, shared),
            "datamodule=augmented",
            "datamodule.clips_per_epoch=3",
            "trainer.max_epochs=2",
        ],
    )
    run = tmp_path / "run"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_videos"] == 2
    # it learned: an untrained head of the same kind (three initialisations) stays far below
    untrained = max(_untrained_miou(run, shared / "data", seed, tmp_path) for seed in range(3))
    assert metrics["miou"] >= untrained + 0.2, (metrics["miou"], untrained)
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    assert state and all(k.startswith(("head.", "class_weights")) for k in state)
    losses = (run / "csv" / "metrics.csv").read_text()
    assert "train/loss_epoch" in losses.splitlines()[0]
