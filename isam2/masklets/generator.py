"""Masklet sources: a video in, per-frame masklets (masks, scores, track ids, Eq. 3 vectors) out.

`build_masklet_source(cfg.masklets, backbone)` picks one by `masklets.source`:

- `sam2` (`SAM2MaskletSource`): an automatic mask generator (AMG) on keyframes 0, window, 2*window, ...
  with sam2's own argument names and the paper's settings as defaults (points_per_side=16,
  pred_iou_thresh=0.6, stability_score_thresh=0.8, stability_score_offset=0.9, crop_n_layers=0); each
  keyframe masklet seeds an object of SAM2's video memory, which propagates it through the rest of the
  window. `window=1` runs AMG on every frame. Track ids are unique within a video: a running counter over
  the keyframe masklets (a masklet found again at the next keyframe starts a new track).
  Keyframe masks are AMG's (full resolution, score = its predicted IoU); propagated masks are the video
  predictor's logits > 0 at the original resolution (score = the decoder's predicted IoU of the mask it
  chose). Masklets smaller than `min_area` pixels (and always empty ones: lost objects) are left out.
  Two engines, each with sam2's own as the reference (equal up to floating point, tested):
  `amg=native` (`isam2.masklets.amg`, on the device, no RLE) or `sam2` (SAM2AutomaticMaskGenerator);
  `propagation=batched` (all objects of a window in one track step per frame, `objects_per_batch` at a
  time) or `per_object` (sam2's `propagate_in_video`, one object after another).
- `gt` (`GTMaskletSource`): oracle masklets, connected components of each ground-truth class with at least
  `min_area` pixels (`isam2.masklets.oracle`); score 1.0; tracks linked by same-class IoU >= 0.5.

ONE ENCODER FORWARD PER FRAME: every frame is encoded exactly once, `frames_per_batch` frames per forward,
and those features serve the AMG, the video memory and Eq. 3 pooling. A window's features live only until
its frames are yielded.

Every yielded `FrameMasklets` holds tensors on the backbone's device; a frame without masklets has n = 0
(normal). The consumer copies back what it keeps (the store: pooled vectors, per-row numbers, id maps).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from isam2.data.streams import Chunks, as_chunks, rechunk
from isam2.errors import ISAM2Error
from isam2.logs import get_logger
from isam2.masklets.amg import NativeMaskGenerator
from isam2.masklets.oracle import gt_components, link_tracks
from isam2.masklets.pooling import mask_areas
from isam2.masklets.sam2_adapter import InjectedImagePredictor, quiet_tqdm, stock_amg
from isam2.masklets.sam2_backbone import EncodedFrame, SAM2Backbone
from isam2.masklets.settings import masklet_settings, positive_int
from isam2.masklets.timing import StageClock

log = get_logger(__name__)


@dataclass
class FrameMasklets:
    """The masklets of one frame, on the backbone's device; n may be 0."""

    masks: torch.Tensor  # [n, H, W] bool, original frame resolution
    scores: torch.Tensor  # [n] float32, predicted IoU (1.0 for ground truth)
    tracks: torch.Tensor  # [n] int64, unique within a video
    features: torch.Tensor  # [n, d] float32, Eq. 3

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @classmethod
    def empty(cls, hw: tuple[int, int], dim: int, device: torch.device | str = "cpu") -> FrameMasklets:
        return cls(
            masks=torch.zeros(0, *hw, dtype=torch.bool, device=device),
            scores=torch.zeros(0, dtype=torch.float32, device=device),
            tracks=torch.zeros(0, dtype=torch.int64, device=device),
            features=torch.zeros(0, dim, dtype=torch.float32, device=device),
        )


