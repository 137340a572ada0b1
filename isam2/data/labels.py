"""Raw dataset label values -> train ids (docs/data.md): 124 classes, 255 = ignore."""

from __future__ import annotations

import numpy as np

from isam2.constants import VOID as IGNORE

NUM_CLASSES = 124


class LabelError(ValueError):
    """A raw mask holds a value that is neither a class nor void."""


def _bad(values: np.ndarray, ok: np.ndarray, what: str) -> None:
    if not ok.all():
        bad = np.unique(values[~ok])
        raise LabelError(f"{what} values {bad[:10].tolist()} are neither a class nor void")


def vspw_to_train(raw: np.ndarray) -> np.ndarray:
    """VSPW raw: 0 = others, 1..124 = classes, 255 = void. Train id = raw - 1; 0 and 255 -> 255."""
    raw = np.asarray(raw)
    _bad(raw, (raw <= NUM_CLASSES) | (raw == IGNORE), "VSPW mask")
    out = raw.astype(np.int16) - 1
    out[(raw == 0) | (raw == IGNORE)] = IGNORE
    return out.astype(np.uint8)


def train_to_vspw(train: np.ndarray) -> np.ndarray:
    """The VSPW benchmark's submission values of train ids: class c -> c + 1, none (255) -> 0 ("others"),
    the inverse of `vspw_to_train` on every class (docs/data.md, "Submitting to VSPW")."""
    train = np.asarray(train)
    _bad(train, (train < NUM_CLASSES) | (train == IGNORE), "train id")
    return np.where(train == IGNORE, 0, train.astype(np.int16) + 1).astype(np.uint8)


def vipseg_to_train(raw: np.ndarray) -> np.ndarray:
    """VIPSeg panoptic: 0 = void, stuff = category, thing = category*100 + instance.

    Semantic id = v if v < 125 else v // 100; train id = semantic - 1, void -> 255.
    """
    raw = np.asarray(raw).astype(np.int64)
    sem = np.where(raw < NUM_CLASSES + 1, raw, raw // 100)
    _bad(raw, (raw >= 0) & (sem <= NUM_CLASSES), "VIPSeg mask")
    out = sem - 1
    out[sem == 0] = IGNORE
    return out.astype(np.uint8)


LABEL_CONVERSIONS = {"vspw": vspw_to_train, "vipseg": vipseg_to_train}
