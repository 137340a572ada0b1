"""`ClassConfusion`: a sum-reducible torchmetrics Metric holding the GT-class x predicted-class pixel counts."""

from __future__ import annotations

import torch

from isam2.metrics.iou import SegmentationIoU, iou_scores


class ClassConfusion(SegmentationIoU):
    """Pixel counts [C, C+1] over uint8 label maps: row = GT class, column = predicted class, and the last
    column ("none") counts predictions outside [0, C): 255 (no masklet) and any other invalid value.
    GT void (255, or any value outside [0, C)) is ignored. `update(pred, gt)` takes [T,H,W] or [H,W] maps.

    The state is SegmentationIoU's full confusion matrix (`isam2.metrics.iou.confusion_matrix`, int64,
    sum-reduced over ranks); `per_class_iou()` gives exactly the per-class IoU of metrics.json."""

    higher_is_better = None

    def compute(self) -> torch.Tensor:
        """int64 [C, C+1]: GT classes x (predicted classes, then "none")."""
        c = self.num_classes
        valid = self.confmat[:c]  # GT void row dropped
        none = valid[:, 0] + valid[:, c + 1]  # 255 and other out-of-range predictions
        return torch.cat([valid[:, 1 : c + 1], none[:, None]], dim=1)

    def per_class_iou(self) -> list[float | None]:
        """IoU of each class (None where its union is empty), as in metrics.json's `per_class_iou`; summed over
        ranks like `compute()`."""
        return per_class_iou(self.compute())


def per_class_iou(matrix: torch.Tensor) -> list[float | None]:
    """Per-class IoU of a [C, C+1] `ClassConfusion` matrix, by `iou_scores` (the metrics.json numbers)."""
    c = matrix.shape[0]
    full = torch.zeros(c + 1, c + 2, dtype=torch.int64)  # iou_scores' layout: column 0 = none, 1..C = classes
    full[:c, 1 : c + 1] = matrix[:, :c].cpu()
    full[:c, 0] = matrix[:, c].cpu()
    return iou_scores(full)["per_class_iou"]
