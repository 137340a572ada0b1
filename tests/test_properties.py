"""Property tests (hypothesis) for the metrics and Eq. 3 pooling: relabelling, perfect predictions, bounds, linearity."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from isam2.masklets.pooling import masked_mean
from isam2.metrics import VideoSegmentationMetrics

C = 6  # classes in these small cases
SCALARS = ("miou", "fwiou", "mbiou", "mvc8", "mvc16")
FAST = settings(max_examples=25, deadline=None)


@st.composite
def videos(draw):
    """A blocky GT video [T,H,W] (classes 0..C-1 and some void) and a prediction that agrees on part of it."""
    seed = draw(st.integers(0, 2**31 - 1))
    T = draw(st.integers(17, 20))  # long enough for mVC16 under the default protocol
    H, W = draw(st.integers(8, 16)), draw(st.integers(8, 16))
    rng = np.random.default_rng(seed)
    base = rng.integers(0, C, (H // 4 + 1, W // 4 + 1))
    coarse = np.repeat(base[None], T, axis=0)  # mostly still scenes: a few blocks change class per frame
    changed = rng.random(coarse.shape) < draw(st.floats(0.0, 0.3))
    coarse[changed] = rng.integers(0, C, int(changed.sum()))
    gt = np.kron(coarse, np.ones((1, 4, 4), np.int64))[:, :H, :W].astype(np.uint8)
    gt[rng.random(gt.shape) < draw(st.floats(0.0, 0.2))] = 255
    pred = gt.copy()
    wrong = rng.random(gt.shape) < draw(st.floats(0.0, 0.6))
    pred[wrong] = rng.integers(0, C, int(wrong.sum()))
    pred[pred == 255] = 0  # a prediction always names a class
    return torch.from_numpy(pred), torch.from_numpy(gt)


def scores(pred: torch.Tensor, gt: torch.Tensor) -> dict:
    metric = VideoSegmentationMetrics(num_classes=C)
    metric.update(pred, gt)
    return metric.compute()


@FAST
@given(videos(), st.permutations(list(range(C))))
def test_relabelling_classes_on_both_sides_changes_nothing(video, perm):
    pred, gt = video
    lut = torch.tensor([*perm, *range(C, 255), 255], dtype=torch.uint8)
    a, b = scores(pred, gt), scores(lut[pred.long()], lut[gt.long()])
    for key in SCALARS:
        assert (a[key] is None) == (b[key] is None)
        if a[key] is not None:
            assert abs(a[key] - b[key]) < 1e-12, key
    # class c became perm[c]: its IoU moved with it
    np.testing.assert_allclose(
        np.array(a["per_class_iou"], dtype=float)[:C],
        np.array(b["per_class_iou"], dtype=float)[list(perm)],
        equal_nan=True,
    )


@FAST
@given(videos())
def test_a_perfect_prediction_scores_one_and_every_score_is_in_0_1(video):
    pred, gt = video
    for key, value in scores(pred, gt).items():
        if key in SCALARS and value is not None:
            assert 0.0 <= value <= 1.0, key
    perfect = torch.where(gt == 255, torch.zeros_like(gt), gt)
    result = scores(perfect, gt)
    assert result["miou"] == 1.0 and result["fwiou"] == 1.0
    assert result["mbiou"] in (None, 1.0)
    assert result["mvc8"] in (None, 1.0) and result["mvc16"] in (None, 1.0)  # None: no consistent pixel
    still = gt[:1].expand_as(gt).clone()  # a still scene: every window has consistent pixels
    still_result = scores(torch.where(still == 255, torch.zeros_like(still), still), still)
    assert still_result["mvc8"] == 1.0 and still_result["mvc16"] == 1.0


@st.composite
def pooling_cases(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    d, h, w = draw(st.integers(1, 5)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    H, W = draw(st.integers(h, 40)), draw(st.integers(w, 40))
    masks = rng.random((draw(st.integers(1, 4)), H, W)) < rng.random()
    masks[0, rng.integers(H), rng.integers(W)] = True  # at least one non-empty mask
    f1, f2 = (torch.from_numpy(rng.normal(size=(d, h, w))).float() for _ in range(2))
    return f1, f2, torch.from_numpy(masks), float(rng.normal()), float(rng.normal())


@FAST
@given(pooling_cases())
def test_pooling_is_linear_in_the_features(case):
    f1, f2, masks, a, b = case
    combined = masked_mean(a * f1 + b * f2, masks)
    torch.testing.assert_close(
        combined, a * masked_mean(f1, masks) + b * masked_mean(f2, masks), atol=1e-4, rtol=1e-4
    )


@FAST
@given(pooling_cases())
def test_a_full_mask_pools_the_global_mean(case):
    f1, _, masks, _, _ = case
    full = torch.ones(1, *masks.shape[1:], dtype=torch.bool)
    torch.testing.assert_close(masked_mean(f1, full)[0], f1.flatten(1).mean(1), atol=1e-5, rtol=1e-5)
