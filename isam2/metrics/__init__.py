"""Metrics stage: mIoU/WIoU, mBIoU and mVC_n as torchmetrics Metrics (docs/metrics.md), and tables."""

from isam2.metrics.boundary import BoundaryIoU, boundary_band
from isam2.metrics.consistency import VC_PROTOCOLS, VideoConsistency
from isam2.metrics.iou import MIOU_CLASS_SETS, SegmentationIoU, confusion_matrix, iou_scores
from isam2.metrics.report import format_table
from isam2.metrics.video import VideoSegmentationMetrics

__all__ = [
    "MIOU_CLASS_SETS",
    "VC_PROTOCOLS",
    "BoundaryIoU",
    "SegmentationIoU",
    "VideoConsistency",
    "VideoSegmentationMetrics",
    "boundary_band",
    "confusion_matrix",
    "format_table",
    "iou_scores",
]
