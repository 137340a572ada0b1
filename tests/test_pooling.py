"""Eq. 3 pooling against a brute-force loop over pixels and cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isam2.masklets import pooling
from isam2.masklets.pooling import mask_coverage, masked_mean, overlap_matrix, pool_levels


def brute_force(features: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Each pixel is a unit square; feature cell (i, j) covers [i*H/h, (i+1)*H/h) x [j*W/w, (j+1)*W/w).
    The vector is the feature average over the mask's area, cell by cell, by explicit loops."""
    d, h, w = features.shape
    n, H, W = masks.shape
    sy, sx = H / h, W / w
    out = np.zeros((n, d))
    for k in range(n):
        acc = np.zeros(d)
        total = 0.0
        for y in range(H):
            for x in range(W):
                if not masks[k, y, x]:
                    continue
                for i in range(h):
                    oy = min((i + 1) * sy, y + 1) - max(i * sy, y)
                    if oy <= 0:
                        continue
                    for j in range(w):
                        ox = min((j + 1) * sx, x + 1) - max(j * sx, x)
                        if ox <= 0:
                            continue
                        acc += oy * ox * features[:, i, j]
                        total += oy * ox
        out[k] = acc / total if total > 0 else 0.0
    return out


def random_case(seed: int, d=6, h=4, w=5, H=23, W=37, n=5):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(d, h, w)).astype(np.float32)
    masks = rng.random((n, H, W)) < rng.uniform(0.05, 0.6, size=(n, 1, 1))
    masks[0] = False  # empty
    masks[1] = True  # full frame
    masks[2] = False
    masks[2, 5:9, 3:20] = True  # a box straddling cell borders
    return feats, masks


@pytest.mark.parametrize("seed, shape", [(0, (23, 37)), (1, (16, 20)), (2, (7, 3)), (3, (40, 41))])
def test_masked_mean_matches_brute_force(seed, shape):
    feats, masks = random_case(seed, H=shape[0], W=shape[1])
    got = masked_mean(torch.from_numpy(feats), torch.from_numpy(masks)).numpy()
    want = brute_force(feats, masks)
    assert got.shape == (masks.shape[0], feats.shape[0]) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_empty_mask_is_zero_and_full_mask_is_grid_mean():
    feats, masks = random_case(4)
    got = masked_mean(torch.from_numpy(feats), torch.from_numpy(masks))
    assert torch.all(got[0] == 0)
    np.testing.assert_allclose(
        got[1].numpy(), feats.reshape(feats.shape[0], -1).mean(1), rtol=1e-5, atol=1e-6
    )


def test_divisible_sizes_equal_nearest_upsampling_mean():
    rng = np.random.default_rng(5)
    feats = torch.from_numpy(rng.normal(size=(8, 4, 6)).astype(np.float32))
    masks = torch.from_numpy(rng.random((7, 32, 48)) < 0.3)
    up = torch.nn.functional.interpolate(feats[None], size=(32, 48), mode="nearest")[0]  # [d, H, W]
    want = torch.stack([up[:, m].mean(1) for m in masks])
    torch.testing.assert_close(masked_mean(feats, masks), want, rtol=1e-5, atol=1e-6)


def test_coverage_is_area_downsampling():
    masks = torch.zeros(1, 10, 10, dtype=torch.bool)
    masks[0, :5, :] = True  # top half
    cov = mask_coverage(masks, (3, 2))
    # rows of 10/3 pixels: the first cell fully covered, the second 5 - 10/3 = 5/3 of 10/3 -> 0.5, the third 0
    torch.testing.assert_close(cov[0, :, 0], torch.tensor([1.0, 0.5, 0.0]))
    r = overlap_matrix(3, 10)
    torch.testing.assert_close(r.sum(1), torch.ones(3))


def test_chunking_gives_the_same_result(monkeypatch):
    feats, masks = random_case(6, n=9)
    f, m = torch.from_numpy(feats), torch.from_numpy(masks)
    whole = masked_mean(f, m)
    monkeypatch.setattr(pooling, "_CHUNK_ELEMENTS", m.shape[1] * m.shape[2] * 2)
    torch.testing.assert_close(masked_mean(f, m), whole)


def test_no_masklets_and_levels():
    f16 = torch.randn(4, 2, 3)
    f8 = torch.randn(5, 4, 6)
    assert masked_mean(f16, torch.zeros(0, 9, 9, dtype=torch.bool)).shape == (0, 4)
    masks = torch.rand(3, 12, 18) < 0.5
    both = pool_levels([f16, f8], masks)
    assert both.shape == (3, 9)
    torch.testing.assert_close(both[:, :4], masked_mean(f16, masks))
    torch.testing.assert_close(both[:, 4:], masked_mean(f8, masks))


def test_bfloat16_features_pool_in_float32():
    feats, masks = random_case(7)
    f = torch.from_numpy(feats).to(torch.bfloat16)
    got = masked_mean(f, torch.from_numpy(masks))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), brute_force(f.float().numpy(), masks), rtol=1e-3, atol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_on_gpu_matches_cpu():
    feats, masks = random_case(8, H=61, W=97, n=40)
    cpu = masked_mean(torch.from_numpy(feats), torch.from_numpy(masks))
    gpu = masked_mean(torch.from_numpy(feats).cuda(), torch.from_numpy(masks).cuda())
    assert gpu.is_cuda
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=2e-3, atol=2e-3)  # TF32 may be on


def test_mask_areas_count_pixels_like_numpy():
    from isam2.masklets.pooling import mask_areas

    rng = np.random.default_rng(0)
    masks = rng.random((7, 33, 301)) < rng.random((7, 1, 1))  # from nearly empty to nearly full
    masks[0] = False
    masks[1] = True
    got = mask_areas(torch.from_numpy(masks))
    assert got.dtype == torch.int64
    np.testing.assert_array_equal(got.numpy(), masks.reshape(7, -1).sum(1))
    # a strided view
    np.testing.assert_array_equal(
        mask_areas(torch.from_numpy(masks[:, ::2, 1::3])).numpy(), masks[:, ::2, 1::3].reshape(7, -1).sum(1)
    )
