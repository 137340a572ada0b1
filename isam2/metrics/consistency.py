"""mVC_n (video consistency) for several n in one pass over a video, under the published protocols."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics import Metric

from isam2.errors import ConfigError
from isam2.metrics.labels import NONE, check_pair, label_pair, per_frame_counts

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


class ConsistencyRuns:
    """One video's mVC_n counts fed chunk by chunk: `add` consecutive frames, then `finish()` once T is known.

    Per pixel, the count of consecutive unchanged steps ending at the current frame (GT alone, and GT and
    prediction both), so a window of length n ending there is consistent iff that count >= n-1. Carried
    between chunks: the previous frame of each map and the two run counters (O(H*W)), plus for every frame
    so far the number of GT-consistent and both-consistent pixels per length (O(T)).
    """

    def __init__(self, lengths: Sequence[int], protocol: str):
        self.lengths = check_lengths(lengths)
        self.protocol = check_protocol(protocol)
        self.num_frames = 0
        self._prev: tuple[torch.Tensor, torch.Tensor] | None = None  # last (pred, gt) frame added
        self._rows: list[torch.Tensor] = []  # int64 [2K, t] per chunk: frame counts, GT then both

    def add(self, pred: torch.Tensor, gt: torch.Tensor) -> None:
        """The next frames of the video: uint8-coded pred and gt [t, H, W] (see `labels.as_label_codes`)."""
        check_pair(pred, gt)
        if self._prev is not None and gt.shape[1:] != self._prev[1].shape:
            raise ValueError(
                f"frames of shape {tuple(gt.shape[1:])} follow frames of shape {tuple(self._prev[1].shape)}"
            )
        if gt.shape[0] == 0:
            return
        if self._prev is None:
            self._start(gt[0])
        k = len(self.lengths)
        run_gt, run_both, cap = self._run_gt, self._run_both, self._cap
        rows = []
        for t in range(gt.shape[0]):
            prev = (pred[t - 1], gt[t - 1]) if t > 0 else self._prev
            if prev is not None:
                same_gt = gt[t] == prev[1]
                same_both = same_gt & (pred[t] == prev[0])
                torch.minimum(run_gt.add_(1).mul_(same_gt), cap, out=run_gt)
                torch.minimum(run_both.add_(1).mul_(same_both), cap, out=run_both)
            for i, th in enumerate(self._thresholds):
                torch.ge(run_gt, th, out=self._consistent[i])
                torch.ge(run_both, th, out=self._consistent[k + i])
            rows.append(per_frame_counts(self._consistent))
        self._rows.append(torch.stack(rows, dim=1))
        # copies, so that the caller's chunk can be freed
        self._prev = (pred[-1].clone(), gt[-1].clone())
        self.num_frames += gt.shape[0]

    def _start(self, frame: torch.Tensor) -> None:
        n_max = max(self.lengths)
        run_dtype = torch.uint8 if n_max <= NONE else torch.int32  # runs are capped at n_max - 1
        self._run_gt = torch.zeros_like(frame, dtype=run_dtype)
        self._run_both = torch.zeros_like(self._run_gt)
        self._cap = torch.full_like(self._run_gt, n_max - 1)
        self._thresholds = [torch.full_like(self._run_gt, n - 1) for n in self.lengths]
        shape = (2 * len(self.lengths), *frame.shape)
        self._consistent = torch.empty(shape, dtype=torch.bool, device=frame.device)

    def counts(self) -> torch.Tensor:
        """int64 [2, K, T]: for length n_k and the window ending at frame e, [0] pixels whose GT is identical

        over the window, [1] those whose prediction is identical too (zero where e < n_k - 1).
        """
        k = len(self.lengths)
        if not self._rows:
            return torch.zeros((2, k, 0), dtype=torch.int64)
        return torch.cat(self._rows, dim=1).view(2, k, self.num_frames)

    def finish(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The video's contribution (float64 [K] sums, int64 [K] counts) to VideoConsistency's state.

        Only now is T known, and with it the protocol's windows (`window_ends`); counts of frames that end
        no window are simply not used, and those used do not depend on later frames, nor on the chunking.
        """
        protocol, k = self.protocol, len(self.lengths)
        den, num = self.counts().double()
        total = torch.zeros(k, dtype=torch.float64, device=den.device)
        count = torch.zeros(k, dtype=torch.int64, device=den.device)
        for i, n in enumerate(self.lengths):
            e = window_ends(self.num_frames, n, protocol)
            if not len(e):
                continue
            d, m = den[i, e.start : e.stop], num[i, e.start : e.stop]
            defined = d > 0  # a window with no GT-consistent pixel is NaN and dropped
            ratios = torch.where(
                defined, m / torch.where(defined, d, torch.ones_like(d)), torch.zeros_like(d)
            )
            n_def = defined.sum()
            if protocol == "paper":  # per-video mean; a video none of whose windows is defined is dropped
                total[i] = torch.where(n_def > 0, ratios.sum() / n_def.clamp_min(1), 0.0)
                count[i] = (n_def > 0).long()
            else:
                total[i] = ratios.sum()
                count[i] = n_def
        return total, count


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
    """One whole video's contribution (float64 [K] sums, int64 [K] counts) to VideoConsistency's state."""
    runs = ConsistencyRuns(lengths, protocol)
    runs.add(pred, gt)
    return runs.finish()
