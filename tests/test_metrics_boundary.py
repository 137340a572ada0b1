"""mBIoU: the band on hand-drawn 3x4 maps, brute-force per-class erosion equivalence, the per-image rule."""

import numpy as np
import pytest
import torch

from isam2.metrics import BoundaryIoU, boundary_band

GT = np.array([[0, 0, 0, 0], [0, 0, 1, 1], [0, 0, 1, 1]], np.uint8)


def band(gt, width, c=124):
    return boundary_band(torch.from_numpy(np.asarray(gt, np.uint8))[None], c, width)[0].numpy().astype(int)


def test_band_3x3_by_hand():
    assert band(GT, 3).tolist() == [[0, 1, 1, 1], [0, 1, 1, 1], [0, 1, 1, 0]]


def test_band_5x5_covers_the_small_map_and_outside_never_erodes():
    assert band(GT, 5).tolist() == [[1] * 4] * 3
    assert band(np.full((3, 4), 2), 5).sum() == 0  # one class touching the border: no band


def test_void_is_never_in_the_band_but_borders_it():
    gt = GT.copy()
    gt[0, 0] = 255
    assert band(gt, 3).tolist() == [[0, 1, 1, 1], [1, 1, 1, 1], [0, 1, 1, 0]]


def brute_force_band(gt, c, width):
    """Per class: M minus erode(M, width x width) with outside pixels counted as inside M; union."""
    r = width // 2
    h, w = gt.shape
    out = np.zeros((h, w), bool)
    for k in range(c):
        m = gt == k
        for y in range(h):
            for x in range(w):
                if m[y, x] and not m[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].all():
                    out[y, x] = True
    return out


@pytest.mark.parametrize("width", [1, 3, 5, 7])
def test_band_equals_per_class_erosion(width):
    rng = np.random.default_rng(width)
    for _ in range(5):
        gt = rng.choice([0, 1, 2, 3, 255], size=(9, 11), p=[0.4, 0.3, 0.1, 0.1, 0.1]).astype(np.uint8)
        gt[:, :4] = 1  # a large region so some pixels erode
        assert (band(gt, width, 4) == brute_force_band(gt, 4, width)).all()


def test_per_image_ratio_and_empty_band_skipped():
    pred = np.array([[0, 0, 1, 0], [0, 0, 1, 255], [0, 1, 1, 1]], np.uint8)
    # band (3x3) has 8 pixels: 5 hits, 7 valid predictions -> 5 / (8 + 7 - 5) = 0.5
    m = BoundaryIoU(num_classes=124, width=3)
    m.update(np.stack([pred, GT, np.zeros_like(GT)]), np.stack([GT, GT, np.zeros_like(GT)]))
    assert int(m.num_images) == 2  # the constant third image has no band
    assert m.compute() == pytest.approx((0.5 + 1.0) / 2)


def test_no_band_anywhere_gives_none():
    m = BoundaryIoU()
    m.update(np.zeros((2, 3, 4), np.uint8), np.zeros((2, 3, 4), np.uint8))
    assert m.compute() is None


def test_even_width_rejected():
    with pytest.raises(ValueError, match="odd"):
        BoundaryIoU(width=4)
