"""Readers for the VSPW_480p and VIPSeg layouts: a split file -> an ordered list of `Video`s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from isam2.data.labels import NUM_CLASSES, vipseg_to_train, vspw_to_train
from isam2.data.video import DataError, Video, pair_video

CLASS_NAME_FILES = ("label_num_dic_final.json", "class_names.json")


def read_split(root: Path, split: str) -> list[str]:
    """Video ids listed in `<root>/<split>.txt`, one per line. An id that would lead outside the dataset root
    (absolute, or with a `..` part) is refused: a split file is data, it must not choose what we read."""
    path = Path(root) / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"split file not found: {path} (data.root={root}, data.split={split})")
    ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise DataError(f"split file lists no videos: {path}")
    for video_id in ids:
        relative = PurePosixPath(video_id)
        if relative.is_absolute() or ".." in relative.parts:
            raise DataError(
                f"split file {path} lists {video_id!r}, which leads outside the dataset root {root}; "
                "a split file lists video folder names"
            )
    return ids


class VideoDataset:
    """A dataset split: `videos` in split-file order, plus class names for the 124 train ids."""

    name = "base"
    num_classes = NUM_CLASSES

    def __init__(self, root: str | Path, split: str, require_masks: bool = True):
        self.root = Path(root).expanduser()
        self.split = split
        if not self.root.is_dir():
            raise DataError(f"dataset root not found: {self.root} (set data.root)")
        self.require_masks = require_masks
        self.videos: list[Video] = [self._video(v) for v in read_split(self.root, split)]

    def _video(self, video_id: str) -> Video:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.videos)

    def __iter__(self) -> Iterator[Video]:
        return iter(self.videos)

    def __getitem__(self, i: int) -> Video:
        return self.videos[i]

    @property
    def num_frames(self) -> int:
        return sum(len(v) for v in self.videos)

    @property
    def class_names(self) -> list[str]:
        """Name of each train id; read from VSPW's `label_num_dic_final.json` (name -> raw id) when present."""
        names = [f"class_{i}" for i in range(self.num_classes)]
        for fname in CLASS_NAME_FILES:
            path = self.root / fname
            if path.is_file():
                for name, raw in json.loads(path.read_text()).items():
                    if 1 <= int(raw) <= self.num_classes:
                        names[int(raw) - 1] = name
                break
        return names


class VSPW(VideoDataset):
    """VSPW_480p: `data/<video>/origin/<frame>.jpg` and `data/<video>/mask/<frame>.png`."""

    name = "vspw"

    def _video(self, video_id: str) -> Video:
        base = self.root / "data" / video_id
        if not base.is_dir():
            raise DataError(
                f"video {video_id!r} is listed in {self.split}.txt but its folder is missing: {base}"
            )
        mask_dir = base / "mask"
        if not self.require_masks and not mask_dir.is_dir():
            mask_dir = None
        return pair_video(video_id, base / "origin", mask_dir, ".jpg", vspw_to_train)


class VIPSeg(VideoDataset):
    """VIPSeg: `imgs/<video>/*.jpg` and `panomasks/<video>/*.png` (panoptic ids)."""

    name = "vipseg"

    def _video(self, video_id: str) -> Video:
        mask_dir = self.root / "panomasks" / video_id
        if not self.require_masks and not mask_dir.is_dir():
            mask_dir = None
        return pair_video(video_id, self.root / "imgs" / video_id, mask_dir, ".jpg", vipseg_to_train)
