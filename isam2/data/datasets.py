"""Readers for the VSPW_480p and VIPSeg layouts: a split's video list -> an ordered list of `Video`s."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from isam2.data.labels import NUM_CLASSES, vipseg_to_train, vspw_to_train
from isam2.data.video import DataError, Video, pair_video
from isam2.logs import get_logger

CLASS_NAME_FILES = ("label_num_dic_final.json", "class_names.json")
VIPSEG_ORIGINAL = "VIPSeg"  # the folder as downloaded: imgs/, panomasks/, {train,val,test}.txt
VIPSEG_720P = "VIPSeg_720P"  # change2_720p.py's output: images/, panomasks/ (+ panoptic_gt_*.json)
VIPSEG_FRAME_DIRS = {VIPSEG_ORIGINAL: "imgs", VIPSEG_720P: "images"}
VIPSEG_CATEGORIES = "panoVIPSeg_categories.json"  # [{"id": 0-based category (= train id), "name": ...}, ...]

log = get_logger(__name__)
_announced: set[tuple[str, ...]] = set()  # what this process has already said about a dataset folder


def check_video_ids(ids: list[str], source: Path, root: Path) -> list[str]:
    """Refuse an empty list and an id that would lead outside the dataset root (absolute, or with a `..`
    part): a split list is data, it must not choose what we read."""
    if not ids:
        raise DataError(f"split file lists no videos: {source}")
    for video_id in ids:
        relative = PurePosixPath(video_id)
        if relative.is_absolute() or ".." in relative.parts:
            raise DataError(
                f"split file {source} lists {video_id!r}, which leads outside the dataset root {root}; "
                "a split file lists video folder names"
            )
    return ids


def class_names_in(root: Path, num_classes: int = NUM_CLASSES) -> list[str]:
    """Name of each train id; read from VSPW's `label_num_dic_final.json` (name -> raw id) in `root` when
    present, else `class_<id>`."""
    names = [f"class_{i}" for i in range(num_classes)]
    for fname in CLASS_NAME_FILES:
        path = Path(root) / fname
        if path.is_file():
            for name, raw in json.loads(path.read_text()).items():
                if 1 <= int(raw) <= num_classes:
                    names[int(raw) - 1] = name
            break
    return names


def read_split(root: Path, split: str) -> list[str]:
    """Video ids listed in `<root>/<split>.txt`, one per line (`check_video_ids`)."""
    path = Path(root) / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"split file not found: {path} (data.root={root}, data.split={split})")
    return read_video_list(path, root)


def read_video_list(path: Path, root: Path) -> list[str]:
    """The video ids of a split list: a `.json` in the form of VIPSeg's `panoptic_gt_VIPSeg_<split>.json`
    (`{"videos": [{"video_id": ...}, ...], ...}`), else a text file with one id per line."""
    if path.suffix.lower() != ".json":
        ids = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        return check_video_ids(ids, path, root)
    try:
        videos = json.loads(path.read_text()).get("videos")
        ids = [str(v["video_id"]) for v in videos]
    except ValueError as e:
        raise DataError(f"split file {path} is not valid JSON: {e}") from None
    except (AttributeError, KeyError, TypeError):
        raise DataError(
            f'split file {path} has no "videos" list whose entries carry a "video_id" (the form of '
            "VIPSeg's panoptic_gt_VIPSeg_<split>.json)"
        ) from None
    return check_video_ids(ids, path, root)


class VideoDataset:
    """A dataset split: `videos` in split-list order, plus class names for the 124 train ids.

    `split_file` (data.split_file) replaces the layout's own list of the split's videos."""

    name = "base"
    layout = "base"  # which on-disk layout the reader found (recorded with the results)
    num_classes = NUM_CLASSES

    def __init__(
        self, root: str | Path, split: str, require_masks: bool = True, split_file: str | Path | None = None
    ):
        self.root = Path(root).expanduser()
        self.split = split
        if not self.root.is_dir():
            raise DataError(f"dataset root not found: {self.root} (set data.root)")
        self.require_masks = require_masks
        self._find_layout()
        self.split_source = self._given_split_file(split_file) if split_file else self._split_source()
        self._announce()
        self.videos: list[Video] = [self._video(v) for v in read_video_list(self.split_source, self.root)]

    def _find_layout(self) -> None:
        """Set `layout` from what `root` holds; raise a DataError naming what was looked for."""

    def _announce(self) -> None:
        """Say which layout was found (readers whose root may hold several)."""

    def size_hint(self, pred_size: tuple[int, int], frame_size: tuple[int, int]) -> str:
        """What to do when predictions of `pred_size` meet frames of `frame_size` (both HxW)."""
        return f"write the predictions at the size of the frames under data.root={self.root}"

    def _split_source(self) -> Path:
        """The file that lists the split's videos: `<root>/<split>.txt`."""
        path = self.root / f"{self.split}.txt"
        if not path.is_file():
            raise DataError(f"split file not found: {path} (data.root={self.root}, data.split={self.split})")
        return path

    def _given_split_file(self, split_file: str | Path) -> Path:
        path = Path(split_file).expanduser()
        if not path.is_file():
            raise DataError(f"data.split_file not found: {path} (the video list of data.split={self.split})")
        return path

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
        """Name of each train id (`class_names_in`)."""
        return class_names_in(self.root, self.num_classes)


