"""`VideoSegmentationMetrics`: every paper metric from whole videos, as one sum-reducible torchmetrics Metric."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from isam2.metrics.boundary import boundary_counts, check_width, image_boundary_iou
from isam2.metrics.consistency import check_lengths, check_protocol, video_consistency
from isam2.metrics.iou import check_class_set, confusion_matrix, invalid_prediction_count, iou_scores
from isam2.metrics.labels import check_num_classes, frame_chunks, label_pair


class VideoSegmentationMetrics(Metric):
    """mIoU, weighted IoU, per-class IoU, mBIoU and mVC_n; `update(pred, gt)` takes ONE WHOLE video [T, H, W].

    `compute()` returns the metrics.json dict: fractions in [0, 1] under `miou`, `fwiou`, `mbiou`,
    `mvc<n>` (one per length), `per_class_iou` (list, None where the union is empty), plus `num_frames`,
    `num_videos`, `num_invalid_pred` (prediction pixels outside [0, C) other than 255) and `protocol`.
    A metric nothing qualifies for is None: e.g. `mvc16` when no video is long enough under the protocol.
    All state is int64/float64 and sum-reduced, so N processes give the numbers of one (to rounding).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self,
        num_classes: int = 124,
        miou_classes: str = "gt",
        vc_protocol: str = "cffm",
        vc_lengths: Sequence[int] = (8, 16),
        boundary_width: int = 5,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = check_num_classes(num_classes)
        self.miou_classes = check_class_set(miou_classes)
        self.vc_protocol = check_protocol(vc_protocol)
        self.vc_lengths = check_lengths(vc_lengths)
        self.boundary_width = check_width(boundary_width)
        c, k = self.num_classes, len(self.vc_lengths)
        self.add_state("confmat", torch.zeros(c + 1, c + 2, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("biou_sum", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("biou_images", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("vc_sum", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("vc_count", torch.zeros(k, dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("num_frames", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")
        self.add_state("num_videos", torch.zeros((), dtype=torch.int64), dist_reduce_fx="sum")

    @property
    def protocol(self) -> dict:
        return {
            "miou_classes": self.miou_classes,
            "vc_protocol": self.vc_protocol,
            "vc_lengths": list(self.vc_lengths),
            "boundary_width": self.boundary_width,
        }

    def update(self, pred, gt) -> None:
        pred, gt = label_pair(pred, gt, self.num_classes, self.device)
        for s in frame_chunks(gt.shape[0], gt[0].numel()):
            self.confmat += confusion_matrix(pred[s], gt[s], self.num_classes)
            total, images = image_boundary_iou(
                boundary_counts(pred[s], gt[s], self.num_classes, self.boundary_width)
            )
            self.biou_sum += total
            self.biou_images += images
        total, count = video_consistency(pred, gt, self.vc_lengths, self.vc_protocol)
        self.vc_sum += total
        self.vc_count += count
        self.num_frames += gt.shape[0]
        self.num_videos += 1

    def compute(self) -> dict:
        out = iou_scores(self.confmat, self.miou_classes)
        images = int(self.biou_images)
        out["mbiou"] = float(self.biou_sum) / images if images else None
        for n, s, c in zip(self.vc_lengths, self.vc_sum.tolist(), self.vc_count.tolist()):
            out[f"mvc{n}"] = s / c if c else None
        out["per_class_iou"] = out.pop("per_class_iou")
        out["num_frames"] = int(self.num_frames)
        out["num_videos"] = int(self.num_videos)
        out["num_invalid_pred"] = invalid_prediction_count(self.confmat)
        out["protocol"] = self.protocol
        return out
