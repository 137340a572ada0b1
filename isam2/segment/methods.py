"""The methods of the paper's tables from one video's masklet classes: I-SAM2, I-SAM2_base, base, SAM2-refiner."""

from __future__ import annotations

import torch

from isam2.segment.compose import paint
from isam2.segment.refine import refine

METHOD_NAMES = {"isam2": "I-SAM2", "isam2_base": "I-SAM2_base", "base": "base", "refiner": "SAM2-refiner"}


def method_predictions(
    row_class: torch.Tensor, id_maps: torch.Tensor, base: torch.Tensor | None = None
) -> dict[str, torch.Tensor]:
    """Semantic maps [T,H,W] uint8 per method key of METHOD_NAMES.

    Without a base prediction only I-SAM2 (uncovered pixels void); with one, also I-SAM2_base (uncovered
    pixels from the base), the base itself and the SAM2 refiner of the base (Eq. 1-2, same masklets).
    """
    preds = {"isam2": paint(row_class, id_maps)}
    if base is not None:
        preds["isam2_base"] = paint(row_class, id_maps, fill=base)
        preds["base"] = base.to(torch.uint8)
        preds["refiner"] = refine(preds["base"], id_maps)
    return preds
