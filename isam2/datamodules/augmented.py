"""Augmented mode: clips of frames + masklet id maps through one albumentations draw, then the frozen encoder and Eq. 3."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from isam2.datamodules.stores import StoreDataModule, single_store
from isam2.errors import ConfigError, ISAM2Error
from isam2.store.reader import read_rows


class ClipAugmenter:
    """Applies ONE draw of an albumentations pipeline to every frame of a clip and to its id maps.

    Id maps travel as float32 masks shifted by +1 (0 = no masklet, which is also what geometric transforms
    fill in); masks use nearest interpolation, so ids are never blended.
    """

    def __init__(self, pipeline: Any):
        self.pipeline = pipeline

    def __call__(
        self, frames: np.ndarray, id_maps: np.ndarray, seed: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if frames.shape[:3] != id_maps.shape:
            raise ISAM2Error(f"clip frames {frames.shape} and id maps {id_maps.shape} differ in size")
        if seed is not None:
            self.pipeline.set_random_seed(seed)
        out = self.pipeline(images=np.ascontiguousarray(frames), masks=(id_maps + 1).astype(np.float32))
        return np.asarray(out["images"]), np.rint(np.asarray(out["masks"])).astype(np.int64) - 1


class ClipBatches(Dataset):
    """`clips_per_epoch` random clips of `clip_length` consecutive frames (seeded by seed, epoch, index)."""

    def __init__(
        self,
        store: Any,
        dataset: Any,
        augmenter: ClipAugmenter,
        clip_length: int,
        clips_per_epoch: int,
        seed: int,
        videos: list[str] | None = None,
    ):
        self.store, self.augmenter = store, augmenter
        by_id = {v.id: v for v in dataset.videos}
        wanted = set(store.videos() if videos is None else videos)  # held-out selection videos are not drawn
        self.videos = [(vid, by_id[vid]) for vid in store.videos() if vid in by_id and vid in wanted]
        if not self.videos:
            raise ISAM2Error(
                f"no video of the training store {getattr(store, 'path', '?')} is in {dataset.root}"
            )
        self.clip_length, self.clips_per_epoch, self.seed, self.epoch = clip_length, clips_per_epoch, seed, 0

    def __len__(self) -> int:
        return self.clips_per_epoch

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        draw = self.seed * 1_000_003 + self.epoch * 10_007 + int(index)
        rng = np.random.default_rng(draw)
        video_id, video = self.videos[int(rng.integers(len(self.videos)))]
        start = int(rng.integers(max(len(video) - self.clip_length, 0) + 1))
        frames_idx = list(range(start, min(start + self.clip_length, len(video))))
        rows = self.store.rows(video_id)
        id_maps = np.asarray(self.store.id_maps(video_id))[frames_idx]
        id_maps = np.where(id_maps >= 0, id_maps - rows.start, -1)
        frames, id_maps = self.augmenter(video.load_frames(frames_idx), id_maps, seed=draw)
        return {
            "frames": torch.from_numpy(frames),
            "id_maps": torch.from_numpy(id_maps),
            "label": torch.from_numpy(np.asarray(self.store.label[rows]).astype(np.int64)),
            "purity": torch.from_numpy(read_rows(self.store.purity, rows)),
        }


class _EpochClips(torch.utils.data.SequentialSampler):
    """Sequential clip indices; set_epoch re-seeds the clip draws (Lightning calls it every epoch)."""

    def __init__(self, clips: ClipBatches):
        super().__init__(clips)
        self.clips = clips

    def set_epoch(self, epoch: int) -> None:
        self.clips.epoch = int(epoch)


class AugmentedDataModule(StoreDataModule):
    """Training clips are augmented and re-encoded by the frozen SAM2 every step (masklets from the store's
    id maps, Eq. 3 pooling on the augmented features); validation and test read the store as in store mode.

    The backbone lives here, not in the LightningModule, so it is never in a checkpoint.
    """

    def __init__(
        self,
        stores: Mapping[str, Any],
        datasets: Mapping[str, Any],
        augment: Any,
        sam2: Any,
        pooling_levels: list[int] | None = None,
        clip_length: int = 2,
        clips_per_epoch: int = 8,
        seed: int = 0,
        eval_num_workers: int = 0,
        base_pred_dir: Any = None,
        videos: Mapping[str, list[str]] | None = None,
        batch_size: int = 4096,
        shuffle: bool = True,
        encoders: Mapping[str, Any] | None = None,
    ):
        if encoders is not None and list(encoders) != ["sam2"]:
            raise ConfigError(
                f"datamodule=augmented pools SAM2's own features on the fly, but encoder={list(encoders)}; "
                "use datamodule=store with other encoders"
            )
        # batch_size: accepted so that experiments setting datamodule.batch_size compose with either mode;
        # a training clip is one batch here
        super().__init__(
            stores,
            datasets,
            batch_size=batch_size,
            seed=seed,
            eval_num_workers=eval_num_workers,
            base_pred_dir=base_pred_dir,
            videos=videos,
            shuffle=shuffle,
        )
        from hydra.utils import instantiate

        pipeline = (
            instantiate(augment) if isinstance(augment, Mapping) or hasattr(augment, "keys") else augment
        )
        self.augmenter = ClipAugmenter(pipeline)
        self.sam2_cfg, self.pooling_levels = sam2, list(pooling_levels or [0])
        self.clip_length, self.clips_per_epoch = int(clip_length), int(clips_per_epoch)
        self._backbone = None

    def backbone(self, device: torch.device) -> Any:
        if self._backbone is None:
            from hydra.utils import instantiate

            self._backbone = instantiate(self.sam2_cfg, device=str(device))
            self._backbone.pooling_levels = self.pooling_levels
        return self._backbone

    def train_dataloader(self) -> DataLoader:
        clips = ClipBatches(
            self.train_store,
            self.datasets["train"],
            self.augmenter,
            self.clip_length,
            self.clips_per_epoch,
            self.seed,
            self.videos.get("train"),
        )
        return DataLoader(clips, sampler=_EpochClips(clips), batch_size=None, collate_fn=single_store)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """A clip of frames becomes a `MaskletBatch` of its masklets' pooled, augmented features."""
        if not (isinstance(batch, dict) and "frames" in batch):
            return super().transfer_batch_to_device(batch, device, dataloader_idx)
        backbone = self.backbone(device)
        features, rows = [], []
        for frame, id_map in zip(batch["frames"].numpy(), batch["id_maps"].to(device)):
            ids = torch.unique(id_map)
            ids = ids[ids >= 0]
            if len(ids) == 0:
                continue
            masks = id_map[None] == ids[:, None, None]
            features.append(backbone.encode(frame).pool(masks).clone())  # clone: leave inference mode
            rows.append(ids)
        if not rows:
            d = int(self.train_store.features.shape[1])
            return {
                "features": torch.zeros(0, d, device=device),
                "label": torch.zeros(0, dtype=torch.long, device=device),
                "purity": torch.zeros(0, device=device),
            }
        rows_t = torch.cat(rows)
        return {
            "features": torch.cat(features).float(),
            "label": batch["label"].to(device)[rows_t],
            "purity": batch["purity"].to(device)[rows_t],
        }
