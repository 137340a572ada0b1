"""PredictionWriter: the primary method's semantic maps of every test (or predict) video as PNGs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import BasePredictionWriter

from isam2.data.predictions import write_prediction
from isam2.model.batches import PaintedVideo


class PredictionWriter(BasePredictionWriter):
    """Writes `<output_dir>/<video>/<frame>.png` (uint8 train ids, 255 = void) of each `PaintedVideo`'s
    primary method. Every rank writes the videos of its own shard (whole videos per rank, so no file is
    written twice); each file is written atomically."""

    def __init__(self, output_dir: str | Path):
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir)

    def write_on_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        if not isinstance(prediction, PaintedVideo):
            return
        frames = prediction.predictions[prediction.primary].cpu().numpy()
        for name, frame in zip(prediction.frame_names, frames, strict=True):
            write_prediction(self.output_dir / prediction.video / f"{name}.png", frame)

    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self.write_on_batch_end(trainer, pl_module, outputs, None, batch, batch_idx, dataloader_idx)
