"""Painting masklet classes into semantic maps: the id-map lookup, base fill-in, and per-track voting.

The overlap rule lives in the id maps (see `isam2.store.writer`): each pixel already names the one masklet
that shows there, so painting is a single table lookup.
"""

from __future__ import annotations

import torch

from isam2.constants import VOID as IGNORE


def paint(row_class: torch.Tensor, id_maps: torch.Tensor, fill: torch.Tensor | None = None) -> torch.Tensor:
    """Semantic maps [T,H,W] uint8 from per-row classes and id maps.

    row_class: [N] class per store row (indexable by every id in `id_maps`). id_maps: [T,H,W] int64 row
    index, -1 where no masklet covers. fill: [T,H,W] uint8 base prediction for uncovered pixels
    ("base" fill-in); without it uncovered pixels are 255.
    """
    lut = torch.cat([row_class.to(torch.uint8), row_class.new_full((1,), IGNORE, dtype=torch.uint8)])
    # -1 indexes the appended 255 entry, so uncovered pixels need no separate pass
    out = lut[id_maps.where(id_maps >= 0, len(row_class))]
    if fill is not None:
        if fill.shape != id_maps.shape:
            raise ValueError(f"fill has shape {tuple(fill.shape)}, id maps {tuple(id_maps.shape)}")
        out = torch.where(id_maps >= 0, out, fill.to(out.device, torch.uint8))
    return out


def track_vote(probs: torch.Tensor, tracks: torch.Tensor, frames: torch.Tensor, window: int) -> torch.Tensor:
    """Average class probabilities over each track within each window, so a tracked object keeps one label.

    probs: [N,C]; tracks, frames: [N] (one video's rows). A track is a masklet propagated from one keyframe,
    so the vote never crosses a keyframe boundary (frame // window).
    """
    if len(probs) == 0:
        return probs
    key = torch.stack([tracks.long(), frames.long() // max(int(window), 1)], dim=1)
    _, group = torch.unique(key, dim=0, return_inverse=True)
    n = int(group.max()) + 1
    sums = probs.new_zeros(n, probs.shape[1]).index_add_(0, group, probs)
    counts = torch.bincount(group, minlength=n).to(probs.dtype)
    return (sums / counts[:, None])[group]
