"""mVC_n (video consistency) for several n in one pass over a video, under the published protocols."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from isam2.errors import ConfigError
from isam2.metrics.labels import NONE, label_pair, per_frame_counts

VC_PROTOCOLS = ("cffm", "vspw", "paper")
CFFM_MIN_FRAMES = 16  # the CFFM/MRCFA/TV3S scripts skip videos with <= 16 frames, for every n


def check_protocol(protocol: str) -> str:
    if protocol not in VC_PROTOCOLS:
        raise ConfigError(f"metrics.vc_protocol must be one of {VC_PROTOCOLS}, got {protocol!r}")
    return protocol


def check_lengths(lengths: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(n) for n in lengths)
    if not out or any(n < 1 for n in out) or len(set(out)) != len(out):
        raise ConfigError(f"metrics.vc_lengths must be distinct positive window lengths, got {list(lengths)}")
    return out


def window_ends(num_frames: int, n: int, protocol: str) -> range:
    """Last-frame indices of the windows [e-n+1, e] a protocol scores in a video of `num_frames` frames.

    cffm: windows start at 0..T-n-1 (T-n windows), videos with T <= 16 skipped; vspw: the same windows,
    videos with T <= n skipped (they have none); paper: starts 0..T-n (T-n+1 windows).
    """
    if protocol == "cffm" and num_frames <= CFFM_MIN_FRAMES:
        return range(0)
    last = num_frames - 1 if protocol == "paper" else num_frames - 2
    return range(n - 1, last + 1)


def consistency_counts(
    pred: torch.Tensor, gt: torch.Tensor, lengths: Sequence[int], last_end: int
) -> torch.Tensor:
    """int64 [2, K, E]: for each length n_k and window ending at frame e <= last_end (E = last_end + 1),

    [0] pixels whose GT is identical over the window, [1] those whose prediction is identical too
    (zero where e < n_k - 1). One pass: per pixel, the count of consecutive unchanged steps ending at e
    (GT alone, and GT and prediction both), so a window of length n is consistent iff that count >= n-1.
    """
    n_max = max(lengths)
    run_dtype = torch.uint8 if n_max <= NONE else torch.int32
    frame = gt[0]
    run_gt = torch.zeros_like(frame, dtype=run_dtype)
    run_both = torch.zeros_like(run_gt)
    cap = torch.full_like(run_gt, n_max - 1)
    thresholds = [torch.full_like(run_gt, n - 1) for n in lengths]
    k = len(lengths)
    consistent = torch.empty((2 * k, *frame.shape), dtype=torch.bool, device=frame.device)
    counts = []
    for t in range(last_end + 1):
        if t > 0:
            same_gt = gt[t] == gt[t - 1]
            same_both = same_gt & (pred[t] == pred[t - 1])
            torch.minimum(run_gt.add_(1).mul_(same_gt), cap, out=run_gt)
            torch.minimum(run_both.add_(1).mul_(same_both), cap, out=run_both)
        for i, th in enumerate(thresholds):
            torch.ge(run_gt, th, out=consistent[i])
            torch.ge(run_both, th, out=consistent[k + i])
        counts.append(per_frame_counts(consistent))
    return torch.stack(counts, dim=1).view(2, k, last_end + 1)


class VideoConsistency(Metric):
    """mVC_n for n in `lengths`; `update` takes ONE whole video. `compute()` -> {"mvc8": float | None, ...}.

    cffm/vspw: mean over all scored windows of all videos (windows with no GT-consistent pixel dropped);
    paper: per-video mean over its windows, then mean over videos. None when nothing qualifies.
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(
        self, lengths: Sequence[int] = (8, 16), protocol: str = "cffm", num_classes: int = 124, **kwargs
    ):
        super().__init__(**kwargs)
        self.lengths = check_lengths(lengths)
        self.protocol = check_protocol(protocol)
        self.num_classes = num_classes
        k = len(self.lengths)
        # cffm/vspw: sum of window ratios and number of windows; paper: sum of video means and number of videos
        self.add_state("vc_sum", torch.zeros(k, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("vc_count", torch.zeros(k, dtype=torch.int64), dist_reduce_fx="sum")

    def update(self, pred, gt) -> None:
        pred, gt = label_pair(pred, gt, self.num_classes, self.device)
        total, count = video_consistency(pred, gt, self.lengths, self.protocol)
        self.vc_sum += total
        self.vc_count += count

    def compute(self) -> dict:
        return {
            f"mvc{n}": (float(s) / int(c) if int(c) else None)
            for n, s, c in zip(self.lengths, self.vc_sum, self.vc_count)
        }


def video_consistency(pred: torch.Tensor, gt: torch.Tensor, lengths: Sequence[int], protocol: str):
    """One video's contribution (float64 [K] sums, int64 [K] counts) to VideoConsistency's state."""
    ends = [window_ends(gt.shape[0], n, protocol) for n in lengths]
    k = len(lengths)
    total = torch.zeros(k, dtype=torch.float64, device=gt.device)
    count = torch.zeros(k, dtype=torch.int64, device=gt.device)
    last_end = max((e[-1] for e in ends if len(e)), default=-1)
    if last_end < 0:
        return total, count
    den, num = consistency_counts(pred, gt, lengths, last_end).double()
    for i, e in enumerate(ends):
        if not len(e):
            continue
        d, m = den[i, e.start : e.stop], num[i, e.start : e.stop]
        defined = d > 0  # a window with no GT-consistent pixel is NaN and dropped
        ratios = torch.where(defined, m / torch.where(defined, d, torch.ones_like(d)), torch.zeros_like(d))
        n_def = defined.sum()
        if protocol == "paper":  # per-video mean; a video none of whose windows is defined is dropped
            total[i] = torch.where(n_def > 0, ratios.sum() / n_def.clamp_min(1), 0.0)
            count[i] = (n_def > 0).long()
        else:
            total[i] = ratios.sum()
            count[i] = n_def
    return total, count
