"""Data stage: dataset readers, label conversion, the synthetic set, and the whole-video sharding."""

from __future__ import annotations

from omegaconf import DictConfig

from isam2.data.datasets import VSPW, VideoDataset, VIPSeg
from isam2.data.video import DataError, Video

__all__ = ["VSPW", "DataError", "VIPSeg", "Video", "VideoDataset", "open_split"]


def open_split(data_cfg: DictConfig, split: str | None = None, require_masks: bool = True) -> VideoDataset:
    """The reader of `data_cfg` for `split` (default `data.split`); generates the synthetic set on first use.
    `data.split_file`, when set, lists the videos of `data.split` (other splits read their layout's own list)."""
    from hydra.utils import instantiate

    from isam2.data.synthetic import ensure_synthetic

    if data_cfg.get("generate") is not None:
        ensure_synthetic(data_cfg.root, instantiate(data_cfg.generate))
    split = split or data_cfg.split
    extra = {}
    if data_cfg.get("split_file") and split == data_cfg.split:
        extra["split_file"] = str(data_cfg.split_file)
    return instantiate(data_cfg.reader, root=data_cfg.root, split=split, require_masks=require_masks, **extra)
