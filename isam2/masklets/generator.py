"""Masklet sources: a video in, per-frame masklets (masks, scores, track ids, Eq. 3 vectors) out.

`build_masklet_source(cfg.masklets, backbone)` picks one by `masklets.source`:

- `sam2` (`SAM2MaskletSource`): SAM2's automatic mask generator (AMG) on keyframes 0, window, 2*window, ...
  with sam2's own argument names and the paper's settings as defaults (points_per_side=16,
  pred_iou_thresh=0.6, stability_score_thresh=0.8, stability_score_offset=0.9, crop_n_layers=0); each
  keyframe masklet seeds an object of SAM2's video predictor (`add_new_mask` semantics), which propagates it
  through the rest of the window (`propagate_in_video(start=keyframe, max_frame_num_to_track=window-1)`).
  `window=1` runs AMG on every frame. Track ids are unique within a video: a running counter over the
  keyframe masklets (a masklet found again at the next keyframe starts a new track).
  Keyframe masks are AMG's (full resolution, score = AMG's predicted IoU); propagated masks are the video
  predictor's logits > 0 at the original resolution (score = the decoder's predicted IoU of the mask it
  chose). Masklets smaller than `min_area` pixels (and always empty ones: lost objects) are left out.
- `gt` (`GTMaskletSource`): oracle masklets, connected components of each ground-truth class with at least
  `min_area` pixels (`isam2.masklets.oracle`); score 1.0; tracks linked by same-class IoU >= 0.5.

ONE ENCODER FORWARD PER FRAME: every frame is encoded exactly once (`backbone.encode`), and those features
serve AMG (injected into sam2's `SAM2ImagePredictor` instead of its own `set_image`), the video predictor
(its `_get_image_feature` reads our per-window cache) and Eq. 3 pooling. Frames are streamed: a window's
features live only until its frames are yielded.

Every yielded `FrameMasklets` holds CPU tensors; a frame without masklets has n = 0 (normal).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from isam2.errors import ISAM2Error
from isam2.masklets.oracle import gt_components, link_tracks
from isam2.masklets.sam2_backbone import EncodedFrame, SAM2Backbone, import_sam2

import_sam2()

from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator  # noqa: E402
from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402

SOURCES = ("sam2", "gt")
# The paper's AMG settings (sam2 argument names) and our defaults for the rest.
SAM2_DEFAULTS: dict[str, Any] = {
    "window": 32,
    "points_per_side": 16,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.6,
    "stability_score_thresh": 0.8,
    "stability_score_offset": 0.9,
    "box_nms_thresh": 0.7,
    "crop_n_layers": 0,
    "min_area": 0,
    "offload_state_to_cpu": False,
}
GT_DEFAULTS: dict[str, Any] = {"min_area": 16, "track_iou": 0.5}


@dataclass
class FrameMasklets:
    """The masklets of one frame. All CPU tensors; n may be 0."""

    masks: torch.Tensor  # [n, H, W] bool, original frame resolution
    scores: torch.Tensor  # [n] float32, predicted IoU (1.0 for ground truth)
    tracks: torch.Tensor  # [n] int64, unique within a video
    features: torch.Tensor  # [n, d] float32, Eq. 3

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @classmethod
    def empty(cls, hw: tuple[int, int], dim: int) -> FrameMasklets:
        return cls(
            masks=torch.zeros(0, *hw, dtype=torch.bool),
            scores=torch.zeros(0, dtype=torch.float32),
            tracks=torch.zeros(0, dtype=torch.int64),
            features=torch.zeros(0, dim, dtype=torch.float32),
        )


def _settings(cfg: Mapping | None, defaults: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    if cfg is not None:
        for k in defaults:
            if k in cfg and cfg[k] is not None:
                out[k] = cfg[k]
    return out


def _pooling_levels(cfg: Mapping | None) -> list[int]:
    if cfg is None or cfg.get("pooling") is None:
        return [0]
    levels = cfg["pooling"].get("levels", [0])
    return [0] if levels is None else list(levels)


def _check_video(frames: np.ndarray, gt: np.ndarray | None) -> None:
    if (
        not isinstance(frames, np.ndarray)
        or frames.ndim != 4
        or frames.shape[-1] != 3
        or frames.dtype != np.uint8
    ):
        desc = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ISAM2Error(f"frames must be a uint8 array [T, H, W, 3], got {desc}")
    if gt is not None and (gt.ndim != 3 or tuple(gt.shape) != tuple(frames.shape[:3])):
        raise ISAM2Error(f"ground truth {gt.shape} does not match frames {frames.shape[:3]}")


class MaskletSource:
    """Turns a video into per-frame masklets; see the module docstring."""

    name = "base"

    def __init__(self, backbone: SAM2Backbone, settings: dict[str, Any]):
        self.backbone = backbone
        self.settings = settings

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    def describe(self) -> dict:
        """JSON-able settings that determine the masklets (for manifests)."""
        return {"source": self.name, **self.settings, "pooling_levels": list(self.backbone.pooling_levels)}

    def video(self, frames: np.ndarray, gt: np.ndarray | None = None) -> Iterator[FrameMasklets]:
        raise NotImplementedError

    def _result(self, enc: EncodedFrame, masks: torch.Tensor, scores, tracks) -> FrameMasklets:
        masks = torch.as_tensor(masks)
        n = int(masks.shape[0])
        if n == 0:
            return FrameMasklets.empty(enc.orig_hw, self.feature_dim)
        feats = self.backbone.pool(enc, masks)
        return FrameMasklets(
            masks=masks.to("cpu", torch.bool).clone(),
            scores=torch.as_tensor(scores, dtype=torch.float32).reshape(n).cpu().clone(),
            tracks=torch.as_tensor(tracks, dtype=torch.int64).reshape(n).cpu().clone(),
            features=feats.to("cpu", torch.float32).clone(),
        )


class GTMaskletSource(MaskletSource):
    name = "gt"

    def video(self, frames: np.ndarray, gt: np.ndarray | None = None) -> Iterator[FrameMasklets]:
        _check_video(frames, gt)
        if gt is None:
            raise ISAM2Error("masklets.source=gt needs ground-truth masks for every frame")
        min_area = int(self.settings["min_area"])
        prev = (np.zeros((0, *frames.shape[1:3]), bool), np.zeros(0, np.int64), np.zeros(0, np.int64))
        next_track = 0
        for t in range(len(frames)):
            enc = self.backbone.encode(frames[t])
            masks, classes = gt_components(gt[t], min_area)
            tracks, next_track = link_tracks(
                *prev, masks, classes, next_track, iou_thresh=float(self.settings["track_iou"])
            )
            prev = (masks, classes, tracks)
            yield self._result(enc, torch.from_numpy(masks), np.ones(len(masks), np.float32), tracks)


class _InjectedImagePredictor(SAM2ImagePredictor):
    """sam2's image predictor whose `set_image` takes the features we already computed for the frame."""

    def __init__(self, backbone: SAM2Backbone, **kwargs):
        with warnings.catch_warnings():  # sam2's transforms use torch.jit.script (deprecated, harmless)
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            super().__init__(backbone.model, **kwargs)
        S = backbone.image_size
        self._bb_feat_sizes = [(S // 4, S // 4), (S // 8, S // 8), (S // 16, S // 16)]
        self.isam2_backbone = backbone
        self.isam2_frame: EncodedFrame | None = None

    @torch.no_grad()
    def set_image(self, image) -> None:
        self.reset_predictor()
        hw = tuple(int(x) for x in np.asarray(image).shape[:2])
        enc = self.isam2_frame
        if enc is None or tuple(enc.orig_hw) != hw:
            # Only crops (crop_n_layers > 0) get here: they need a forward of their own.
            enc = self.isam2_backbone.encode(np.ascontiguousarray(image))
        self._orig_hw = [hw]
        _, vision_feats, _, _ = self.model._prepare_backbone_features(enc.backbone_out)
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        feats = [
            feat.permute(1, 2, 0).reshape(1, -1, *feat_size)
            for feat, feat_size in zip(vision_feats[::-1], self._bb_feat_sizes[::-1])
        ][::-1]
        self._features = {"image_embed": feats[-1], "high_res_feats": feats[:-1]}
        self._is_image_set = True


class SAM2MaskletSource(MaskletSource):
    name = "sam2"

    def __init__(self, backbone: SAM2Backbone, settings: dict[str, Any]):
        super().__init__(backbone, settings)
        s = settings
        try:
            self.window = int(s["window"])
            if self.window < 1:
                raise ValueError
        except (TypeError, ValueError):
            raise ISAM2Error(f"masklets.window={s['window']!r} must be an integer >= 1") from None
        for key in ("pred_iou_thresh", "stability_score_thresh", "box_nms_thresh"):
            if not 0.0 <= float(s[key]) <= 1.0:
                raise ISAM2Error(f"masklets.{key}={s[key]} must be in [0, 1]")
        if int(s["points_per_side"]) < 1 or int(s["points_per_batch"]) < 1:
            raise ISAM2Error("masklets.points_per_side and masklets.points_per_batch must be >= 1")
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*torch.jit.script.*", category=FutureWarning)
            self.amg = self._make_amg(s)
        self.amg.predictor = _InjectedImagePredictor(backbone)
        self.predictor = backbone.model

    def _make_amg(self, s: dict[str, Any]) -> SAM2AutomaticMaskGenerator:
        return SAM2AutomaticMaskGenerator(
            self.backbone.model,
            points_per_side=int(s["points_per_side"]),
            points_per_batch=int(s["points_per_batch"]),
            pred_iou_thresh=float(s["pred_iou_thresh"]),
            stability_score_thresh=float(s["stability_score_thresh"]),
            stability_score_offset=float(s["stability_score_offset"]),
            box_nms_thresh=float(s["box_nms_thresh"]),
            crop_n_layers=int(s["crop_n_layers"]),
            output_mode="binary_mask",
        )

    def keyframe_masks(self, frame: np.ndarray, enc: EncodedFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """AMG on one frame with its precomputed features -> (masks [n,H,W] bool, predicted IoU [n])."""
        H, W = frame.shape[:2]
        self.amg.predictor.isam2_frame = enc
        try:
            with self.backbone.context():
                anns = self.amg.generate(frame)
        finally:
            self.amg.predictor.isam2_frame = None
            self.amg.predictor.reset_predictor()
        if not anns:
            return torch.zeros(0, H, W, dtype=torch.bool), torch.zeros(0)
        masks = torch.from_numpy(np.stack([np.asarray(a["segmentation"], dtype=bool) for a in anns]))
        scores = torch.tensor([float(a["predicted_iou"]) for a in anns], dtype=torch.float32)
        return masks, scores

    def _keep(self, masks: torch.Tensor) -> torch.Tensor:
        area = masks.flatten(1).sum(1)
        return area >= max(1, int(self.settings["min_area"]))

    def video(self, frames: np.ndarray, gt: np.ndarray | None = None) -> Iterator[FrameMasklets]:
        _check_video(frames, gt)
        next_track = 0
        for start in range(0, len(frames), self.window):
            clip = frames[start : start + self.window]
            next_track = yield from self._window(clip, next_track)

    def _window(self, clip: np.ndarray, next_track: int):
        """Masklets of one window (keyframe + propagation); returns the next free track id."""
        L = len(clip)
        cache: dict[int, EncodedFrame] = {}
        encoded: set[int] = set()

        def features(i: int) -> EncodedFrame:
            if i not in cache:
                if i in encoded:  # would be a second forward of the same frame
                    raise RuntimeError(f"frame {i} of the window was needed again after it was released")
                cache[i] = self.backbone.encode(clip[i])
                encoded.add(i)
            return cache[i]

        enc0 = features(0)
        masks, scores = self.keyframe_masks(clip[0], enc0)
        keep = self._keep(masks)
        masks, scores = masks[keep], scores[keep]
        n = int(masks.shape[0])
        tracks = torch.arange(next_track, next_track + n, dtype=torch.int64)
        next_track += n
        first = self._result(enc0, masks, scores, tracks)

        if n == 0 or L == 1:
            yield first
            cache.clear()
            for i in range(1, L):  # nothing to propagate; still one forward per frame
                yield self._result(features(i), torch.zeros(0, *clip.shape[1:3], dtype=torch.bool), [], [])
                cache.clear()
            return next_track

        model = self.predictor
        state = model.isam2_state(
            L,
            clip.shape[1:3],
            lambda i: features(i).backbone_out,
            offload_state_to_cpu=bool(self.settings["offload_state_to_cpu"]),
        )
        obj_ids = tracks.tolist()
        with self.backbone.context():
            model.add_new_masks(state, 0, obj_ids, masks)
        yield first
        frames_iter = model.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=L - 1)
        while True:
            # The contexts are entered around each step only, never held across our own `yield`.
            with self.backbone.context(), _quiet_tqdm():
                try:
                    frame_idx, ids, video_res_masks = next(frames_iter)
                except StopIteration:
                    break
                if frame_idx == 0:  # the keyframe: already yielded from AMG at full resolution
                    continue
                m = video_res_masks[:, 0] > 0.0
                keep = self._keep(m)
                m = m[keep]
                outputs = state["output_dict_per_obj"]
                ious = [
                    outputs[state["obj_id_to_idx"][o]]["non_cond_frame_outputs"][frame_idx]["isam2_iou"]
                    for o in ids
                ]
                ious = torch.stack(ious).to("cpu", torch.float32)  # one transfer per frame
            keep = keep.cpu()
            out = self._result(features(frame_idx), m, ious[keep], torch.as_tensor(ids)[keep])
            for i in [i for i in cache if i <= frame_idx]:
                del cache[i]
            yield out
        del state
        cache.clear()
        return next_track


@contextlib.contextmanager
def _quiet_tqdm():
    """sam2's propagate_in_video draws a tqdm bar per call (per window here); silence it while stepping."""
    import sam2.sam2_video_predictor as svp

    saved = svp.tqdm
    svp.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        svp.tqdm = saved


def build_masklet_source(masklets_cfg: Mapping | None, backbone: SAM2Backbone) -> MaskletSource:
    """The masklet source of `cfg.masklets` (source: sam2 | gt) on `backbone`.

    Also sets `backbone.pooling_levels` from `masklets.pooling.levels` (default [0]: vision_features),
    so `backbone.feature_dim` and `source.feature_dim` give the length of the vectors it yields.
    """
    source = "sam2" if masklets_cfg is None else str(masklets_cfg.get("source", "sam2"))
    if source not in SOURCES:
        raise ISAM2Error(f"masklets.source={source!r} is not one of {', '.join(SOURCES)}")
    backbone.pooling_levels = _pooling_levels(masklets_cfg)
    if source == "gt":
        return GTMaskletSource(backbone, _settings(masklets_cfg, GT_DEFAULTS))
    return SAM2MaskletSource(backbone, _settings(masklets_cfg, SAM2_DEFAULTS))
