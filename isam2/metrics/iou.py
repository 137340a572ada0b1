"""mIoU, weighted IoU and per-class IoU from one confusion matrix (docs/metrics.md)."""

from __future__ import annotations

import torch
from torchmetrics import Metric

from isam2.errors import ConfigError
from isam2.metrics.labels import check_num_classes, frame_chunks, label_pair

MIOU_CLASS_SETS = ("gt", "union")


def check_class_set(classes: str) -> str:
    if classes not in MIOU_CLASS_SETS:
        raise ConfigError(f"metrics.miou_classes must be one of {MIOU_CLASS_SETS}, got {classes!r}")
    return classes


def confusion_matrix(pred: torch.Tensor, gt: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [C+1, C+2] counts of uint8-coded maps (see `labels.as_label_codes`).

    Row = GT class, row C = GT outside [0, C) (void). Column 0 = prediction 255 (none), 1..C = class + 1,
    C+1 = any other prediction outside [0, C). Both out-of-range columns are misses for the row's class.
    """
    c = num_classes
    rows = gt.clamp_max(c)  # void and invalid GT -> row C
    cols = (pred + 1).clamp_max_(c + 1)  # uint8 wrap: 255 -> 0; classes -> 1..C; the rest -> C+1
    dtype = torch.int16 if (c + 1) * (c + 2) <= torch.iinfo(torch.int16).max else torch.int32
    idx = rows.to(dtype).mul_(c + 2).add_(cols)
    return torch.bincount(idx.reshape(-1), minlength=(c + 1) * (c + 2)).view(c + 1, c + 2)


def iou_scores(confmat: torch.Tensor, classes: str = "gt") -> dict:
    """mIoU (over `classes`: "gt" = present in GT, "union" = non-empty union), weighted IoU, per-class IoU."""
    check_class_set(classes)
    cm = confmat.detach().to("cpu", torch.int64)
    c = cm.shape[0] - 1
    valid = cm[:c]  # GT void rows are dropped
    tp = valid[:, 1 : c + 1].diagonal()
    gt_count = valid.sum(1)  # misses (both out-of-range columns) included
    pred_count = valid[:, 1 : c + 1].sum(0)
    union = gt_count + pred_count - tp
    iou = tp.double() / union.double()  # NaN where union == 0
    chosen = gt_count > 0 if classes == "gt" else union > 0
    miou = iou[chosen].mean().item() if bool(chosen.any()) else None
    total = gt_count.sum()
    fwiou = None
    if total > 0:
        present = gt_count > 0
        # sum_c GT_c * IoU_c / sum_c GT_c: each term is at most its GT_c, so the ratio never rounds above 1
        fwiou = ((gt_count[present].double() * iou[present]).sum() / total.double()).item()
    per_class = [None if u == 0 else float(v) for u, v in zip(union.tolist(), iou.tolist())]
    return {"miou": miou, "fwiou": fwiou, "per_class_iou": per_class}


def invalid_prediction_count(confmat: torch.Tensor) -> int:
    """Prediction pixels outside [0, C) other than 255, over all GT (void included)."""
    return int(confmat[:, -1].sum())


class SegmentationIoU(Metric):
    """Confusion-matrix IoU over all frames: `miou`, `fwiou`, `per_class_iou` (null where the union is empty)."""

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, num_classes: int = 124, classes: str = "gt", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_num_classes(num_classes)
        self.classes = check_class_set(classes)
        c = self.num_classes
        self.add_state("confmat", torch.zeros(c + 1, c + 2, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred, gt) -> None:
        pred, gt = label_pair(pred, gt, self.num_classes, self.device)
        for s in frame_chunks(gt.shape[0], gt[0].numel()):
            self.confmat += confusion_matrix(pred[s], gt[s], self.num_classes)

    def compute(self) -> dict:
        return iou_scores(self.confmat, self.classes)