class WindowFeatures:
    """The encoded frames of one clip: `get(i)` encodes frames i.. i+frames_per_batch-1 in one forward on first
    use; `release(i)` frees frames <= i. Asking again for a released frame is a bug (a second forward)."""

    def __init__(self, backbone: SAM2Backbone, clip: np.ndarray, frames_per_batch: int, clock: StageClock):
        self.backbone, self.clip, self.batch, self.clock = backbone, clip, frames_per_batch, clock
        self.cache: dict[int, EncodedFrame] = {}
        self.next_unencoded = 0

    def get(self, i: int) -> EncodedFrame:
        if i not in self.cache:
            if i < self.next_unencoded:
                raise RuntimeError(f"frame {i} of the window was needed again after it was released")
            stop = min(len(self.clip), i + self.batch)
            with self.clock("encode"):
                encoded = self.backbone.encode_batch(self.clip[i:stop])
            self.cache.update(zip(range(i, stop), encoded))
            self.next_unencoded = stop
        return self.cache[i]

    def release(self, upto: int) -> None:
        for i in [i for i in self.cache if i <= upto]:
            del self.cache[i]


class MaskletSource:
    """Turns a video into per-frame masklets; see the module docstring."""

    name = "base"

    def __init__(self, backbone: SAM2Backbone, settings: dict[str, Any]):
        self.backbone = backbone
        self.settings = settings
        self.frames_per_batch = positive_int(settings, "frames_per_batch")
        self.clock = StageClock()  # replace with an enabled one to time the stages

    @property
    def feature_dim(self) -> int:
        return self.backbone.feature_dim

    @property
    def chunk_size(self) -> int:
        """Frames per chunk that a streamed video is best read in (the source regroups any chunking)."""
        return self.frames_per_batch

    def describe(self) -> dict:
        """JSON-able settings that determine the masklets (for manifests)."""
        return {"source": self.name, **self.settings, "pooling_levels": list(self.backbone.pooling_levels)}

    def video(self, frames: np.ndarray | Chunks, gt: np.ndarray | None = None) -> Iterator[FrameMasklets]:
        """Masklets of every frame in order. `frames`: a whole video [T,H,W,3] uint8 (with `gt` [T,H,W] or
        None), or an iterable of consecutive (frames, gt) chunks of one video, read as they come: a long
        video then never has more than a window of frames in memory."""
        raise NotImplementedError

    def _result(self, enc: EncodedFrame, masks: torch.Tensor, scores, tracks) -> FrameMasklets:
        """Pool Eq. 3 for a frame's masks (on the device) and package them; nothing leaves the device."""
        device = self.backbone.device
        n = int(masks.shape[0])
        if n == 0:
            return FrameMasklets.empty(enc.orig_hw, self.feature_dim, device)
        masks = masks.to(device, torch.bool)
        with self.clock("pool"):
            feats = self.backbone.pool(enc, masks)
        # clones leave inference mode: the consumer may use them anywhere
        return FrameMasklets(
            masks=masks.clone(),
            scores=torch.as_tensor(scores).to(device, torch.float32).reshape(n).clone(),
            tracks=torch.as_tensor(tracks).to(device, torch.int64).reshape(n).clone(),
            features=feats.to(torch.float32).clone(),
        )


class GTMaskletSource(MaskletSource):
    name = "gt"

    def video(self, frames: np.ndarray | Chunks, gt: np.ndarray | None = None) -> Iterator[FrameMasklets]:
        min_area = int(self.settings["min_area"])
        prev: tuple | None = None
        next_track = 0
        for clip, clip_gt in rechunk(as_chunks(frames, gt), self.frames_per_batch):
            if clip_gt is None:
                raise ISAM2Error("masklets.source=gt needs ground-truth masks for every frame")
            if prev is None:
                prev = (np.zeros((0, *clip.shape[1:3]), bool), np.zeros(0, np.int64), np.zeros(0, np.int64))
            window = WindowFeatures(self.backbone, clip, self.frames_per_batch, self.clock)
            for t in range(len(clip)):
                enc = window.get(t)
                masks, classes = gt_components(clip_gt[t], min_area)
                tracks, next_track = link_tracks(
                    *prev, masks, classes, next_track, iou_thresh=float(self.settings["track_iou"])
                )
                prev = (masks, classes, tracks)
                out = self._result(enc, torch.from_numpy(masks), np.ones(len(masks), np.float32), tracks)
                window.release(t)
                yield out


