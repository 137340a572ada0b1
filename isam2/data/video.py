"""`Video`: one clip's frame and mask paths in temporal order, and checked loading of RGB frames and train-id masks."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from isam2.data.labels import LabelError
from isam2.errors import ISAM2Error


class DataError(ISAM2Error):
    """A dataset file or folder is missing, unreadable or inconsistent."""


def natural_key(path: Path) -> tuple:
    """Sort '2.jpg' before '10.jpg' while keeping zero-padded names in order."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.stem))


def read_image(path: Path, mode: str | None = None) -> np.ndarray:
    """Decode an image fully (a truncated file raises), optionally converting its PIL mode."""
    try:
        with Image.open(path) as im:
            im.load()
            if mode is not None and im.mode != mode:
                im = im.convert(mode)
            return np.asarray(im)
    except FileNotFoundError:
        raise DataError(f"missing image file: {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"unreadable or truncated image {path}: {e}") from None


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) from the image header, without decoding the pixels."""
    try:
        with Image.open(path) as im:
            return im.height, im.width
    except FileNotFoundError:
        raise DataError(f"missing image file: {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"unreadable image {path}: {e}") from None


@dataclass(frozen=True)
class Video:
    """A clip: frames (and masks, when the split has ground truth) paired by file stem, in temporal order."""

    id: str
    frames: tuple[Path, ...] = field(repr=False)
    masks: tuple[Path, ...] | None = field(repr=False)
    size: tuple[int, int]  # (H, W) of every frame and mask
    to_train_ids: Callable[[np.ndarray], np.ndarray] = field(repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def frame_names(self) -> list[str]:
        return [p.stem for p in self.frames]

    def _check_size(self, arr: np.ndarray, path: Path) -> None:
        if arr.shape[:2] != self.size:
            raise DataError(
                f"{path} is {arr.shape[0]}x{arr.shape[1]} (HxW) but {self.frames[0]}, the first frame of video "
                f"{self.id!r}, is {self.size[0]}x{self.size[1]}; every frame and mask of a video must have one "
                "size: one of these two files is wrong"
            )

    def load_frame(self, i: int) -> np.ndarray:
        """Frame i as RGB uint8 [H, W, 3]."""
        arr = read_image(self.frames[i], "RGB")
        self._check_size(arr, self.frames[i])
        return arr

    def load_mask(self, i: int) -> np.ndarray:
        """Mask i as uint8 train ids [H, W] (255 = ignore)."""
        if self.masks is None:
            raise DataError(f"video {self.id!r} has no ground-truth masks")
        path = self.masks[i]
        raw = read_image(path)
        if raw.ndim != 2:
            raise DataError(f"{path} is not a single-channel label PNG (shape {raw.shape})")
        self._check_size(raw, path)
        try:
            return self.to_train_ids(raw)
        except LabelError as e:
            raise DataError(f"{path}: {e}") from None

    def load_frames(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Frames as [T, H, W, 3] uint8."""
        idx = range(len(self)) if indices is None else indices
        return np.stack([self.load_frame(i) for i in idx])

    def load_masks(self, indices: Sequence[int] | None = None) -> np.ndarray:
        """Masks as [T, H, W] uint8 train ids."""
        idx = range(len(self)) if indices is None else indices
        return np.stack([self.load_mask(i) for i in idx])


def pair_video(
    video_id: str,
    frame_dir: Path,
    mask_dir: Path | None,
    frame_ext: str,
    to_train_ids: Callable[[np.ndarray], np.ndarray],
) -> Video:
    """Build a Video from a frame folder and an optional mask folder, checking that they pair up by stem."""
    if not frame_dir.is_dir():
        raise DataError(
            f"video {video_id!r} is listed in the split file but its folder is missing: {frame_dir}"
        )
    frames = sorted((p for p in frame_dir.iterdir() if p.suffix.lower() == frame_ext), key=natural_key)
    if not frames:
        raise DataError(f"video {video_id!r} has no {frame_ext} frames in {frame_dir}")
    masks = None
    if mask_dir is not None:
        if not mask_dir.is_dir():
            raise DataError(f"video {video_id!r} has no mask folder: {mask_dir}")
        masks = sorted((p for p in mask_dir.iterdir() if p.suffix.lower() == ".png"), key=natural_key)
        f_stems, m_stems = [p.stem for p in frames], [p.stem for p in masks]
        if f_stems != m_stems:
            only_f = sorted(set(f_stems) - set(m_stems))[:5]
            only_m = sorted(set(m_stems) - set(f_stems))[:5]
            raise DataError(
                f"frames and masks of video {video_id!r} do not pair up by name: "
                f"frames without mask {only_f} in {frame_dir}, masks without frame {only_m} in {mask_dir}"
            )
        masks = tuple(masks)
    return Video(video_id, tuple(frames), masks, image_size(frames[0]), to_train_ids)
