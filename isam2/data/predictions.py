"""Prediction PNGs `<dir>/<video>/<frame>.png` (uint8 train ids, 255 = none): atomic write, checked read, validation."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from isam2.data.video import DataError
from isam2.files import atomic_file

LABEL_MODES = ("L", "P", "I", "I;16")  # single-channel PNG modes whose pixel values are labels


def prediction_path(pred_dir: str | Path, video_id: str, frame_name: str) -> Path:
    return Path(pred_dir) / video_id / f"{frame_name}.png"


def write_prediction(path: str | Path, array: np.ndarray) -> None:
    """Write a [H, W] label map as an 8-bit PNG, atomically (temp file in the same folder, then rename)."""
    arr = np.asarray(array)
    if arr.ndim != 2:
        raise ValueError(f"a prediction must be [H, W], got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):
            raise ValueError(
                f"prediction values must fit uint8 (train ids, 255 = none), got {arr.min()}..{arr.max()}"
            )
        arr = arr.astype(np.uint8)
    with atomic_file(path) as f:
        Image.fromarray(arr, mode="L").save(f, format="PNG")


def _open_checked(path: Path, size: tuple[int, int] | None) -> Image.Image:
    try:
        im = Image.open(path)
    except FileNotFoundError:
        raise DataError(f"missing prediction file: {path}") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"unreadable prediction PNG {path}: {e}") from None
    if im.mode not in LABEL_MODES:
        im.close()
        raise DataError(f"{path} is not a single-channel label PNG (mode {im.mode}); write uint8 train ids")
    if size is not None and (im.height, im.width) != tuple(size):
        im.close()
        raise DataError(f"{path} is {im.height}x{im.width} but its ground truth is {size[0]}x{size[1]} (HxW)")
    return im


def read_prediction(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a prediction PNG fully as [H, W] integer labels (uint8 for 8-bit PNGs), checking (H, W) == size."""
    path = Path(path)
    im = _open_checked(path, size)
    try:
        with im:
            im.load()
            return np.asarray(im)
    except (OSError, SyntaxError, ValueError) as e:
        raise DataError(f"unreadable or truncated prediction PNG {path}: {e}") from None


def check_predictions(
    pred_dir: str | Path,
    videos,
    max_named: int = 5,
    size_hint: Callable[[tuple[int, int], tuple[int, int]], str] | None = None,
) -> None:
    """Before scoring: pred_dir exists and holds PNGs, every GT frame has a prediction, headers give GT sizes.

    videos: the split's `Video`s. Raises one DataError naming the folder, the first missing files and
    their count, or the first file with an unreadable header, or the one file of another size than its
    frames; several such files: their count, the first with both sizes, and `size_hint(pred HxW, frame HxW)`
    (which data.root goes with predictions of that size: the dataset's `size_hint`).
    """
    root = Path(pred_dir)
    if not root.is_dir():
        raise DataError(f"pred_dir not found: {root}")
    if next(root.rglob("*.png"), None) is None:
        raise DataError(f"pred_dir {root} is empty: no <video>/<frame>.png prediction files in it")
    missing, total = [], 0
    for v in videos:
        folder = root / v.id
        present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
        for name in v.frame_names:
            total += 1
            if f"{name}.png" not in present:
                missing.append(f"{v.id}/{name}.png")
    if missing:
        shown = ", ".join(missing[:max_named]) + (", ..." if len(missing) > max_named else "")
        raise DataError(
            f"{len(missing)} of {total} ground-truth frames have no prediction in {root}: {shown}"
        )
    wrong: list[tuple[Path, tuple[int, int], tuple[int, int]]] = []
    for v in videos:
        for name in v.frame_names:
            path = prediction_path(root, v.id, name)
            with _open_checked(path, None) as im:
                if (im.height, im.width) != tuple(v.size):
                    wrong.append((path, (im.height, im.width), tuple(v.size)))
    if wrong:
        raise DataError(_size_message(root, wrong, total, size_hint))


def _size_message(root: Path, wrong: list, total: int, size_hint: Callable | None) -> str:
    """One file of another size is a broken file; several are a folder made at another resolution."""
    path, (ph, pw), (fh, fw) = wrong[0]
    named = f"{path} is {ph}x{pw} but its ground truth is {fh}x{fw} (HxW)"
    if len(wrong) == 1:
        return named
    hint = size_hint((ph, pw), (fh, fw)) if size_hint is not None else "write them at the size of the frames"
    return f"{len(wrong)} of {total} predictions in {root} are at another resolution than their frames: {named}; {hint}"
