"""`ClassConfusion`: a sum-reducible torchmetrics Metric holding the GT-class x predicted-class pixel counts."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from isam2.metrics.iou import confusion_matrix, iou_scores
from isam2.metrics.labels import check_num_classes, frame_chunks, label_pair


class ClassConfusion(Metric):
    """Pixel counts [C, C+1] over uint8 label maps: row = GT class, column = predicted class, and the last
    column ("none") counts predictions outside [0, C): 255 (no masklet) and any other invalid value.
    GT void (255, or any value outside [0, C)) is ignored. `update(pred, gt)` takes [T,H,W] or [H,W] maps.

    The state is the full confusion matrix of `isam2.metrics.iou.confusion_matrix` (GT void row included), so
    `per_class_iou()` gives exactly the per-class IoU of `SegmentationIoU` on the same pixels."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, num_classes: int = 124, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_num_classes(num_classes)
        c = self.num_classes
        self.add_state("confmat", torch.zeros(c + 1, c + 2, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred, gt) -> None:
        pred, gt = label_pair(pred, gt, self.num_classes, self.device)
        for s in frame_chunks(gt.shape[0], gt[0].numel()):
            self.confmat += confusion_matrix(pred[s], gt[s], self.num_classes)

    def compute(self) -> torch.Tensor:
        """int64 [C, C+1]: GT classes x (predicted classes, then "none")."""
        c = self.num_classes
        valid = self.confmat[:c]  # GT void row dropped
        none = valid[:, 0] + valid[:, c + 1]  # 255 and other out-of-range predictions
        return torch.cat([valid[:, 1 : c + 1], none[:, None]], dim=1)

    def per_class_iou(self) -> list[float | None]:
        """IoU of each class (None where its union is empty), as in metrics.json's `per_class_iou`."""
        return iou_scores(self.confmat)["per_class_iou"]
