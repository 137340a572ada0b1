"""Model stage: the masklet head and the LightningModule that trains and evaluates it."""

from isam2.model.head import MLPHead
from isam2.model.module import MaskletClassifier, check_compatible

__all__ = ["MLPHead", "MaskletClassifier", "check_compatible"]