class VSPW(VideoDataset):
    """VSPW_480p: `data/<video>/origin/<frame>.jpg` and `data/<video>/mask/<frame>.png`."""

    name = "vspw"
    layout = "VSPW_480p"

    def _video(self, video_id: str) -> Video:
        base = self.root / "data" / video_id
        if not base.is_dir():
            raise DataError(
                f"video {video_id!r} is listed in {self.split_source} but its folder is missing: {base}"
            )
        mask_dir = base / "mask"
        if not self.require_masks and not mask_dir.is_dir():
            mask_dir = None
        return pair_video(video_id, base / "origin", mask_dir, ".jpg", vspw_to_train)


class VIPSeg(VideoDataset):
    """VIPSeg in either layout it ships in: the original `imgs/<video>/*.jpg`, `panomasks/<video>/*.png` and
    `<split>.txt`, or `VIPSeg_720P/` as VIPSeg's change2_720p.py writes it, `images/` and `panomasks/`, its
    split lists `panoptic_gt_VIPSeg_<split>.json` (splitjson.py) when no `<split>.txt` is there. Masks hold
    panoptic ids (`vipseg_to_train`)."""

    name = "vipseg"

    def _find_layout(self) -> None:
        found = {k: self.root / d for k, d in VIPSEG_FRAME_DIRS.items() if (self.root / d).is_dir()}
        if len(found) == 2 and found[VIPSEG_ORIGINAL].resolve() != found[VIPSEG_720P].resolve():
            raise DataError(
                f"data.root={self.root} holds both imgs/ (the original VIPSeg frames) and images/ (VIPSeg_720P's):"
                " point data.root at a folder with one of them"
            )
        if not found:
            raise DataError(
                f"data.root={self.root} is not a VIPSeg folder: looked for imgs/ (the original VIPSeg: imgs/, "
                "panomasks/, <split>.txt) and images/ (VIPSeg_720P as change2_720p.py writes it: images/, "
                "panomasks/, panoptic_gt_VIPSeg_<split>.json); found neither"
            )
        self.layout = VIPSEG_720P if VIPSEG_720P in found else VIPSEG_ORIGINAL
        if self.require_masks and not (self.root / "panomasks").is_dir():
            remedy = (
                "panomasksRGB/ is not read; VIPSeg's change2_720p.py writes panomasks/ beside images/"
                if self.layout == VIPSEG_720P
                else "the ground truth of the split is missing"
            )
            raise DataError(
                f"{self.layout} folder {self.root} has no panomasks/ (the panoptic id PNGs: category, or "
                f"category x 100 + instance for things): {remedy}"
            )

    def _split_source(self) -> Path:
        text = self.root / f"{self.split}.txt"
        if self.layout == VIPSEG_ORIGINAL or text.is_file():
            return super()._split_source()
        coco = self.root / f"panoptic_gt_VIPSeg_{self.split}.json"
        if coco.is_file():
            return coco
        parent = self.root.parent / f"{self.split}.txt"
        hint = str(parent) if parent.is_file() else f"<VIPSeg>/{self.split}.txt"
        raise DataError(
            f"no video list for split {self.split!r} in the VIPSeg_720P folder {self.root}: looked for {text} and "
            f"{coco} (VIPSeg's splitjson.py writes it); set data.split_file={hint}"
        )

    def _video(self, video_id: str) -> Video:
        mask_dir = self.root / "panomasks" / video_id
        if not self.require_masks and not mask_dir.is_dir():
            mask_dir = None
        frame_dir = self.root / VIPSEG_FRAME_DIRS[self.layout] / video_id
        return pair_video(video_id, frame_dir, mask_dir, ".jpg", vipseg_to_train)

    def _announce(self) -> None:
        """Say once per process which layout and which split list this folder is read with."""
        key = (str(self.root.resolve()), self.layout, str(self.split_source))
        if key not in _announced:
            _announced.add(key)
            frames = VIPSEG_FRAME_DIRS[self.layout]
            log.info(
                "data.root=%s: %s layout (%s/, panomasks/); videos of %s from %s",
                self.root,
                self.layout,
                frames,
                self.split,
                self.split_source,
            )

    def size_hint(self, pred_size: tuple[int, int], frame_size: tuple[int, int]) -> str:
        """The other VIPSeg folder: predictions made on VIPSeg_720P's frames (DVIS, DVIS++ and CAVIS predict
        at 720p) go with VIPSeg_720P, those made on the original frames with the original folder."""
        if self.layout == VIPSEG_ORIGINAL:
            other = self.root / VIPSEG_720P  # where change2_720p.py writes it
            folder = other if (other / "images").is_dir() else f"<VIPSeg>/{VIPSEG_720P}"
            return (
                "predictions made on VIPSeg_720P's frames (DVIS, DVIS++ and CAVIS predict at 720p) go with them: "
                f"pass data.root={folder}"
            )
        folder = (
            self.root.parent if (self.root.parent / "imgs").is_dir() else "<VIPSeg> (the folder with imgs/)"
        )
        return (
            f"these frames are VIPSeg_720P's; predictions made on the original VIPSeg frames go with them: "
            f"pass data.root={folder}"
        )

    @property
    def class_names(self) -> list[str]:
        """Names from VIPSeg_720P's `panoVIPSeg_categories.json` (0-based ids = train ids) when present."""
        path = self.root / VIPSEG_CATEGORIES
        if not path.is_file():
            return super().class_names
        names = [f"class_{i}" for i in range(self.num_classes)]
        for category in json.loads(path.read_text()):
            if 0 <= int(category["id"]) < self.num_classes:
                names[int(category["id"])] = str(category["name"])
        return names
