"""isam2: a frozen SAM2 turned into a video semantic segmentor (I-SAM2)."""

from __future__ import annotations

from typing import Any

__all__ = ["Segmenter"]


def __getattr__(name: str) -> Any:
    # `from isam2 import Segmenter` without importing torch and sam2 for every `import isam2.<stage>`
    if name == "Segmenter":
        from isam2.segmenter import Segmenter

        return Segmenter
    raise AttributeError(f"module 'isam2' has no attribute {name!r}")
