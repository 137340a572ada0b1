"""Eq. 3 of the paper: a masklet's vector is the mean of the frozen encoder's features over its pixels.

Geometry. SAM2 resizes every frame to `image_size` x `image_size` without keeping the aspect ratio (and
without padding), so its stride-16 feature grid [h, w] covers the whole ORIGINAL frame [H, W]: feature
cell (i, j) is the rectangle rows [i*H/h, (i+1)*H/h) x columns [j*W/w, (j+1)*W/w) of the frame, whatever
the aspect. A cell's rectangle is generally not a whole number of pixels wide.

What `masked_mean` computes, exactly: spread the features piecewise-constantly over the frame (every
point of cell (i, j) carries feature f_ij) and average them over the mask's pixels, each pixel being the
unit square it covers. That is

    v = sum_ij c_ij f_ij / sum_ij c_ij,     c_ij = area of (mask ∩ cell ij) / area of cell ij

where c_ij is the fraction of cell ij that the mask covers (an exact area downsampling of the float mask
to the feature grid: partial cells, and pixels that straddle two cells, weigh by covered area). It is
computed separably, coverage = Ry @ mask @ Rx^T, with Ry [h, H] and Rx [w, W] the interval-overlap
matrices, and then one matmul weights [n, h*w] @ features [h*w, d]. When H and W are multiples of h and
w it equals adaptive average pooling of the mask followed by a weighted mean. An empty mask gives a zero
vector (documented choice: the store drops empty masklets anyway, and zeros never poison a batch as NaN
would).

`pool_levels` concatenates `masked_mean` over several feature maps (e.g. SAM2's stride-16 vision
features plus higher-resolution FPN levels), each at its own grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# Masks are expanded to float for the coverage product; above this many elements they go in chunks.
_CHUNK_ELEMENTS = 1 << 27


def overlap_matrix(n_cells: int, n_pixels: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """[n_cells, n_pixels]: the fraction of cell i (an interval of length n_pixels/n_cells) that pixel p covers.

    Rows sum to 1; column p sums to 1 * n_cells / n_pixels (each pixel is split among the cells it overlaps).
    """
    scale = n_pixels / n_cells  # cell length in pixels
    i = torch.arange(n_cells, device=device, dtype=torch.float64)[:, None]
    p = torch.arange(n_pixels, device=device, dtype=torch.float64)[None, :]
    lo = torch.maximum(i * scale, p)
    hi = torch.minimum((i + 1) * scale, p + 1)
    return ((hi - lo).clamp_min(0) / scale).to(dtype)


def mask_coverage(masks: torch.Tensor, grid_hw: tuple[int, int]) -> torch.Tensor:
    """Area-downsample masks [n, H, W] (bool or float in [0, 1]) to [n, h, w] covered fractions."""
    n, H, W = masks.shape
    h, w = grid_hw
    device = masks.device
    ry = overlap_matrix(h, H, device)  # [h, H]
    rx = overlap_matrix(w, W, device)  # [w, W]
    out = torch.empty(n, h, w, device=device, dtype=torch.float32)
    step = max(1, _CHUNK_ELEMENTS // max(1, H * W))
    for s in range(0, n, step):  # chunks of many masklets, not one masklet at a time
        m = masks[s : s + step].to(torch.float32)
        out[s : s + step] = torch.matmul(torch.matmul(ry, m), rx.T)  # [k, h, W] -> [k, h, w]
    return out


def mask_areas(masks: torch.Tensor) -> torch.Tensor:
    """[n] int64 pixel counts of boolean masks [n, H, W] (a byte view summed in int32 rows: a bool `sum`
    would first copy the masks to int64, ten times slower on a CPU)."""
    if masks.dtype != torch.bool:
        raise ValueError(f"masks must be bool, got {masks.dtype}")
    rows = masks.view(torch.uint8).sum(-1, dtype=torch.int32)
    return rows.sum(-1, dtype=torch.int64)


def masked_mean(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Eq. 3: features [d, h, w] and masks [n, H, W] -> [n, d] float32 on the features' device.

    The features' grid maps onto the whole frame (see the module docstring); masks are area-downsampled
    to it. Empty masks give zero vectors. No loop over masklets: one coverage product, one matmul.
    """
    if features.dim() != 3:
        raise ValueError(f"features must be [d, h, w], got {tuple(features.shape)}")
    if masks.dim() != 3:
        raise ValueError(f"masks must be [n, H, W], got {tuple(masks.shape)}")
    d, h, w = features.shape
    n = masks.shape[0]
    feats = features.to(torch.float32)
    if n == 0:
        return feats.new_zeros(0, d)
    cov = mask_coverage(masks.to(feats.device), (h, w)).reshape(n, h * w)
    total = cov.sum(dim=1, keepdim=True)
    weights = cov / total.clamp_min(torch.finfo(torch.float32).tiny)
    weights = torch.where(total > 0, weights, torch.zeros_like(weights))
    return weights @ feats.reshape(d, h * w).T


def pool_levels(feature_maps: Sequence[torch.Tensor], masks: torch.Tensor) -> torch.Tensor:
    """Concatenate `masked_mean` over several feature maps [d_l, h_l, w_l] -> [n, sum d_l]."""
    if len(feature_maps) == 1:
        return masked_mean(feature_maps[0], masks)
    return torch.cat([masked_mean(f, masks) for f in feature_maps], dim=1)
