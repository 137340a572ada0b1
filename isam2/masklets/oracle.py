"""Oracle masklets from ground truth: connected components of each class, and a track rule for them.

Components use 8-connectivity (diagonal neighbours join), computed per class with scipy.ndimage.label
(OpenCV's connectedComponents when scipy is missing; both give the same components). Train id 255
(ignore) never forms masklets. Components smaller than `min_area` pixels are dropped. Order: by class
id, then by the component's first pixel in raster order.

Tracks (`link_tracks`): a component inherits the track of the previous frame's component of the SAME
class with which it has the highest IoU, if that IoU is at least `iou_thresh` (default 0.5, so a match
is unique: two components cannot both overlap one previous component by more than half); otherwise it
starts a new track. Matching is greedy by IoU, one previous component per current one.
"""

from __future__ import annotations

import numpy as np
import torch

from isam2.constants import VOID as IGNORE  # GT train id that is never a target ("others"/void)

try:  # scipy is a dependency of albumentations, so normally present
    from scipy import ndimage as _ndimage
except ImportError:  # pragma: no cover - exercised only without scipy
    _ndimage = None

_EIGHT = np.ones((3, 3), dtype=bool)


def _label(binary: np.ndarray) -> tuple[np.ndarray, int]:
    if _ndimage is not None:
        labels, n = _ndimage.label(binary, structure=_EIGHT)
        return labels, int(n)
    import cv2

    n, labels = cv2.connectedComponents(binary.astype(np.uint8), connectivity=8)
    return labels, int(n) - 1


def gt_components(mask: np.ndarray, min_area: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of each class of `mask` [H, W] uint8 train ids -> (masks [n,H,W] bool, classes [n] int64)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"a ground-truth mask must be [H, W], got {mask.shape}")
    H, W = mask.shape
    out_masks: list[np.ndarray] = []
    out_classes: list[int] = []
    for c in np.unique(mask):
        if c == IGNORE:
            continue
        labels, n = _label(mask == c)
        if n == 0:
            continue
        flat = labels.ravel()
        areas = np.bincount(flat, minlength=n + 1)[1:]
        ids, first = np.unique(flat, return_index=True)  # first pixel of each label (raster order)
        first_of = np.empty(n + 1, np.int64)
        first_of[ids] = first
        keep = np.nonzero(areas >= max(1, min_area))[0] + 1
        keep = keep[np.argsort(first_of[keep], kind="stable")]
        if keep.size == 0:
            continue
        out_masks.append(labels[None] == keep[:, None, None])
        out_classes.extend([int(c)] * keep.size)
    if not out_masks:
        return np.zeros((0, H, W), dtype=bool), np.zeros(0, dtype=np.int64)
    return np.concatenate(out_masks, axis=0), np.asarray(out_classes, dtype=np.int64)


def gt_masklets(mask: np.ndarray, min_area: int = 0) -> np.ndarray:
    """Oracle masklets of one frame: [H, W] uint8 train ids -> masks [n, H, W] bool (see the module docstring)."""
    return gt_components(mask, min_area)[0]


def pairwise_iou(a: np.ndarray | torch.Tensor, b: np.ndarray | torch.Tensor) -> torch.Tensor:
    """IoU between masks a [n,H,W] and b [m,H,W] -> [n, m] float32 (one matmul)."""
    a = torch.as_tensor(a).flatten(1).to(torch.float32)
    b = torch.as_tensor(b).flatten(1).to(torch.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.zeros_like(inter))


def link_tracks(
    prev_masks: np.ndarray,
    prev_classes: np.ndarray,
    prev_tracks: np.ndarray,
    masks: np.ndarray,
    classes: np.ndarray,
    next_track: int,
    iou_thresh: float = 0.5,
) -> tuple[np.ndarray, int]:
    """Track ids for this frame's components (see the module docstring) -> (tracks [n] int64, next free id)."""
    n = len(masks)
    tracks = np.full(n, -1, dtype=np.int64)
    if n and len(prev_masks):
        iou = pairwise_iou(masks, prev_masks).numpy()
        iou[np.asarray(classes)[:, None] != np.asarray(prev_classes)[None, :]] = 0.0
        cur, prv = np.nonzero(iou >= iou_thresh)
        order = np.argsort(-iou[cur, prv], kind="stable")
        used_prev: set[int] = set()
        for k in order:
            i, j = int(cur[k]), int(prv[k])
            if tracks[i] < 0 and j not in used_prev:
                tracks[i] = prev_tracks[j]
                used_prev.add(j)
    for i in range(n):
        if tracks[i] < 0:
            tracks[i] = next_track
            next_track += 1
    return tracks, next_track