class SAM2MaskletSource(MaskletSource):
    name = "sam2"

    def __init__(self, backbone: SAM2Backbone, settings: dict[str, Any]):
        super().__init__(backbone, settings)
        s = settings  # checked by isam2.masklets.settings.masklet_settings
        self.window = int(s["window"])
        self.objects_per_batch = None if s["objects_per_batch"] is None else int(s["objects_per_batch"])
        self.amg_engine = str(s["amg"])
        if self.amg_engine == "native" and int(s["crop_n_layers"]) > 0:
            log.info(
                "masklets.crop_n_layers > 0: the native AMG covers the whole image only; using sam2's AMG"
            )
            self.amg_engine = "sam2"
        amg_settings = {
            "points_per_side": int(s["points_per_side"]),
            "points_per_batch": int(s["points_per_batch"]),
            "pred_iou_thresh": float(s["pred_iou_thresh"]),
            "stability_score_thresh": float(s["stability_score_thresh"]),
            "stability_score_offset": float(s["stability_score_offset"]),
            "box_nms_thresh": float(s["box_nms_thresh"]),
        }
        if self.amg_engine == "native":
            self.amg: Any = NativeMaskGenerator(backbone.model, backbone.image_size, **amg_settings)
        else:
            self.amg = stock_amg(
                backbone.model,
                backbone.image_size,
                crop_n_layers=int(s["crop_n_layers"]),
                output_mode="binary_mask",
                **amg_settings,
            )
            self.amg.predictor = InjectedImagePredictor(
                backbone.model, backbone.image_size, lambda image: backbone.encode(image).backbone_out
            )
        self.predictor = backbone.model

    @property
    def chunk_size(self) -> int:
        return self.window  # one keyframe window per chunk

    def keyframe_masks(self, frame: np.ndarray, enc: EncodedFrame) -> tuple[torch.Tensor, torch.Tensor]:
        """AMG on one frame with its precomputed features -> (masks [n,H,W] bool, predicted IoU [n]) on the device."""
        H, W = frame.shape[:2]
        device = self.backbone.device
        if self.amg_engine == "native":
            with self.backbone.context():
                return self.amg.generate(enc.backbone_out, (H, W))
        self.amg.predictor.isam2_backbone_out, self.amg.predictor.isam2_hw = enc.backbone_out, (H, W)
        try:
            with self.backbone.context():
                anns = self.amg.generate(frame)
        finally:
            self.amg.predictor.release()
        if not anns:
            return torch.zeros(0, H, W, dtype=torch.bool, device=device), torch.zeros(0, device=device)
        masks = torch.from_numpy(np.stack([np.asarray(a["segmentation"], dtype=bool) for a in anns]))
        scores = torch.tensor([float(a["predicted_iou"]) for a in anns], dtype=torch.float32)
        return masks.to(device), scores.to(device)

    def _keep(self, masks: torch.Tensor) -> torch.Tensor:
        return mask_areas(masks) >= max(1, int(self.settings["min_area"]))

    def video(self, frames: np.ndarray | Chunks, gt: np.ndarray | None = None) -> Iterator[FrameMasklets]:
        next_track = 0
        for clip, _ in rechunk(as_chunks(frames, gt), self.window):  # one chunk per keyframe window
            next_track = yield from self._window(clip, next_track)

    def _window(self, clip: np.ndarray, next_track: int):
        """Masklets of one window (keyframe + propagation); returns the next free track id."""
        L = len(clip)
        window = WindowFeatures(self.backbone, clip, self.frames_per_batch, self.clock)
        enc0 = window.get(0)
        with self.clock("amg"):
            masks, scores = self.keyframe_masks(clip[0], enc0)
        keep = self._keep(masks)
        masks, scores = masks[keep], scores[keep]
        n = int(masks.shape[0])
        tracks = torch.arange(next_track, next_track + n, dtype=torch.int64, device=masks.device)
        yield self._result(enc0, masks, scores, tracks)  # frame 0 stays encoded: seeding needs it
        if n == 0:  # nothing to propagate; still one forward per frame
            window.release(0)
            for i in range(1, L):
                out = self._result(window.get(i), torch.zeros(0, *clip.shape[1:3], dtype=torch.bool), [], [])
                window.release(i)
                yield out
            return next_track + n
        propagate = self._batched if self.settings["propagation"] == "batched" else self._per_object
        for frame_idx, logits, ious in propagate(window, masks, tracks, L):
            m = logits > 0.0
            keep = self._keep(m)
            out = self._result(window.get(frame_idx), m[keep], ious[keep], tracks[keep])
            window.release(frame_idx)
            yield out
        return next_track + n

    def _state(self, window: WindowFeatures, L: int) -> dict:
        return self.predictor.isam2_state(
            L,
            window.clip.shape[1:3],
            lambda i: window.get(i).backbone_out,
            offload_state_to_cpu=bool(self.settings["offload_state_to_cpu"]),
        )

    def _batched(self, window: WindowFeatures, masks: torch.Tensor, tracks: torch.Tensor, L: int):
        """All objects in one track step per frame (`objects_per_batch` at a time): (frame, logits, IoUs)."""
        model, n = self.predictor, int(masks.shape[0])
        state = self._state(window, L)
        step = self.objects_per_batch or n
        with self.backbone.context(), self.clock("propagate"):
            memories = [model.seed_batch(state, 0, masks[s : s + step]) for s in range(0, n, step)]
        for frame_idx in range(1, L):
            window.get(frame_idx)  # encoded here, so that its time counts as encoding
            # The contexts are entered around each step only, never held across our own `yield`.
            with self.backbone.context(), self.clock("propagate"):
                outs = [model.track_batch(state, memory, frame_idx) for memory in memories]
                logits = torch.cat([o[0] for o in outs])
                ious = torch.cat([o[1] for o in outs])
            yield frame_idx, logits, ious

    def _per_object(self, window: WindowFeatures, masks: torch.Tensor, tracks: torch.Tensor, L: int):
        """sam2's own propagation, one object after another (the reference): (frame, logits, IoUs)."""
        model = self.predictor
        state = self._state(window, L)
        obj_ids = tracks.tolist()
        with self.backbone.context(), self.clock("propagate"):
            model.add_new_masks(state, 0, obj_ids, masks)
        frames_iter = model.propagate_in_video(state, start_frame_idx=0, max_frame_num_to_track=L - 1)
        next_frame = 0
        while True:
            if next_frame < L:
                window.get(next_frame)
            with self.backbone.context(), quiet_tqdm(), self.clock("propagate"):
                try:
                    frame_idx, ids, video_res_masks = next(frames_iter)
                except StopIteration:
                    break
                next_frame = frame_idx + 1
                if frame_idx == 0:  # the keyframe: already yielded from AMG at full resolution
                    continue
                if list(ids) != obj_ids:
                    raise RuntimeError("sam2 changed the order of the objects it tracks")
                ious = model.per_object_ious(state, ids, frame_idx)
            yield frame_idx, video_res_masks[:, 0], ious


def build_masklet_source(masklets_cfg: Mapping | None, backbone: SAM2Backbone) -> MaskletSource:
    """The masklet source of `cfg.masklets` (source: sam2 | gt) on `backbone`.

    Also sets `backbone.pooling_levels` from `masklets.pooling.levels` (default [0]: vision_features),
    so `backbone.feature_dim` and `source.feature_dim` give the length of the vectors it yields.
    """
    source, settings, levels = masklet_settings(masklets_cfg)
    backbone.pooling_levels = levels
    if source == "gt":
        return GTMaskletSource(backbone, settings)
    return SAM2MaskletSource(backbone, settings)
