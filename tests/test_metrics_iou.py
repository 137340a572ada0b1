"""mIoU / weighted IoU / per-class IoU on hand-computed 3x4 cases (docs/metrics.md)."""

import numpy as np
import pytest
import torch

from isam2.metrics import SegmentationIoU, VideoSegmentationMetrics
from isam2.metrics.iou import confusion_matrix, invalid_prediction_count, iou_scores

GT = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255]], np.uint8)
# class 0: 3 of 4 right, 1 more pixel predicted 0; class 1: 3 of 4 right, one 255 (a miss);
# class 2: 1 of 2 right; the void GT pixels (7 and 2) are dropped, 7 is out of range.
PRED = np.array([[0, 1, 1, 1], [0, 0, 1, 255], [2, 0, 7, 2]], np.uint8)


def test_hand_computed_gt_class_set():
    m = SegmentationIoU(num_classes=3)
    m.update(torch.from_numpy(PRED), torch.from_numpy(GT))
    out = m.compute()
    assert out["per_class_iou"] == pytest.approx([3 / 5, 3 / 5, 1 / 2])
    assert out["miou"] == pytest.approx((0.6 + 0.6 + 0.5) / 3)
    assert out["fwiou"] == pytest.approx(0.4 * 0.6 + 0.4 * 0.6 + 0.2 * 0.5)
    assert invalid_prediction_count(m.confmat) == 1  # the 7; 255 is "none", not invalid


def test_union_class_set_counts_predicted_only_classes():
    pred = PRED.copy()
    pred[2, 1] = 3  # class 3 never in GT: IoU 0, averaged only under "union"
    gt_set, union_set = SegmentationIoU(5, classes="gt"), SegmentationIoU(5, classes="union")
    for m in (gt_set, union_set):
        m.update(pred, GT)
    assert gt_set.compute()["per_class_iou"] == pytest.approx([3 / 4, 3 / 5, 1 / 2, 0.0, None])
    assert gt_set.compute()["miou"] == pytest.approx((0.75 + 0.6 + 0.5) / 3)
    assert union_set.compute()["miou"] == pytest.approx((0.75 + 0.6 + 0.5 + 0.0) / 4)


def test_out_of_range_predictions_are_misses_in_any_dtype():
    gt = torch.zeros(1, 3, 4, dtype=torch.int64)
    pred = torch.tensor([[[0, -1, 124, 255], [0, 0, 300, 0], [0, 0, 0, 0]]])
    m = SegmentationIoU(124)
    m.update(pred, gt)
    assert m.compute()["miou"] == pytest.approx(8 / 12)
    assert invalid_prediction_count(m.confmat) == 3  # -1, 124, 300


def test_perfect_prediction_is_one():
    rng = np.random.default_rng(0)
    gt = rng.integers(0, 6, (4, 3, 4)).astype(np.uint8)
    gt[0, 0, 0] = 255
    m = VideoSegmentationMetrics(num_classes=6)
    m.update(gt, gt)
    out = m.compute()
    assert out["miou"] == out["fwiou"] == out["mbiou"] == 1.0


def test_confusion_matrix_layout():
    cm = confusion_matrix(torch.from_numpy(PRED)[None], torch.from_numpy(GT)[None], 3)
    assert cm.shape == (4, 5) and cm.sum() == 12
    assert cm[1, 0] == 1  # GT 1 predicted 255 -> the "none" column
    assert cm[3].sum() == 2  # void GT row


def test_nothing_scored_gives_none():
    out = iou_scores(torch.zeros(4, 5, dtype=torch.int64))
    assert out["miou"] is None and out["fwiou"] is None and out["per_class_iou"] == [None] * 3


def test_bad_settings_and_inputs():
    with pytest.raises(ValueError):
        SegmentationIoU(3, classes="all")
    with pytest.raises(TypeError):
        SegmentationIoU(3).update(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        SegmentationIoU(3).update(torch.zeros(2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.long))
