"""Lightning data modules: masklet vectors from the MaskletStore (fast path) and whole videos for evaluation."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightning.pytorch as pl
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from isam2.constants import VOID as IGNORE
from isam2.distributed import VideoShardSampler, rank_and_world
from isam2.errors import ConfigError, ISAM2Error
from isam2.store.reader import read_rows

# the batch types live with the model that consumes them; data never imports model at run time
if TYPE_CHECKING:
    from isam2.model.batches import MaskletBatch, VideoBatch

STAT_BLOCK_ROWS = 1 << 18  # rows per block when reducing statistics over a memory-mapped store


def trainable_rows(store: Any, videos: Sequence[str] | None = None) -> np.ndarray:
    """Global indices of the store rows with a target (label != 255), of `videos` only when given."""
    keep = np.asarray(store.label) != IGNORE
    if videos is not None:
        chosen = np.zeros(len(keep), dtype=bool)
        for video_id in videos:
            chosen[store.rows(video_id)] = True
        keep &= chosen
    return np.flatnonzero(keep)


def held_out_videos(video_ids: Sequence[str], fraction: float, seed: int) -> list[str]:
    """The selection split carved from a training split: round(fraction * n) videos (at least one, and at least
    one left to train on), drawn by `seed`, in split order. The same ids for the same (ids, fraction, seed)."""
    n = len(video_ids)
    if not 0.0 < float(fraction) < 1.0:
        raise ConfigError(f"data.selection.fraction={fraction} must lie in (0, 1)")
    if n < 2:
        raise ConfigError(
            f"data.selection.mode=held_out needs at least 2 training videos to hold one out, the train split "
            f"has {n}; add videos or select on val with data.selection.mode=paper_val"
        )
    count = min(max(1, round(float(fraction) * n)), n - 1)
    chosen = np.random.default_rng(int(seed)).permutation(n)[:count]
    return [video_ids[i] for i in sorted(chosen)]


def _tensor(values: np.ndarray) -> torch.Tensor:
    """A tensor over `values`, copied when they are a read-only view of a memory-mapped store (torch warns
    about, and must never write through, a non-writable array)."""
    return torch.from_numpy(values if values.flags.writeable else values.copy())


def feature_statistics(features: np.ndarray, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-dimension mean and std (float64 accumulation, blockwise) of features[rows]."""
    dim = features.shape[1]
    total, total_sq, n = np.zeros(dim), np.zeros(dim), 0
    for start in range(0, len(rows), STAT_BLOCK_ROWS):
        block = read_rows(features, rows[start : start + STAT_BLOCK_ROWS]).astype(np.float64)
        total += block.sum(0)
        total_sq += np.square(block).sum(0)
        n += len(block)
    if n == 0:
        raise ISAM2Error("the training store has no masklet with a target (every label is 255)")
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean**2, 0.0))
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()


