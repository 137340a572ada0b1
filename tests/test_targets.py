"""Masklet targets: GT histograms, majority label, purity and valid counts on hand-made masks."""

from __future__ import annotations

import numpy as np
import pytest

from isam2.errors import ISAM2Error
from isam2.masklets.targets import class_histograms, masklet_targets

V = 255  # void

GT = np.array(
    [
        [0, 0, 3, 3, V],
        [0, 0, 3, 3, V],
        [7, 7, 7, V, V],
    ],
    dtype=np.uint8,
)


def _mask(*pixels: tuple[int, int]) -> np.ndarray:
    m = np.zeros(GT.shape, dtype=bool)
    for y, x in pixels:
        m[y, x] = True
    return m


def test_hand_made_masks():
    masks = np.stack(
        [
            _mask((0, 0), (0, 1), (1, 0), (1, 1)),  # pure class 0
            _mask((0, 1), (0, 2), (1, 2), (0, 4)),  # 0 x1, 3 x2, void x1 -> label 3, purity 2/3, valid 3
            _mask((0, 4), (1, 4), (2, 4)),  # only void -> 255, purity 0
            _mask((2, 0), (2, 1), (1, 1), (1, 2)),  # 7 x2, 0 x1, 3 x1 -> 7, 2/4
            _mask((0, 0), (2, 0)),  # 0 x1, 7 x1: tie -> the smaller id 0, purity 1/2
        ]
    )
    t = masklet_targets(masks, GT)
    assert t.label.dtype == np.uint8 and t.purity.dtype == np.float32 and t.valid.dtype == np.int64
    assert t.label.tolist() == [0, 3, 255, 7, 0]
    assert t.valid.tolist() == [4, 3, 0, 4, 2]
    np.testing.assert_allclose(t.purity, [1.0, 2 / 3, 0.0, 0.5, 0.5], rtol=1e-6)
    assert t.histogram[1, 0] == 1 and t.histogram[1, 3] == 2 and t.histogram[1].sum() == 3
    assert t.histogram.shape == (5, 255)


def test_matches_a_per_masklet_brute_force():
    rng = np.random.default_rng(0)
    gt = rng.choice(np.array([0, 1, 5, 123, V], dtype=np.uint8), size=(9, 11))
    masks = rng.random((6, 9, 11)) < 0.4
    hist = class_histograms(masks, gt)
    for i, m in enumerate(masks):
        values = gt[m]
        values = values[values != V]
        expected = np.zeros(255, np.int64)
        for v in values:
            expected[v] += 1
        np.testing.assert_array_equal(hist[i], expected)
        t = masklet_targets(masks, gt)
        if len(values):
            assert t.label[i] == int(np.argmax(expected))
            assert t.purity[i] == pytest.approx(expected.max() / len(values))
        else:
            assert t.label[i] == 255 and t.purity[i] == 0


def test_no_ground_truth_and_no_masklets():
    masks = np.ones((2, 3, 5), dtype=bool)
    t = masklet_targets(masks, None)
    assert t.label.tolist() == [255, 255] and t.valid.tolist() == [0, 0] and t.purity.tolist() == [0, 0]
    empty = masklet_targets(np.zeros((0, 3, 5), dtype=bool), GT)
    assert empty.label.shape == (0,) and empty.histogram.shape == (0, 255)


def test_bad_input_raises():
    with pytest.raises(ISAM2Error, match="uint8"):
        masklet_targets(np.ones((1, 3, 5), bool), GT.astype(np.int32))
    with pytest.raises(ISAM2Error, match="same H, W"):
        masklet_targets(np.ones((1, 4, 5), bool), GT)


def test_counts_stay_exact_on_large_frames_and_every_class():
    """The histogram is a float matrix product: counts far above fp16/bf16 precision must stay exact."""
    gt = np.full((600, 900), 5, np.uint8)
    gt[:, :1] = np.arange(600, dtype=np.int64).astype(np.uint8)[:, None]  # ids 0..254 and void in column 0
    masks = np.ones((2, 600, 900), bool)
    masks[1, ::2] = False
    hist = class_histograms(masks, gt)
    column = np.bincount(gt[:, 0], minlength=256)[:255]
    expected0 = column.copy()
    expected0[5] += 600 * 899
    np.testing.assert_array_equal(hist[0], expected0)
    expected1 = np.bincount(gt[1::2, 0], minlength=256)[:255]
    expected1[5] += 300 * 899
    np.testing.assert_array_equal(hist[1], expected1)
