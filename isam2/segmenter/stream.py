"""`Segmenter`: a trained head with its frozen SAM2, turning any video into semantic maps window by window."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isam2.data.streams import FrameStream, HeldChunks, Window, as_stream, prefetched
from isam2.errors import ISAM2Error


@dataclass
class SegmentedFrame:
    """One frame as the segmenter painted it (numpy, on the host)."""

    video: str
    index: int
    name: str
    frame: np.ndarray  # [H, W, 3] uint8 RGB
    semantic: np.ndarray  # [H, W] uint8 train ids of the primary method, 255 = none
    methods: dict[str, np.ndarray]  # method key (isam2, isam2_base, base, refiner) -> [H, W] uint8
    gt: np.ndarray | None = None  # [H, W] uint8 train ids when the input has ground truth
    masklets: np.ndarray | None = None  # [H, W] int32: the masklet on top (index into tracks/probs), -1 none
    tracks: np.ndarray | None = None  # [n] track id of each masklet of the frame
    probs: np.ndarray | None = None  # [n, C] class probabilities of each masklet (return_probs)

    @property
    def num_masklets(self) -> int:
        return 0 if self.tracks is None else len(self.tracks)


@dataclass
class StreamTimes:
    """Seconds spent on a stream: in all, and waiting for decoded frames (what decoding cost the loop)."""

    total: float = 0.0
    waiting_for_frames: float = 0.0
    frames: int = 0
    masklets: int = 0


@dataclass
class _Group:
    """The frames of one keyframe window, held until the head has classified all their masklets: for each,
    its index, the window that holds it and its offset there, its store rows and its id map."""

    indices: list[int] = field(default_factory=list)
    places: list[tuple[Window, int]] = field(default_factory=list)
    rows: list[dict[str, np.ndarray]] = field(default_factory=list)
    id_maps: list[np.ndarray] = field(default_factory=list)

    def frame(self, i: int) -> np.ndarray:
        window, offset = self.places[i]
        return window.frames[offset]


class Segmenter:
    """Masklets of a frozen SAM2 classified by a trained head and painted, as `python -m isam2.predict` does.

    `segment(frames)` takes a path (a video file or a frame folder), a `FrameStream`, an array or tensor
    [T, H, W, 3] / [T, 3, H, W] or any iterable of [H, W, 3] uint8 frames, and yields `SegmentedFrame`s in
    order. Frames are decoded, encoded, tracked, pooled, classified and painted one keyframe window at a time:
    memory does not grow with the video's length."""

    def __init__(
        self,
        model: Any,
        source: Any,
        encoders: Mapping[str, Any] | None = None,
        base_pred_dir: str | Path | None = None,
        class_names: list[str] | None = None,
    ):
        self.model = model.eval()
        self.source = source
        # name -> Encoder in the head's feature order; None stands for SAM2's own pooled vectors
        self.encoders = dict(encoders or {"sam2": None})
        self.base_pred_dir = None if base_pred_dir is None else Path(base_pred_dir)
        self.num_classes = int(model.hparams.num_classes)
        self.class_names = class_names or [f"class_{i}" for i in range(self.num_classes)]
        self.window = int(model.hparams.segment["window"])
        if model.primary_method == "isam2_base" and self.base_pred_dir is None:
            raise ISAM2Error(
                "segment.fill=base needs base_pred_dir=<dir of <video>/<frame>.png base predictions>"
            )

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        sam2_checkpoint: str | Path | None = None,
        device: str = "auto",
        base_pred_dir: str | Path | None = None,
        class_names: list[str] | None = None,
        **settings: Any,
    ) -> Segmenter:
        """A segmenter from a head's checkpoint; SAM2 is rebuilt as the head was trained on it (variant, image
        size, pooling levels: recorded in the checkpoint), with the weights at `sam2_checkpoint` (checked by
        sha256). `settings`: those of `isam2.segmenter.parts.load_segmenter_parts` (masklets, encoders,
        segment, allow_feature_mismatch)."""
        from isam2.segmenter.parts import load_segmenter_parts

        parts = load_segmenter_parts(path, sam2_checkpoint, device, **settings)
        return cls(parts.model, parts.source, parts.encoders, base_pred_dir, class_names)

    # ---- the loop ---------------------------------------------------------------------------------------
    def segment(
        self,
        frames: Any,
        video_id: str = "video",
        return_masklets: bool = False,
        return_probs: bool = False,
        times: StreamTimes | None = None,
    ) -> Iterator[SegmentedFrame]:
        """Semantic maps of every frame of one video, in order (see the class docstring)."""
        stream = as_stream(frames, video_id)
        times = times if times is not None else StreamTimes()
        started = time.perf_counter()
        group = _Group()
        windows = HeldChunks(
            _Timed(prefetched(stream.windows(self.source.chunk_size)), times), _frames_and_gt
        )
        for t, fm in enumerate(self.source.video(windows)):
            self._add_frame(group, fm, t, windows.locate(t))
            if (t + 1) % self.window == 0:  # the keyframe window is complete: its votes can be cast
                yield from self._paint(stream, group, return_masklets, return_probs, times)
                group = _Group()
        if group.rows:
            yield from self._paint(stream, group, return_masklets, return_probs, times)
        if times.frames == 0:
            raise ISAM2Error(f"video {stream.id!r} has no frames")
        times.total += time.perf_counter() - started

    def _add_frame(self, group: _Group, fm: Any, t: int, place: tuple[Window, int]) -> None:
        from isam2.store.extraction import frame_rows

        rows, id_map = frame_rows(fm, t, None, 0)
        group.indices.append(t)
        group.places.append(place)
        group.rows.append(rows)
        group.id_maps.append(id_map)

    def _paint(
        self, stream: FrameStream, group: _Group, with_masklets: bool, with_probs: bool, times: StreamTimes
    ) -> Iterator[SegmentedFrame]:
        from isam2.segment.methods import method_predictions

        counts = [len(r["frame"]) for r in group.rows]
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        indices = group.indices
        features = self._vectors(stream, group, offsets)
        batch = {
            "features": features,
            "track": torch.from_numpy(np.concatenate([r["track"] for r in group.rows])),
            "frame": torch.from_numpy(np.concatenate([r["frame"] for r in group.rows]).astype(np.int64)),
        }
        with torch.inference_mode():
            logits, row_class = self.model.classify_video(batch)
        # the group's rows are numbered from 0 across its frames, as a store numbers a video's rows
        id_maps = torch.from_numpy(
            np.stack([np.where(m >= 0, m + offsets[i], -1) for i, m in enumerate(group.id_maps)])
        ).long()
        base = self._base(stream, indices, id_maps.shape[1:])
        preds = method_predictions(row_class.cpu(), id_maps, base)
        primary = self.model.primary_method
        probs = logits.float().softmax(-1).cpu().numpy() if with_probs else None
        for i, t in enumerate(indices):
            window, offset = group.places[i]
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            times.frames += 1
            times.masklets += hi - lo
            yield SegmentedFrame(
                video=stream.id,
                index=t,
                name=window.names[offset],
                frame=window.frames[offset],
                semantic=preds[primary][i].numpy(),
                methods={k: v[i].numpy() for k, v in preds.items()},
                gt=None if window.gt is None else window.gt[offset],
                masklets=group.id_maps[i].astype(np.int32) if with_masklets else None,
                tracks=group.rows[i]["track"],
                probs=None if probs is None else probs[lo:hi],
            )

    def _vectors(self, stream: FrameStream, group: _Group, offsets: np.ndarray) -> torch.Tensor:
        """[rows, d] float32: each configured encoder's Eq. 3 vectors of the group's masklets, concatenated in
        the head's order (SAM2's are those the masklet source pooled; the others pool each frame's id map)."""
        parts = []
        for encoder in self.encoders.values():
            if encoder is None:
                sam2 = np.concatenate([r["features"] for r in group.rows]).astype(np.float32)
                parts.append(torch.from_numpy(sam2))
                continue
            parts.append(self._encoder_vectors(encoder, stream, group, offsets))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def _encoder_vectors(
        self, encoder: Any, stream: FrameStream, group: _Group, offsets: np.ndarray
    ) -> torch.Tensor:
        out = torch.zeros(int(offsets[-1]), encoder.width)
        named = _NamedFrames(stream.id, stream.frame_names())
        for start in range(0, len(group.indices), encoder.frames_per_batch):
            batch = range(start, min(len(group.indices), start + encoder.frames_per_batch))
            frames = np.stack([group.frame(i) for i in batch])
            maps = encoder.maps(frames, named, [group.indices[i] for i in batch])
            for b, i in enumerate(batch):
                n = int(offsets[i + 1] - offsets[i])
                if n:
                    ids = torch.from_numpy(group.id_maps[i].astype(np.int64)).to(encoder.device)
                    with torch.inference_mode():
                        vectors = encoder.pool_frame([m[b] for m in maps], ids, n)
                    out[offsets[i] : offsets[i + 1]] = vectors.cpu()
        # the store keeps every encoder's vectors in fp16: the head sees the same values here
        return out.to(torch.float16).float()

    def _base(self, stream: FrameStream, indices: list[int], size: Any) -> torch.Tensor | None:
        if self.base_pred_dir is None:
            return None
        from isam2.data.predictions import prediction_path, read_prediction

        names = stream.frame_names()
        hw = (int(size[0]), int(size[1]))
        base = np.stack(
            [read_prediction(prediction_path(self.base_pred_dir, stream.id, names[t]), hw) for t in indices]
        )
        if base.dtype != np.uint8:
            raise ISAM2Error(
                f"base predictions of video {stream.id!r} in {self.base_pred_dir} are not 8-bit PNGs"
            )
        return torch.from_numpy(base)


class _NamedFrames:
    """What an encoder reading per-frame files needs of a video: its id and frame names by index."""

    def __init__(self, video_id: str, names: Mapping[int, str]):
        self.id, self.frame_names = video_id, names


class _Timed:
    """The stream's windows, counting the seconds the consumer waits for each (decoding not yet done)."""

    def __init__(self, windows: Iterator[Window], times: StreamTimes):
        self.windows, self.times = windows, times

    def __iter__(self) -> Iterator[Window]:
        while True:
            start = time.perf_counter()
            window = next(self.windows, None)
            self.times.waiting_for_frames += time.perf_counter() - start
            if window is None:
                return
            yield window


def _frames_and_gt(window: Window) -> tuple[np.ndarray, np.ndarray | None]:
    return window.frames, window.gt
