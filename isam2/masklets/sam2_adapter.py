"""The one module that touches sam2's private names (supported: sam2 1.1.0); it imports nothing of isam2.

What it owns, and why each piece reaches inside sam2:
- `import_sam2`: `import sam2` initialises a global Hydra that breaks a later `@hydra.main`; undo it.
- `check_sam2_version`: every override below is written against one sam2 release; another one is refused
  (or, with ISAM2_ALLOW_UNTESTED_SAM2=1, allowed with a warning).
- `FrozenSAM2VideoPredictor`: sam2's video predictor fed with features computed elsewhere (its
  `_get_image_feature`), keeping the decoder's predicted IoU, seeding many masks at once, and tracking a
  batch of objects through one `track_step` per frame (`seed_batch` / `track_batch`).
- `decoder_image_features`, `model_point_coords`: what `SAM2ImagePredictor.set_image` and its `_transforms`
  do, for the native mask generator and the injected image predictor.
- `InjectedImagePredictor`, `stock_amg`: sam2's own automatic mask generator on our features (the reference).
- `quiet_tqdm`: `propagate_in_video` draws a tqdm bar per call; silence it.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

SUPPORTED_SAM2 = ("1.1.0",)
ALLOW_UNTESTED_ENV = "ISAM2_ALLOW_UNTESTED_SAM2"


class UnsupportedSAM2Version(RuntimeError):
    """The installed sam2 is not one this adapter was written against."""


def import_sam2():
    """`import sam2` without leaving sam2's global Hydra behind (it would break a later `@hydra.main`)."""
    from hydra.core.global_hydra import GlobalHydra

    was_initialized = GlobalHydra.instance().is_initialized()
    import sam2

    if not was_initialized and GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    return sam2


import_sam2()

from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator  # noqa: E402
from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402
from sam2.sam2_video_predictor import SAM2VideoPredictor  # noqa: E402
from sam2.utils.amg import (  # noqa: E402, F401  (public helpers the native AMG shares with sam2's)
    batched_mask_to_box,
    build_point_grid,
    calculate_stability_score,
)


def sam2_version() -> str:
    try:
        return importlib.metadata.version("sam2")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a source checkout
        return "unknown"


def check_sam2_version() -> str:
    """The installed sam2 version; raises UnsupportedSAM2Version unless it is supported or opted in."""
    version = sam2_version()
    if version in SUPPORTED_SAM2:
        return version
    msg = f"sam2 {version} is installed, but isam2's sam2 adapter supports only {', '.join(SUPPORTED_SAM2)}"
    if os.environ.get(ALLOW_UNTESTED_ENV, "") not in ("", "0"):
        warnings.warn(f"{msg}; running anyway because {ALLOW_UNTESTED_ENV} is set", stacklevel=2)
        return version
    raise UnsupportedSAM2Version(
        f"{msg}; install sam2==1.1.0, or set {ALLOW_UNTESTED_ENV}=1 to try this version anyway"
    )


def sam2_has_C() -> bool:
    """Whether sam2's CUDA extension (connected components for hole filling) was built."""
    try:
        from sam2 import _C  # noqa: F401
    except ImportError:
        return False
    return True


