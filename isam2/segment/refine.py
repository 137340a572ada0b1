"""The SAM2 refiner (paper Eq. 1-2): every masklet takes the majority class of a base prediction inside it.

`vote="frame"` is Eq. 1-2 as printed: each masklet of each frame votes alone. `vote="track"` (our extension)
pools the vote of one masklet track over all its frames within a keyframe window, so a tracked object keeps
one class for the whole window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from isam2.constants import VOID as IGNORE

_BINS = 256  # every uint8 value; 255 is masked out before counting, so it never votes
VOTES = ("frame", "track")


def masklet_majority(base: torch.Tensor, id_maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Majority base class per masklet id present in `id_maps`.

    Returns (ids [K] int64, majority [K] uint8, 255 where the masklet got no vote). Ties go to the smaller class.
    """
    ids, inverse = torch.unique(id_maps, return_inverse=True)
    voting = (id_maps >= 0) & (base != IGNORE)
    hist = torch.bincount(inverse[voting] * _BINS + base[voting].long(), minlength=len(ids) * _BINS)
    hist = hist.view(len(ids), _BINS)
    majority = hist.argmax(dim=1).to(torch.uint8)  # argmax returns the first maximum: the smaller class
    majority[hist.sum(dim=1) == 0] = IGNORE
    return ids, majority


def track_groups(id_maps: torch.Tensor, row_track: torch.Tensor, window: int) -> torch.Tensor:
    """Id maps [T,H,W] whose ids name (track, keyframe window) groups instead of rows; -1 stays -1.

    row_track: [R] int64 track id of every row that `id_maps` names (ids index it directly). Frame t belongs
    to window t // window: a track is propagated from one keyframe, so a group never crosses a keyframe.
    """
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    covered = id_maps >= 0
    if not covered.any():
        return id_maps.clone()
    tracks = row_track.long()[id_maps.clamp(min=0)]
    if (tracks[covered] < 0).any():
        raise ValueError("track ids must be >= 0")
    windows = (torch.arange(id_maps.shape[0], device=id_maps.device) // window).view(-1, 1, 1)
    key = tracks * (int(windows.max()) + 1) + windows  # one integer per (track, window)
    _, group = torch.unique(key[covered], return_inverse=True)
    out = torch.full_like(id_maps, -1)
    out[covered] = group
    return out


def refine(
    base: torch.Tensor,
    id_maps: torch.Tensor,
    vote: str = "frame",
    row_track: torch.Tensor | None = None,
    window: int = 1,
) -> torch.Tensor:
    """Refined maps [T,H,W] uint8: pixels of a voted masklet take its majority class; all others keep `base`.

    base: [T,H,W] uint8 (255 = no prediction, does not vote). id_maps: [T,H,W] int64 store rows, -1 = none;
    each row is one frame's masklet, so a masklet's region is `id_maps == row` (overlaps already resolved).
    vote="frame": Eq. 1-2 per row. vote="track": rows of one track within one window (`track_groups`, needs
    `row_track` and `window`) share one majority over all their pixels in all their frames.
    """
    if base.dtype != torch.uint8:
        raise ValueError(f"base must be uint8 train ids (255 = none), got {base.dtype}")
    if base.shape != id_maps.shape:
        raise ValueError(f"base has shape {tuple(base.shape)}, id maps {tuple(id_maps.shape)}")
    if vote not in VOTES:
        raise ValueError(f"vote must be one of {VOTES}, got {vote!r}")
    if vote == "track":
        if row_track is None:
            raise ValueError('vote="track" needs row_track (the track id of every row)')
        id_maps = track_groups(id_maps, row_track, window)
    ids, majority = masklet_majority(base, id_maps)
    pixel_class = majority[torch.searchsorted(ids, id_maps)]
    keep = (id_maps < 0) | (pixel_class == IGNORE)
    return torch.where(keep, base, pixel_class)


def refine_video(base: torch.Tensor, store: Any, video_id: str, vote: str, window: int) -> torch.Tensor:
    """`refine` of one video of a masklet store (any object with `rows`, `id_maps` and `track`, as
    isam2.store.reader.MaskletStore: its id maps and, for vote="track", its rows' track ids).

    `window` is the store's keyframe window (cfg.masklets.window)."""
    rows = store.rows(video_id)
    global_rows = torch.from_numpy(store.id_maps(video_id))
    local = torch.where(global_rows >= 0, global_rows - rows.start, -1)  # rows of this video count from 0
    row_track = torch.from_numpy(np.array(store.track[rows], dtype=np.int64)) if vote == "track" else None
    return refine(base, local, vote=vote, row_track=row_track, window=window)
