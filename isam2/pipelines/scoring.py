"""Whole-video scoring under Lightning: each rank scores its shard of videos, metric state is reduced once (the
`python -m isam2.score` pipeline around it: isam2/pipelines/score.py)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset

from isam2.data.predictions import prediction_path, read_prediction
from isam2.distributed import VideoShardSampler
from isam2.errors import ISAM2Error
from isam2.metrics.video import VideoSegmentationMetrics


class VideoPredictionPairs(Dataset):
    """Item i: video i's predictions and GT as uint8-or-wider [T, H, W] tensors; a bad file gives `error`."""

    def __init__(self, videos: Sequence, pred_dir: str | Path):
        self.videos = list(videos)
        self.pred_dir = Path(pred_dir)

    def __len__(self) -> int:
        return len(self.videos)

    def __getitem__(self, i: int) -> dict:
        v = self.videos[i]
        try:  # an error travels as data, so every rank reaches the end and the run stops with one message
            gt = v.load_masks()
            pred = np.stack(
                [read_prediction(prediction_path(self.pred_dir, v.id, n), v.size) for n in v.frame_names]
            )
        except ISAM2Error as e:
            return {"error": str(e)}
        return {"error": "", "pred": torch.from_numpy(pred), "gt": torch.from_numpy(gt)}


class VideoScorer(pl.LightningModule):
    """test_step = one whole video into `metrics`; at the end `result` (every rank) or `error` (first bad file)."""

    def __init__(self, metrics: VideoSegmentationMetrics):
        super().__init__()
        self.metrics = metrics
        self.errors: list[str] = []
        self.error: str | None = None
        self.result: dict | None = None

    def test_step(self, batch: dict, batch_idx: int) -> None:
        if batch["error"]:
            self.errors.append(batch["error"])
        elif not self.errors:  # after a bad file the run fails anyway: skip the work
            self.metrics.update(batch["pred"], batch["gt"])

    def on_test_epoch_end(self) -> None:
        errors = self.errors[:1]
        if dist.is_available() and dist.is_initialized():
            gathered: list = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, errors)
            errors = [e for rank_errors in gathered for e in rank_errors]
        if errors:
            self.error = errors[0]
            return
        # a rank may hold no video ("compute before update"): its zeros add nothing
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            # the one reduction of the metric state (all ranks take part)
            self.result = self.metrics.compute()


def score_videos(
    trainer: pl.Trainer,
    videos: Sequence,
    pred_dir: str | Path,
    metrics: VideoSegmentationMetrics,
    num_workers: int = 0,
) -> dict:
    """Score `videos` against `pred_dir` with `trainer` (1 process or DDP; whole videos per rank, no padding).

    Returns the metrics dict on every rank; a prediction that fails to decode raises ISAM2Error on every rank.
    """
    pairs = VideoPredictionPairs(videos, pred_dir)
    loader = DataLoader(
        pairs, batch_size=None, sampler=VideoShardSampler([len(v) for v in videos]), num_workers=num_workers
    )
    scorer = VideoScorer(metrics)
    trainer.test(scorer, dataloaders=loader, verbose=False)
    if scorer.error is not None:
        raise ISAM2Error(scorer.error)
    assert scorer.result is not None
    return scorer.result
