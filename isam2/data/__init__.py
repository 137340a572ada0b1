"""Data stage: dataset readers, label conversion, the synthetic set, and the whole-video sharding."""

from __future__ import annotations

from omegaconf import DictConfig

from isam2.data.datasets import VSPW, VideoDataset, VIPSeg
from isam2.data.video import DataError, Video

__all__ = [
    "VSPW",
    "DataError",
    "VIPSeg",
    "Video",
    "VideoDataset",
    "check_labelled",
    "labelled_status",
    "open_split",
]


def open_split(
    data_cfg: DictConfig, split: str | None = None, require_masks: bool = True, generate: bool = True
) -> VideoDataset:
    """The reader of `data_cfg` for `split` (default `data.split`); generates the synthetic set on first use
    (unless `generate=False`). `require_masks`: every video must have ground-truth masks (train, evaluate);
    otherwise videos without masks are read without them (extract, refine, predict). `data.split_file`, when
    set, lists the videos of `data.split` (other splits read their layout's own list)."""
    from hydra.utils import instantiate

    from isam2.data.synthetic import ensure_synthetic

    if generate and data_cfg.get("generate") is not None:
        ensure_synthetic(data_cfg.root, instantiate(data_cfg.generate))
    split = split or data_cfg.split
    extra = {}
    if data_cfg.get("split_file") and split == data_cfg.split:
        extra["split_file"] = str(data_cfg.split_file)
    dataset = instantiate(data_cfg.reader, root=data_cfg.root, split=split, require_masks=False, **extra)
    if require_masks:
        check_labelled(dataset)
    return dataset


def check_labelled(dataset: VideoDataset) -> None:
    """Refuse a split where some or all videos have no ground-truth masks, naming the first without."""
    unlabelled = [v.id for v in dataset.videos if v.masks is None]
    if not unlabelled:
        return
    where = f"split {dataset.split!r} of {dataset.root}"
    if len(unlabelled) == len(dataset.videos):
        raise DataError(
            f"{where} has no ground-truth masks (video {unlabelled[0]!r} has none): this task needs a labelled "
            "split; python -m isam2.predict and isam2.refine work on unlabelled videos"
        )
    raise DataError(
        f"{where} mixes videos with and without ground-truth masks: video {unlabelled[0]!r} is the first of "
        f"{len(unlabelled)} of {len(dataset.videos)} without; this task needs masks for every video"
    )


def labelled_status(dataset: VideoDataset) -> str:
    """ "all", "none" or "some": which of the split's videos have ground-truth masks."""
    n = sum(v.masks is not None for v in dataset.videos)
    return "all" if n == len(dataset.videos) else "none" if n == 0 else "some"
