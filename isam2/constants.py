"""Constants shared by every stage: the one label value that means void / no class / no prediction."""

from __future__ import annotations

VOID = (
    255  # void ground truth, "no target" of a masklet, "no prediction" pixel: never a class (classes < 255)
)
