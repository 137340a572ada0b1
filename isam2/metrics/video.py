"""`VideoSegmentationMetrics`: every paper metric, from whole videos or window by window, as one Metric."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torchmetrics import Metric

from isam2.errors import ISAM2Error
from isam2.metrics.boundary import boundary_counts, check_width, image_boundary_ratios
from isam2.metrics.consistency import ConsistencyRuns, check_lengths, check_protocol
from isam2.metrics.iou import check_class_set, confusion_matrix, invalid_prediction_count, iou_scores
from isam2.metrics.labels import check_num_classes, frame_chunks, label_pair


class VideoSegmentationMetrics(Metric):
    """mIoU, weighted IoU, per-class IoU, mBIoU and mVC_n; `update(pred, gt)` takes ONE WHOLE video [T, H, W].

    A long video can be fed window by window instead: `begin_video()`, `update_frames(pred, gt)` for each run
    of consecutive frames [t, H, W], `end_video()`; the numbers are identical to `update` on the whole video.

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
        # not a metric state: never synced nor reduced, as each video is scored whole by one process
        self._video: _OpenVideo | None = None

    @property
    def protocol(self) -> dict:
        return {
            "miou_classes": self.miou_classes,
            "vc_protocol": self.vc_protocol,
            "vc_lengths": list(self.vc_lengths),
            "boundary_width": self.boundary_width,
        }

    def update(self, pred, gt) -> None:
        """Score one whole video [T, H, W] (T >= 1): `begin_video`, `update_frames`, `end_video` in one call."""
        self.begin_video()
        try:
            self.update_frames(pred, gt)
            self._close_video()  # this call is already wrapped by torchmetrics as an update
        finally:
            self._video = None  # a refused video leaves none open

    def begin_video(self) -> None:
        """Open a video, to be fed by `update_frames` and closed by `end_video`."""
        if self._video is not None:
            raise ISAM2Error("begin_video() while a video is open: call end_video() (or reset()) first")
        self._video = _OpenVideo(ConsistencyRuns(self.vc_lengths, self.vc_protocol))
        self._computed = None  # so that compute() reaches its open-video check instead of torchmetrics' cache

    def update_frames(self, pred, gt) -> None:
        """Add the next consecutive frames [t, H, W] (or one [H, W]) of the open video.

        The metric state is unchanged until `end_video`. Held between calls: the last frame, per-pixel run
        counters, a few counts per frame and the video's confusion matrix, O(H*W + T).
        """
        video = self._open_video("update_frames")
        pred, gt = label_pair(pred, gt, self.num_classes, self.device)
        video.runs.add(pred, gt)  # first: it refuses frames of another size before anything is counted
        if gt.shape[0] == 0:
            return
        c = self.num_classes
        for s in frame_chunks(gt.shape[0], gt[0].numel()):
            cm = confusion_matrix(pred[s], gt[s], c)
            video.confmat = cm if video.confmat is None else video.confmat.add_(cm)
            ratios, has_band = image_boundary_ratios(boundary_counts(pred[s], gt[s], c, self.boundary_width))
            # per-frame ratios are summed once in end_video, so the float sum does not depend on the chunks
            video.biou_ratios.append(ratios)
            video.biou_images.append(has_band.sum())

    def end_video(self) -> None:
        """Close the open video and add its contributions (every metric, `num_videos` + 1) to the state."""
        # a state change like `update`'s: torchmetrics' wrapper clears compute()'s cache and counts the update
        self._wrap_update(self._close_video)()

    def _close_video(self) -> None:
        video = self._open_video("end_video")
        self._video = None  # closed even when refused below
        if video.runs.num_frames == 0:
            raise ISAM2Error("end_video(): the video has no frames; update_frames() adds them")
        self.confmat += video.confmat
        self.biou_sum += torch.cat(video.biou_ratios).sum()
        self.biou_images += torch.stack(video.biou_images).sum()
        total, count = video.runs.finish()
        self.vc_sum += total
        self.vc_count += count
        self.num_frames += video.runs.num_frames
        self.num_videos += 1

    def _open_video(self, caller: str) -> _OpenVideo:
        if self._video is None:
            raise ISAM2Error(f"{caller}() without an open video: call begin_video() first")
        return self._video

    def reset(self) -> None:
        super().reset()
        self._video = None

    def compute(self) -> dict:
        if self._video is not None:
            raise ISAM2Error("compute() while a video is open: call end_video() first")
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


@dataclass
class _OpenVideo:
    """What a video adds to the metric state, gathered chunk by chunk until `end_video`."""

    runs: ConsistencyRuns
    confmat: torch.Tensor | None = None
    biou_ratios: list[torch.Tensor] = field(default_factory=list)  # float64 [t] per chunk
    biou_images: list[torch.Tensor] = field(default_factory=list)  # int64 [] per chunk
