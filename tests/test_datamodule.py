"""StoreDataModule: seeded epoch batches, device-resident gathering, whole-video eval batches, sharding."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isam2.datamodules.stores import EpochBatchSampler, StoreDataModule, feature_statistics
from isam2.errors import ISAM2Error

from .train_helpers import tiny_dataset, toy_store


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy_dm")
    datasets = {s: tiny_dataset(root / "data", s) for s in ("train", "val")}
    stores = {s: toy_store(root / f"store_{s}", datasets[s], seed=i) for i, s in enumerate(datasets)}
    return stores, datasets


def test_epoch_batches_are_a_seeded_permutation_per_epoch():
    sampler = EpochBatchSampler(103, 10, seed=3)
    first = torch.cat(list(sampler))
    assert sorted(first.tolist()) == list(range(103)) and len(list(sampler)) == len(sampler) == 11
    assert torch.equal(first, torch.cat(list(EpochBatchSampler(103, 10, seed=3))))
    sampler.set_epoch(1)
    assert not torch.equal(first, torch.cat(list(sampler)))
    assert not torch.equal(first, torch.cat(list(EpochBatchSampler(103, 10, seed=4))))


def test_epoch_batches_split_disjointly_across_ranks(monkeypatch):
    import isam2.datamodules.stores as dm

    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(dm, "rank_and_world", lambda r=rank: (r, 2))
        sampler = EpochBatchSampler(21, 4, seed=0)
        seen.append(torch.cat(list(sampler)))
        assert len(sampler) == 3
    assert len(seen[0]) == len(seen[1]) == 10
    assert not set(seen[0].tolist()) & set(seen[1].tolist())


def test_feature_statistics_match_numpy(toy):
    stores, _ = toy
    rows = np.array([0, 2, 3, 7, 8, 9])
    mean, std = feature_statistics(stores["train"].features, rows)
    ref = stores["train"].features[rows].astype(np.float64)
    assert np.allclose(mean.numpy(), ref.mean(0), atol=1e-5) and np.allclose(
        std.numpy(), ref.std(0), atol=1e-5
    )


@pytest.mark.parametrize("resident", [True, False])
def test_training_batches_gather_the_right_rows(toy, resident):
    stores, datasets = toy
    dm = StoreDataModule(stores, datasets, batch_size=7, device_resident=resident, seed=0)
    loader = dm.train_dataloader()
    labels, feats = [], []
    for batch in loader:
        if resident:
            # indices, gathered on device
            assert isinstance(batch, torch.Tensor) and batch.dtype == torch.long
        batch = dm.transfer_batch_to_device(batch, torch.device("cpu"), 0)
        labels.append(batch["label"]), feats.append(batch["features"])
    store = stores["train"]
    keep = store.label != 255
    assert sorted(torch.cat(labels).tolist()) == sorted(store.label[keep].astype(int).tolist())
    got = torch.cat(feats).float()
    assert got.shape == (int(keep.sum()), store.features.shape[1])
    assert np.allclose(
        np.sort(got.sum(1).numpy()), np.sort(store.features[keep].astype(np.float32).sum(1)), atol=1e-3
    )


def test_validation_batches_are_whole_videos_with_local_id_maps(toy):
    stores, datasets = toy
    dm = StoreDataModule(stores, datasets)
    batches = list(dm.val_dataloader())
    assert [b["video"] for b in batches] == stores["val"].videos()
    for b in batches:
        video = next(v for v in datasets["val"].videos if v.id == b["video"])
        assert b["gt"].shape == b["id_maps"].shape == (len(video), *video.size)
        assert int(b["id_maps"].max()) == len(b["features"]) - 1 and int(b["id_maps"].min()) >= -1
        covered = b["id_maps"] >= 0
        # toy masklets are the GT classes: labels painted through the local id maps give back the GT
        assert torch.equal(b["label"][b["id_maps"][covered]], b["gt"][covered].long())
        assert b["frame_names"] == video.frame_names


def test_validation_shards_whole_videos_without_padding(toy, monkeypatch):
    import isam2.distributed as sharding

    stores, datasets = toy
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(sharding, "rank_and_world", lambda r=rank: (r, 2))
        seen += [b["video"] for b in StoreDataModule(stores, datasets).val_dataloader()]
    assert sorted(seen) == sorted(stores["val"].videos())


def test_store_dataset_mismatch_and_bad_settings(toy):
    stores, datasets = toy
    with pytest.raises(ISAM2Error, match="device_resident"):
        StoreDataModule(stores, datasets, device_resident="maybe")
    wrong = {"val": stores["val"]}
    dm = StoreDataModule(wrong, {"val": datasets["train"]})
    with pytest.raises(ISAM2Error, match="lacks"):
        dm.val_dataloader()
