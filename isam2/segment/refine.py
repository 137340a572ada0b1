"""The SAM2 refiner (paper Eq. 1-2): every masklet takes the majority class of a base prediction inside it."""

from __future__ import annotations

import torch

IGNORE = 255
_BINS = 256  # every uint8 value; 255 is masked out before counting, so it never votes


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


def refine(base: torch.Tensor, id_maps: torch.Tensor) -> torch.Tensor:
    """Refined maps [T,H,W] uint8: pixels of a voted masklet take its majority class; all others keep `base`.

    base: [T,H,W] uint8 (255 = no prediction, does not vote). id_maps: [T,H,W] int64 store rows, -1 = none;
    each row is one frame's masklet, so a masklet's region is `id_maps == row` (overlaps already resolved).
    """
    if base.dtype != torch.uint8:
        raise ValueError(f"base must be uint8 train ids (255 = none), got {base.dtype}")
    if base.shape != id_maps.shape:
        raise ValueError(f"base has shape {tuple(base.shape)}, id maps {tuple(id_maps.shape)}")
    ids, majority = masklet_majority(base, id_maps)
    pixel_class = majority[torch.searchsorted(ids, id_maps)]
    keep = (id_maps < 0) | (pixel_class == IGNORE)
    return torch.where(keep, base, pixel_class)
