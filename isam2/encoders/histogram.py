"""`encoder=base_histogram`: a base segmentor's class histogram over each masklet, as a pooled "feature".

Its one map is the base prediction one-hot at stride 1 (void pixels are all-zero), so Eq. 3 gives, per
masklet, the fraction of its pixels that the base labels c: the soft form of Eq. 1's majority vote. It reads
`<base_predictions>/<video>/<frame>.png` (uint8 train ids, 255 = none) and pools by counting (exactly the
Eq. 3 mean of the one-hot map, without building it)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isam2.encoders.base import Encoder, resolve_encoder_device
from isam2.errors import ConfigError, ISAM2Error


class BaseHistogramEncoder(Encoder):
    """Per-masklet base-class fractions [n, num_classes] from the base predictions in `base_predictions`."""

    def __init__(
        self,
        name: str = "base_histogram",
        base_predictions: str | None = None,
        num_classes: int = 124,
        device: str = "cpu",
        frames_per_batch: int = 8,
    ):
        if not base_predictions:
            raise ConfigError(
                f"encoder.{name}.base_predictions is not set: give the folder of the base segmentor's "
                "<video>/<frame>.png predictions (data.base_predictions)"
            )
        self.name = name
        self.folder = Path(base_predictions).expanduser()
        if not self.folder.is_dir():
            raise ISAM2Error(f"encoder.{name}.base_predictions={self.folder} is not a folder")
        self.num_classes = int(num_classes)
        self.widths, self.strides = (self.num_classes,), (1,)
        self.device = resolve_encoder_device(device)
        self.frames_per_batch = int(frames_per_batch)

    def maps(self, frames: np.ndarray, video: Any, indices: Sequence[int]) -> list[torch.Tensor]:
        """The base predictions of the frames, [B, 1, H, W] int64 class ids (255 = none), not one-hot."""
        from isam2.data.predictions import prediction_path, read_prediction

        size = tuple(frames.shape[1:3])
        preds = [
            read_prediction(prediction_path(self.folder, video.id, video.frame_names[i]), size)
            for i in indices
        ]
        return [torch.from_numpy(np.stack(preds).astype(np.int64))[:, None].to(self.device)]

    def pool_frame(self, maps: list[torch.Tensor], id_map: torch.Tensor, n: int) -> torch.Tensor:
        pred = maps[0].reshape(-1).to(id_map.device)
        rows = id_map.reshape(-1)
        C = self.num_classes
        inside = rows >= 0
        area = torch.bincount(rows[inside], minlength=n)[:n].to(torch.float32)
        voting = inside & (pred < C)  # void (255) and out-of-range ids count in the area, vote for nothing
        counts = torch.bincount(rows[voting] * C + pred[voting], minlength=n * C)[: n * C]
        hist = counts.reshape(n, C).to(torch.float32)
        return hist / area.clamp_min(1.0)[:, None]