def _feat_sizes(image_size: int) -> list[tuple[int, int]]:
    S = image_size
    return [(S // 4, S // 4), (S // 8, S // 8), (S // 16, S // 16)]


class FrozenSAM2VideoPredictor(SAM2VideoPredictor):
    """sam2's video predictor fed with features computed elsewhere (never runs the image encoder itself).

    - `isam2_state(num_frames, (H, W), feature_fn)` makes an inference state without a video file:
      `feature_fn(frame_idx) -> backbone_out` (our cache, which encodes each frame once) replaces
      `cached_features` in `_get_image_feature`.
    - Each tracked frame's output keeps the decoder's predicted IoU of the chosen mask per object, "isam2_iou" [B].
    - Reference path (sam2's own, one object at a time): `add_new_masks` then `propagate_in_video`.
    - Batched path: `seed_batch` then `track_batch` per frame. A batch of B objects that share their
      conditioning frame is exactly what `track_step` computes per object, stacked: memory attention, the
      mask decoder and the memory encoder never mix batch elements.
    """

    def isam2_state(
        self,
        num_frames: int,
        video_hw: tuple[int, int],
        feature_fn: Callable[[int], dict],
        offload_state_to_cpu: bool = False,
    ) -> dict:
        device = self.device
        return {
            "images": None,  # never read: `_get_image_feature` below takes features from feature_fn
            "isam2_feature_fn": feature_fn,
            "num_frames": int(num_frames),
            "offload_video_to_cpu": False,
            "offload_state_to_cpu": offload_state_to_cpu,
            "video_height": int(video_hw[0]),
            "video_width": int(video_hw[1]),
            "device": device,
            "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {},
            "constants": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
        }

    def _get_image_feature(self, inference_state, frame_idx, batch_size):
        backbone_out = inference_state["isam2_feature_fn"](frame_idx)
        expanded = {
            "backbone_fpn": [f.expand(batch_size, -1, -1, -1) for f in backbone_out["backbone_fpn"]],
            "vision_pos_enc": [p.expand(batch_size, -1, -1, -1) for p in backbone_out["vision_pos_enc"]],
        }
        features = self._prepare_backbone_features(expanded)
        return (None, *features)  # the image itself is never needed downstream

    def _forward_sam_heads(self, *args, **kwargs):
        out = super()._forward_sam_heads(*args, **kwargs)
        self._isam2_last_ious = out[2]
        return out

    def _run_single_frame_inference(self, *args, **kwargs):
        self._isam2_last_ious = None
        compact, pred_masks = super()._run_single_frame_inference(*args, **kwargs)
        ious = self._isam2_last_ious  # [B, M]; the decoder keeps the mask of highest predicted IoU
        if ious is None:
            best = torch.ones(pred_masks.shape[0], device=pred_masks.device)
        else:
            best = ious.float().amax(dim=-1)
        compact["isam2_iou"] = best  # [B] on the device (no sync here)
        return compact, pred_masks

    def mask_inputs(self, masks: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Boolean masks [n, H, W] -> [n, 1, S, S] float mask prompts, resized as sam2's `add_new_mask` does."""
        m = masks[:, None].to(device, torch.float32)
        if m.shape[-2:] != (self.image_size, self.image_size):
            m = F.interpolate(
                m,
                size=(self.image_size, self.image_size),
                mode="bilinear",
                align_corners=False,
                antialias=True,
            )
            m = (m >= 0.5).float()
        return m

    # ------------------------------------------------------------ reference: one object at a time
    @torch.inference_mode()
    def add_new_masks(self, inference_state, frame_idx: int, obj_ids: Sequence[int], masks: torch.Tensor):
        """Seed objects `obj_ids` with boolean masks [n, H, W] on `frame_idx` (sam2's `add_new_mask` per object,
        without re-consolidating every object at video resolution after each one)."""
        if len(obj_ids) != masks.shape[0]:
            raise ValueError("one mask per object id")
        m = self.mask_inputs(masks, inference_state["device"])
        for k, obj_id in enumerate(obj_ids):
            obj_idx = self._obj_id_to_idx(inference_state, obj_id)
            inference_state["mask_inputs_per_obj"][obj_idx][frame_idx] = m[k : k + 1]
            inference_state["point_inputs_per_obj"][obj_idx].pop(frame_idx, None)
            if frame_idx in inference_state["frames_tracked_per_obj"][obj_idx]:
                raise ValueError(f"object {obj_id} was already tracked on frame {frame_idx}")
            current_out, _ = self._run_single_frame_inference(
                inference_state=inference_state,
                output_dict=inference_state["output_dict_per_obj"][obj_idx],
                frame_idx=frame_idx,
                batch_size=1,
                is_init_cond_frame=True,
                point_inputs=None,
                mask_inputs=m[k : k + 1],
                reverse=False,
                run_mem_encoder=False,
            )
            inference_state["temp_output_dict_per_obj"][obj_idx]["cond_frame_outputs"][frame_idx] = (
                current_out
            )

    def per_object_ious(self, inference_state, obj_ids: Sequence[int], frame_idx: int) -> torch.Tensor:
        """[n] predicted IoUs that `propagate_in_video` kept for `obj_ids` on a tracked (non-key) frame."""
        outputs = inference_state["output_dict_per_obj"]
        idx = inference_state["obj_id_to_idx"]
        return torch.cat(
            [outputs[idx[o]]["non_cond_frame_outputs"][frame_idx]["isam2_iou"].reshape(1) for o in obj_ids]
        )

    # ------------------------------------------------------------ batched: all objects in one track step
    def _batch_step(self, inference_state, memory: dict, frame_idx: int, B: int, mask_inputs):
        """sam2's single-frame step for a batch: conditioning on `mask_inputs` (memory encoded later, as
        `propagate_in_video_preflight` does), or tracking from `memory` (memory encoded now)."""
        seeding = mask_inputs is not None
        return self._run_single_frame_inference(
            inference_state=inference_state,
            output_dict=memory,
            frame_idx=frame_idx,
            batch_size=B,
            is_init_cond_frame=seeding,
            point_inputs=None,
            mask_inputs=mask_inputs,
            reverse=False,
            run_mem_encoder=not seeding,
        )

    @torch.inference_mode()
    def seed_batch(self, inference_state, frame_idx: int, masks: torch.Tensor) -> dict:
        """Condition a batch of objects on boolean masks [B, H, W] of `frame_idx`; returns the batch's memory.

        The same steps as `add_new_mask` per object followed by `propagate_in_video_preflight`: the mask
        prompt gives the frame's output, then the memory encoder runs on its low-resolution logits
        upsampled to the model's size, binarised as for a user's input.
        """
        B = int(masks.shape[0])
        memory = {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}
        mask_inputs = self.mask_inputs(masks, inference_state["device"])
        out, _ = self._batch_step(inference_state, memory, frame_idx, B, mask_inputs)
        high_res = F.interpolate(
            out["pred_masks"].to(inference_state["device"]),
            size=(self.image_size, self.image_size),
            mode="bilinear",
            align_corners=False,
        )
        out["maskmem_features"], out["maskmem_pos_enc"] = self._run_memory_encoder(
            inference_state=inference_state,
            frame_idx=frame_idx,
            batch_size=B,
            high_res_masks=high_res,
            object_score_logits=out["object_score_logits"],
            is_mask_from_pts=True,
        )
        memory["cond_frame_outputs"][frame_idx] = out
        return memory

    @torch.inference_mode()
    def track_batch(self, inference_state, memory: dict, frame_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        """One frame for a seeded batch: (logits [B, H, W] at the video's resolution, predicted IoU [B])."""
        B = next(iter(memory["cond_frame_outputs"].values()))["obj_ptr"].shape[0]
        out, pred_masks = self._batch_step(inference_state, memory, frame_idx, B, None)
        out["pred_masks"] = None  # read once, here: keeping it would hold B low-res maps per frame
        memory["non_cond_frame_outputs"][frame_idx] = out
        _, video_res = self._get_orig_video_res_output(inference_state, pred_masks)
        return video_res[:, 0], out["isam2_iou"]


def decoder_image_features(model: Any, backbone_out: dict, image_size: int) -> tuple[torch.Tensor, list]:
    """(image_embed [1, C, h, w], high_res_feats) for the mask decoder, exactly as `SAM2ImagePredictor.set_image`."""
    _, vision_feats, _, _ = model._prepare_backbone_features(backbone_out)
    if model.directly_add_no_mem_embed:
        vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
    feats = [
        feat.permute(1, 2, 0).reshape(1, -1, *feat_size)
        for feat, feat_size in zip(vision_feats[::-1], _feat_sizes(image_size)[::-1])
    ][::-1]
    return feats[-1], feats[:-1]


def model_point_coords(points_xy: torch.Tensor, orig_hw: tuple[int, int], image_size: int) -> torch.Tensor:
    """Pixel (x, y) points of the original frame -> the model's input coordinates (`_transforms.transform_coords`)."""
    h, w = orig_hw
    coords = points_xy.clone()
    coords[..., 0] = coords[..., 0] / w
    coords[..., 1] = coords[..., 1] / h
    return coords * image_size


class InjectedImagePredictor(SAM2ImagePredictor):
    """sam2's image predictor whose `set_image` takes features we already computed for the frame.

    Set `isam2_backbone_out` (and `isam2_hw`, the frame's size) before sam2's AMG calls `set_image`; an image
    of another size (a crop, crop_n_layers > 0) is encoded by `encode_fn(image) -> backbone_out`.
    """

    def __init__(self, model: Any, image_size: int, encode_fn: Callable[[np.ndarray], dict], **kwargs):
        with warnings.catch_warnings():  # sam2's transforms use torch.jit.script (deprecated, harmless)
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            super().__init__(model, **kwargs)
        self._bb_feat_sizes = _feat_sizes(image_size)
        self.isam2_image_size = image_size
        self.isam2_encode_fn = encode_fn
        self.isam2_backbone_out: dict | None = None
        self.isam2_hw: tuple[int, int] | None = None

    @torch.no_grad()
    def set_image(self, image) -> None:
        self.reset_predictor()
        hw = tuple(int(x) for x in np.asarray(image).shape[:2])
        backbone_out = self.isam2_backbone_out
        if backbone_out is None or self.isam2_hw != hw:
            backbone_out = self.isam2_encode_fn(np.ascontiguousarray(image))
        self._orig_hw = [hw]
        embed, high_res = decoder_image_features(self.model, backbone_out, self.isam2_image_size)
        self._features = {"image_embed": embed, "high_res_feats": high_res}
        self._is_image_set = True

    def release(self) -> None:
        self.isam2_backbone_out = None
        self.isam2_hw = None
        self.reset_predictor()


def stock_amg(model: Any, image_size: int, **settings: Any) -> SAM2AutomaticMaskGenerator:
    """sam2's own SAM2AutomaticMaskGenerator (with its own encoder pass per image) at any image size."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        amg = SAM2AutomaticMaskGenerator(model, **settings)
    amg.predictor._bb_feat_sizes = _feat_sizes(image_size)
    return amg


def image_predictor(model: Any, image_size: int) -> SAM2ImagePredictor:
    """sam2's own SAM2ImagePredictor (its own encoder pass in `set_image`) at any image size."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
        predictor = SAM2ImagePredictor(model)
    predictor._bb_feat_sizes = _feat_sizes(image_size)
    return predictor


def predictor_features(predictor: SAM2ImagePredictor) -> dict:
    """The features a `SAM2ImagePredictor` holds after `set_image` (image_embed, high_res_feats)."""
    return predictor._features


@contextlib.contextmanager
def quiet_tqdm() -> Iterator[None]:
    """sam2's propagate_in_video draws a tqdm bar per call (per window here); silence it while stepping."""
    import sam2.sam2_video_predictor as svp

    saved = svp.tqdm
    svp.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        svp.tqdm = saved
