"""The native automatic mask generator: sam2's AMG (crop_n_layers=0) on the device, masks as tensors, no RLE.

It does what `SAM2AutomaticMaskGenerator.generate` does for one whole-image crop, in the same order and with
the same arithmetic: a points_per_side^2 grid of single foreground points, the mask decoder with three masks
per point, the predicted-IoU filter (`> pred_iou_thresh`), the stability score of the logits at the frame's
original resolution (`>= stability_score_thresh`), boxes of the thresholded masks and box NMS
(`box_nms_thresh`), best predicted IoU first. sam2's boundary-box filter drops boxes near a crop's edge that
are not near the image's edge: with the whole image as the only crop it never drops anything, so it is left out.

Where it differs, only in cost: masks never leave the device (sam2 round-trips every candidate through RLE
on the CPU, which dominates when many masks survive), the IoU filter runs before upsampling, and only its
survivors are upsampled to the frame's size, in chunks that bound memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from isam2.masklets.sam2_adapter import (
    batched_mask_to_box,
    build_point_grid,
    calculate_stability_score,
    decoder_image_features,
    model_point_coords,
)

# Upsampled float logits alive at once (elements): the stability score runs over chunks of this size.
_UPSAMPLE_CHUNK_ELEMENTS = 1 << 26


def point_grid(points_per_side: int, orig_hw: tuple[int, int], device: torch.device) -> torch.Tensor:
    """[P, 2] pixel (x, y) points of sam2's grid, scaled to the frame in float64 as its AMG does."""
    h, w = orig_hw
    scaled = build_point_grid(points_per_side) * np.array([[w, h]])
    return torch.as_tensor(scaled, dtype=torch.float32, device=device)


class NativeMaskGenerator:
    """sam2's AMG settings (its argument names) on one SAM2 model; `generate(backbone_out, orig_hw)` -> masks, scores."""

    def __init__(
        self,
        model: Any,
        image_size: int,
        points_per_side: int = 16,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.6,
        stability_score_thresh: float = 0.8,
        stability_score_offset: float = 0.9,
        box_nms_thresh: float = 0.7,
    ):
        self.model = model
        self.image_size = int(image_size)
        self.points_per_side = int(points_per_side)
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)

    def decode_points(
        self, backbone_out: dict, orig_hw: tuple[int, int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Low-resolution logits [P*3, h, w] and predicted IoUs [P*3] of every grid point (point-major order)."""
        embed, high_res = decoder_image_features(self.model, backbone_out, self.image_size)
        points = point_grid(self.points_per_side, orig_hw, embed.device)
        image_pe = self.model.sam_prompt_encoder.get_dense_pe()
        logits, ious = [], []
        for s in range(0, len(points), self.points_per_batch):
            pts = model_point_coords(points[s : s + self.points_per_batch], orig_hw, self.image_size)
            labels = torch.ones(pts.shape[0], 1, dtype=torch.int, device=pts.device)
            sparse, dense = self.model.sam_prompt_encoder(
                points=(pts[:, None, :], labels), boxes=None, masks=None
            )
            low_res, iou, _, _ = self.model.sam_mask_decoder(
                image_embeddings=embed,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
                repeat_image=pts.shape[0] > 1,
                high_res_features=high_res,
            )
            logits.append(low_res.flatten(0, 1))
            ious.append(iou.flatten(0, 1))
        return torch.cat(logits), torch.cat(ious)

    def generate(self, backbone_out: dict, orig_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """(masks [n, H, W] bool, predicted IoU [n] float32) on the device, best predicted IoU first."""
        from torchvision.ops import batched_nms

        H, W = orig_hw
        low_res, ious = self.decode_points(backbone_out, orig_hw)
        if self.pred_iou_thresh > 0.0:
            keep = ious > self.pred_iou_thresh
            low_res, ious = low_res[keep], ious[keep]
        masks, scores = [], []
        step = max(1, _UPSAMPLE_CHUNK_ELEMENTS // max(1, H * W))
        for s in range(0, len(low_res), step):
            logits = F.interpolate(
                low_res[s : s + step, None].float(), (H, W), mode="bilinear", align_corners=False
            )[:, 0]
            chunk_ious = ious[s : s + step]
            if self.stability_score_thresh > 0.0:
                stability = calculate_stability_score(logits, 0.0, self.stability_score_offset)
                stable = stability >= self.stability_score_thresh
                logits, chunk_ious = logits[stable], chunk_ious[stable]
            masks.append(logits > 0.0)
            scores.append(chunk_ious)
        if not masks:
            return torch.zeros(0, H, W, dtype=torch.bool, device=low_res.device), ious.new_zeros(0).float()
        masks_all, scores_all = torch.cat(masks), torch.cat(scores)
        boxes = batched_mask_to_box(masks_all)
        keep = batched_nms(
            boxes.float(),
            scores_all.float(),
            torch.zeros_like(boxes[:, 0]),
            iou_threshold=self.box_nms_thresh,
        )
        return masks_all[keep], scores_all[keep].float()
