"""Oracle (ground-truth) masklets: connected components per class, minimum area, track linking."""

from __future__ import annotations

import numpy as np

from isam2.masklets import oracle
from isam2.masklets.oracle import gt_components, gt_masklets, link_tracks


def frame():
    m = np.full((12, 16), 255, np.uint8)
    m[0:4, 0:4] = 2  # class 2, component A (16 px)
    m[8:12, 10:16] = 2  # class 2, component B (24 px)
    m[4:8, 4:8] = 5  # class 5 (16 px), touches A only diagonally
    m[0, 15] = 5  # class 5, a single pixel
    return m


def test_components_per_class_with_min_area():
    masks, classes = gt_components(frame(), min_area=2)
    assert masks.dtype == bool and masks.shape == (3, 12, 16)
    assert classes.tolist() == [2, 2, 5]
    assert masks.reshape(3, -1).sum(1).tolist() == [16, 24, 16]
    assert not masks[:, frame() == 255].any()  # void never forms masklets
    assert len(gt_masklets(frame(), min_area=0)) == 4  # the single pixel too
    assert len(gt_masklets(frame(), min_area=17)) == 1


def test_eight_connectivity():
    m = np.zeros((4, 4), np.uint8)
    np.fill_diagonal(m, 1)
    masks, classes = gt_components(m)
    assert classes.tolist() == [0, 1]  # class 0 is one component (8-connected around the diagonal)
    assert masks[1].sum() == 4  # the diagonal is one component


def test_empty_and_all_void():
    masks = gt_masklets(np.full((5, 7), 255, np.uint8), min_area=1)
    assert masks.shape == (0, 5, 7) and masks.dtype == bool


def test_opencv_fallback_agrees(monkeypatch):
    rng = np.random.default_rng(0)
    m = rng.integers(0, 4, (30, 40)).astype(np.uint8)
    m[rng.random((30, 40)) < 0.1] = 255
    with_scipy = gt_components(m, min_area=3)
    monkeypatch.setattr(oracle, "_ndimage", None)
    with_cv2 = gt_components(m, min_area=3)
    np.testing.assert_array_equal(with_scipy[0], with_cv2[0])
    np.testing.assert_array_equal(with_scipy[1], with_cv2[1])


def test_link_tracks_follows_overlap_within_class():
    a = np.zeros((10, 10), np.uint8)
    a[2:6, 2:6] = 1
    b = np.zeros((10, 10), np.uint8)
    b[2:6, 3:7] = 1  # moved by one pixel: IoU 12/20 = 0.6
    b[8:10, 8:10] = 2  # a new object
    m0, c0 = gt_components(a, 1)
    t0, nxt = link_tracks(np.zeros((0, 10, 10), bool), np.zeros(0), np.zeros(0, np.int64), m0, c0, 0)
    m1, c1 = gt_components(b, 1)
    t1, nxt = link_tracks(m0, c0, t0, m1, c1, nxt)
    by_class0 = dict(zip(c0.tolist(), t0.tolist()))
    by_class1 = dict(zip(c1.tolist(), t1.tolist()))
    assert by_class1[1] == by_class0[1]  # the moving box keeps its track
    assert by_class1[0] == by_class0[0]  # so does the background
    assert by_class1[2] not in t0 and nxt == len(set(t0) | set(t1))
    # the same pixels under another class start a new track
    c2 = b.copy()
    c2[c2 == 1] = 4
    m2, cl2 = gt_components(c2, 1)
    t2, _ = link_tracks(m1, c1, t1, m2, cl2, nxt)
    assert dict(zip(cl2.tolist(), t2.tolist()))[4] >= nxt
