"""Constants shared by every stage: the one label value that means void / no class / no prediction."""

from __future__ import annotations

# void ground truth, "no target" of a masklet, "no prediction" pixel: never a class (classes < 255)
VOID = 255
# The ImageNet statistics that SAM2 and the other encoders normalise frames with (RGB, values in [0, 1]).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
