"""Per-stage wall-clock times of extraction (decode, encode, AMG, propagate, pool, write), off unless asked for."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator

import torch

STAGES = ("decode", "encode", "amg", "propagate", "pool", "write")
HOST_STAGES = ("decode", "write")  # CPU work in their own threads: never wait for the device there


class StageClock:
    """Adds up seconds per stage. Disabled by default (no device syncs on the hot path); when enabled, a CUDA
    device is synchronised at both ends of a device stage so that its time is the stage's own, not a later one's."""

    def __init__(self, enabled: bool = False, device: torch.device | str | None = None):
        self.enabled = enabled
        self.device = torch.device(device) if device is not None else None
        self.seconds: dict[str, float] = dict.fromkeys(STAGES, 0.0)
        self._lock = threading.Lock()  # decode and write run in their own threads

    def _sync(self) -> None:
        if self.device is not None and self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        on_device = stage not in HOST_STAGES
        if on_device:
            self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            if on_device:
                self._sync()
            with self._lock:
                self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start

    def reset(self) -> None:
        with self._lock:
            self.seconds = dict.fromkeys(STAGES, 0.0)