def memory_budget_bytes(device: torch.device) -> int:
    """Free memory of `device` (GPU: free CUDA memory; CPU: available RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 0


class EpochBatchSampler(Sampler[torch.Tensor]):
    """Yields this rank's batches of positions in [0, num_rows) as LongTensors.

    The order is a permutation seeded by (seed, epoch), the same on every rank; each rank takes its own
    stride of it, and every rank gets the same number of batches (a few rows may be dropped, as in
    training they can be). No per-sample Python: one permutation per epoch, sliced into batches.
    """

    def __init__(self, num_rows: int, batch_size: int, seed: int = 0, shuffle: bool = True):
        if batch_size < 1:
            raise ISAM2Error(f"datamodule.batch_size={batch_size} must be >= 1")
        self.num_rows, self.batch_size, self.seed, self.shuffle = num_rows, batch_size, seed, shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _per_rank(self) -> int:
        _, world = rank_and_world()
        return self.num_rows // world if world > 1 else self.num_rows

    def __len__(self) -> int:
        return -(-self._per_rank() // self.batch_size)

    def __iter__(self) -> Iterator[torch.Tensor]:
        rank, world = rank_and_world()
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.num_rows, generator=generator)
        else:
            order = torch.arange(self.num_rows)
        mine = order[rank : self._per_rank() * world : world] if world > 1 else order
        yield from torch.split(mine, self.batch_size)


class RowBatches(Dataset):
    """Maps a batch of positions (from EpochBatchSampler) to a training batch.

    Resident mode returns the positions themselves: the data module gathers on the device, where all
    vectors already are. Otherwise the rows are gathered from the memory-mapped store (sorted reads).
    """

    def __init__(self, store: Any, rows: np.ndarray, resident: bool):
        self.store, self.rows, self.resident = store, rows, resident

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, positions: torch.Tensor) -> torch.Tensor | MaskletBatch:
        if self.resident:
            return positions
        rows = np.sort(self.rows[positions.numpy()])
        return {
            "features": _tensor(read_rows(self.store.features, rows)),
            "label": torch.from_numpy(read_rows(self.store.label, rows).astype(np.int64)),
            "purity": _tensor(read_rows(self.store.purity, rows)),
        }


def check_store_matches(store: Any, dataset: Any) -> None:
    """Refuse a masklet store built from another split or dataset root than the one being evaluated."""
    manifest = getattr(store, "manifest", None) or {}
    built = (manifest.get("split"), (manifest.get("dataset") or {}).get("root"))
    wanted = (dataset.split, str(Path(dataset.root).resolve()))
    if built[0] is not None and (built[0] != wanted[0] or Path(str(built[1])).resolve() != Path(wanted[1])):
        raise ISAM2Error(
            f"masklet store {getattr(store, 'path', '?')} was built from split {built[0]!r} of {built[1]}, "
            f"but split {wanted[0]!r} of {wanted[1]} was requested; use the store of that split"
        )


class VideoBatches(Dataset):
    """One whole video per item: its rows' vectors and targets, id maps (local rows), GT masks, and,
    with `base_pred_dir`, the base segmentor's predictions (`base`: fill-in, the base row, the refiner)."""

    def __init__(
        self,
        store: Any,
        dataset: Any,
        base_pred_dir: str | os.PathLike | None = None,
        preview: bool = True,
        videos: Sequence[str] | None = None,
    ):
        self.store, self.base_pred_dir, self.preview = store, base_pred_dir, preview
        check_store_matches(store, dataset)
        self.video_ids = store.videos()
        if videos is not None:
            absent = sorted(set(videos) - set(self.video_ids))
            if absent:
                raise ISAM2Error(f"masklet store {getattr(store, 'path', '?')} has no video {absent[0]!r}")
            wanted = set(videos)
            self.video_ids = [v for v in self.video_ids if v in wanted]
        by_id = {v.id: v for v in dataset.videos}
        missing = [v for v in self.video_ids if v not in by_id]
        if missing:
            raise ISAM2Error(
                f"masklet store {getattr(store, 'path', '?')} has videos that {dataset.root} ({dataset.split}) "
                f"lacks, e.g. {missing[0]!r}; rebuild the store with force=true"
            )
        self.videos = [by_id[v] for v in self.video_ids]
        if base_pred_dir is not None:
            from isam2.data.predictions import check_predictions

            check_predictions(base_pred_dir, self.videos)  # every frame present, right size: fail before work

    def sizes(self) -> list[int]:
        return [len(v) for v in self.videos]

    def __len__(self) -> int:
        return len(self.video_ids)

    def __getitem__(self, index: int) -> VideoBatch:
        video_id, video = self.video_ids[index], self.videos[index]
        rows = self.store.rows(video_id)
        id_maps = np.asarray(self.store.id_maps(video_id))
        id_maps = np.where(id_maps >= 0, id_maps - rows.start, -1)
        gt = video.load_masks()
        if gt.shape != id_maps.shape:
            raise ISAM2Error(
                f"video {video_id!r}: masklet id maps {id_maps.shape} do not match the GT masks {gt.shape} "
                f"in {video.masks[0].parent if video.masks else video_id}; rebuild the store with force=true"
            )
        item: VideoBatch = {
            "video": video_id,
            "frame_names": list(video.frame_names),
            "features": _tensor(read_rows(self.store.features, rows)),
            "label": torch.from_numpy(np.asarray(self.store.label[rows]).astype(np.int64)),
            "purity": _tensor(read_rows(self.store.purity, rows)),
            "track": torch.from_numpy(np.asarray(self.store.track[rows]).astype(np.int64)),
            "frame": torch.from_numpy(np.asarray(self.store.frame[rows]).astype(np.int64)),
            "id_maps": torch.from_numpy(id_maps),
            "gt": _tensor(gt),
        }
        if self.base_pred_dir is not None:
            from isam2.data.predictions import read_prediction

            folder = Path(self.base_pred_dir) / video_id
            base = np.stack([read_prediction(folder / f"{n}.png", gt.shape[1:]) for n in video.frame_names])
            if base.dtype != np.uint8:
                raise ISAM2Error(f"base predictions in {folder} are not 8-bit label PNGs (uint8 train ids)")
            item["base"] = _tensor(base)
        if self.preview:
            item["preview"] = _tensor(video.load_frame(0))
        return item


def single_store(batch: Any) -> Any:
    return batch  # batch_size=None: every item is already one batch


class StoreDataModule(pl.LightningDataModule):
    """Store mode: training batches of masklet vectors; validation and test one whole video per step.

    `stores` and `datasets` map "train"/"val"/"test" to a MaskletStore and the matching VideoDataset (the
    GT masks); "val" is the selection split (what the checkpoint is selected on). `videos` restricts a role to
    some of its store's videos: a selection split held out of the training split is the train store with
    {"train": the other videos, "val": the held-out ones}. With `device_resident` ("auto" | true | false) the training vectors are put on the device
    once and batches are gathered there by index; "auto" does so when they take at most
    `resident_fraction` of the device's free memory.
    """

    def __init__(
        self,
        stores: Mapping[str, Any],
        datasets: Mapping[str, Any],
        batch_size: int = 4096,
        device_resident: bool | str = "auto",
        resident_fraction: float = 0.5,
        num_workers: int = 0,
        eval_num_workers: int = 0,
        seed: int = 0,
        base_pred_dir: str | os.PathLike | None = None,
        videos: Mapping[str, Sequence[str]] | None = None,
        shuffle: bool = True,
    ):
        super().__init__()
        if device_resident not in ("auto", True, False):
            raise ISAM2Error(f"datamodule.device_resident={device_resident!r} must be auto, true or false")
        self.stores, self.datasets = dict(stores), dict(datasets)
        self.batch_size, self.device_resident, self.resident_fraction = (
            int(batch_size),
            device_resident,
            resident_fraction,
        )
        self.num_workers, self.eval_num_workers, self.seed = (
            int(num_workers),
            int(eval_num_workers),
            int(seed),
        )
        self.base_pred_dir, self.shuffle = base_pred_dir, bool(shuffle)
        self.videos = {role: list(ids) for role, ids in (videos or {}).items()}
        self._train_rows: np.ndarray | None = None
        self._statistics: dict[str, torch.Tensor] | None = None
        self._resident: dict[str, torch.Tensor] | None = None  # training rows, on `_resident_device`
        self._resident_device: torch.device | None = None

    # ---- training ----
    @property
    def train_store(self) -> Any:
        if "train" not in self.stores:
            raise ISAM2Error("no training store was given to the data module")
        return self.stores["train"]

    @property
    def train_rows(self) -> np.ndarray:
        if self._train_rows is None:
            self._train_rows = trainable_rows(self.train_store, self.videos.get("train"))
        return self._train_rows

    def training_statistics(self) -> dict[str, torch.Tensor]:
        """Feature mean/std and label counts of the training rows (for the head's buffers)."""
        if self._statistics is None:
            mean, std = feature_statistics(self.train_store.features, self.train_rows)
            labels = np.asarray(self.train_store.label)[self.train_rows].astype(np.int64)
            num_classes = (
                int(self.datasets["train"].num_classes) if "train" in self.datasets else int(labels.max()) + 1
            )
            counts = torch.from_numpy(np.bincount(labels, minlength=num_classes)[:num_classes])
            self._statistics = {"mean": mean, "std": std, "label_counts": counts}
        return self._statistics

    def _use_resident(self) -> bool:
        if self.device_resident != "auto":
            return bool(self.device_resident)
        device = self.trainer.strategy.root_device if self._trainer_attached() else torch.device("cpu")
        need = len(self.train_rows) * self.train_store.features.shape[1] * 2
        return need <= self.resident_fraction * memory_budget_bytes(device)

    def _trainer_attached(self) -> bool:
        return getattr(self, "trainer", None) is not None

    def train_dataloader(self) -> DataLoader:
        resident = self._use_resident()
        sampler = EpochBatchSampler(
            len(self.train_rows), self.batch_size, seed=self.seed, shuffle=self.shuffle
        )
        return DataLoader(
            RowBatches(self.train_store, self.train_rows, resident),
            sampler=sampler,
            batch_size=None,
            collate_fn=single_store,
            num_workers=0 if resident else self.num_workers,
        )

    def _resident_rows(self, device: torch.device) -> dict[str, torch.Tensor]:
        """The training rows as tensors on `device`, loaded once."""
        if self._resident is None or self._resident_device != device:
            rows, store = self.train_rows, self.train_store
            self._resident = {
                "features": _tensor(read_rows(store.features, rows)).to(device),
                "label": torch.from_numpy(read_rows(store.label, rows).astype(np.int64)).to(device),
                "purity": _tensor(read_rows(store.purity, rows)).to(device),
            }
            self._resident_device = device
        return self._resident

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        if isinstance(batch, torch.Tensor):  # positions of resident training rows
            resident = self._resident_rows(device)
            positions = batch.to(device)
            # index_select: a contiguous gather, ~5x faster than advanced indexing on CPU
            return {
                "features": resident["features"].index_select(0, positions),
                "label": resident["label"].index_select(0, positions),
                "purity": resident["purity"].index_select(0, positions),
            }
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # ---- whole-video evaluation ----
    def _video_loader(self, role: str) -> DataLoader:
        if role not in self.stores or role not in self.datasets:
            raise ISAM2Error(f"no {role} store/dataset was given to the data module")
        videos = VideoBatches(
            self.stores[role],
            self.datasets[role],
            # the base fills the test split's maps only: selection scores the head's own maps (I-SAM2),
            # so a held-out train video needs no base prediction
            self.base_pred_dir if role == "test" else None,
            preview=role == "val",
            videos=self.videos.get(role),
        )
        return DataLoader(
            videos,
            sampler=VideoShardSampler(videos.sizes()),
            batch_size=None,
            collate_fn=single_store,
            num_workers=self.eval_num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self._video_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._video_loader("test")
