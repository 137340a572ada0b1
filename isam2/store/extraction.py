"""The extraction loop: a masklet source over a split's videos, rows and id maps into shards."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isam2.constants import VOID
from isam2.data.streams import HeldChunks, as_chunks, prefetched
from isam2.errors import ISAM2Error
from isam2.files import BackgroundWriter
from isam2.masklets.pooling import mask_areas
from isam2.masklets.targets import masklet_targets
from isam2.masklets.timing import StageClock
from isam2.store.format import ROW_DTYPES, SHARD_ARRAYS, non_finite_arrays
from isam2.store.reader import MaskletStore
from isam2.store.writer import (
    IdMapWriter,
    VideoShard,
    paint_ids,
    write_video_shard,
)


def video_chunks(video: Any, size: int, clock: StageClock | None = None) -> Iterator[tuple[np.ndarray, Any]]:
    """A video's frames [n,H,W,3] uint8 and GT train ids [n,H,W] (None without GT), `size` frames at a time."""
    from isam2.data.streams import SplitVideoStream

    clock = clock or StageClock()
    windows = SplitVideoStream(video).windows(size)
    while True:
        with clock("decode"):
            window = next(windows, None)
        if window is None:
            return
        yield window.frames, window.gt


def frame_rows(
    fm: Any, t: int, gt: torch.Tensor | None, first_row: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Frame t's store rows and its id map (local rows from `first_row`). Everything is computed where the
    masks are (the GPU in a CUDA run); only the pooled vectors, the per-row numbers and the id map come back."""
    masks, scores, tracks, features = fm.masks, fm.scores, fm.tracks, fm.features
    area = mask_areas(masks)
    keep = area > 0  # a lost object leaves an empty mask: it is not a masklet
    if not bool(keep.all()):
        masks, area, scores, tracks, features = (x[keep] for x in (masks, area, scores, tracks, features))
    scores = scores.float()
    features = features.to(torch.float16)
    targets = masklet_targets(masks, gt)
    id_map = paint_ids(masks, scores, first_row).to(torch.int32)
    n = int(masks.shape[0])
    rows = {
        "features": features.cpu().numpy(),
        "frame": np.full(n, t, np.int32),
        "track": tracks.cpu().numpy().astype(np.int64),
        "area": area.cpu().numpy().astype(np.int64),
        "score": scores.cpu().numpy(),
        "label": targets.label,
        "purity": targets.purity,
        "valid": targets.valid,
    }
    return rows, id_map.cpu().numpy()


def extract_frames(
    source: Any,
    video_id: str,
    frames: Any,
    gt: np.ndarray | None = None,
    progress: Any = None,
    id_maps: IdMapWriter | None = None,
) -> VideoShard:
    """All masklets of one video: rows in frame order (empty masklets dropped), targets, id maps. `frames`: the
    whole video [T,H,W,3] (with `gt`), or an iterable of its (frames, gt) chunks, consumed as they come;
    `id_maps`: a writer that takes each frame's id map as it comes (None: the shard keeps them in a list)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in SHARD_ARRAYS}
    maps: list[np.ndarray] | IdMapWriter = [] if id_maps is None else id_maps
    counted = HeldChunks(as_chunks(frames, gt))
    first_row = 0
    for t, fm in enumerate(source.video(counted)):
        (chunk_frames, chunk_gt), offset = counted.locate(t)
        if tuple(fm.masks.shape[1:]) != tuple(chunk_frames.shape[1:3]):
            raise ISAM2Error(
                f"video {video_id!r} frame {t}: masklets are {tuple(fm.masks.shape[1:])}, "
                f"the frame is {chunk_frames.shape[1:3]}"
            )
        gt_t = None if chunk_gt is None else chunk_gt[offset]
        gt_t = None if gt_t is None else torch.from_numpy(np.ascontiguousarray(gt_t)).to(fm.masks.device)
        rows, id_map = frame_rows(fm, t, gt_t, first_row)
        bad = non_finite_arrays(rows)  # in the store's dtypes: an fp32 feature beyond fp16's range is inf
        if bad:
            raise ISAM2Error(
                f"video {video_id!r} frame {t}: masklet {' and '.join(bad)} not finite (NaN or infinite, "
                "features in fp16); nothing of this video was written"
            )
        n = len(rows["frame"])
        for key in SHARD_ARRAYS:
            parts[key].append(rows[key])
        if isinstance(maps, list):
            maps.append(id_map)
        else:
            maps.add(id_map)
        first_row += n
        if progress is not None:
            progress.update(1)
            progress.set_postfix(masklets_per_frame=f"{n}")
    if len(maps) != counted.frames:
        raise ISAM2Error(
            f"the masklet source gave {len(maps)} frames for video {video_id!r} of {counted.frames} frames"
        )
    return VideoShard(rows={k: _concat(v, k) for k, v in parts.items()}, id_maps=maps)


def _concat(parts: list[np.ndarray], key: str) -> np.ndarray:
    if parts:
        return np.concatenate(parts)
    return np.zeros((0, 0) if key == "features" else 0, ROW_DTYPES[key])


def extract_video(source: Any, video: Any, progress: Any = None) -> VideoShard:
    """Extract all masklets of one dataset video, decoded window by window (see `extract_frames`)."""
    return extract_frames(
        source, video.id, video_chunks(video, source.chunk_size, source.clock), None, progress
    )


def extract_videos(source: Any, videos: list[Any], path: Path, progress: Any = None) -> None:
    """Extract `videos` into shards of the store folder `path`, window by window: a decode thread reads the
    next window while this one is on the device, and a writer thread compresses each frame's id map into the
    video's archive as it comes and then writes the row shard. Neither side holds more than a window or two
    of frames, however long the video."""
    if not videos:
        return
    clock = source.clock
    archives: list[IdMapWriter] = []
    writer = BackgroundWriter(pending=8)
    try:
        for video in videos:
            chunks = prefetched(video_chunks(video, source.chunk_size, clock))
            archives.append(IdMapWriter(path, video.id))
            sink = _ThreadedIdMaps(archives[-1], writer, clock)
            rows = extract_frames(source, video.id, chunks, None, progress, sink).rows
            # the writer runs in order: the shard is written after the video's last id map
            writer.submit(_write_shard, path, video.id, VideoShard(rows, archives[-1]), clock)
        writer.wait()
    except BaseException:
        writer.wait(raise_errors=False)
        for archive in archives:  # the writer thread has stopped: no archive is being written to
            archive.abort()
        raise


class _ThreadedIdMaps:
    """An `IdMapWriter` fed through the background writer (compression off the device's path)."""

    def __init__(self, archive: IdMapWriter, writer: BackgroundWriter, clock: StageClock):
        self.archive, self.writer, self.clock = archive, writer, clock
        self.count = 0

    def add(self, id_map: np.ndarray) -> None:
        self.writer.submit(self._add, id_map)
        self.count += 1

    def _add(self, id_map: np.ndarray) -> None:
        with self.clock("write"):
            self.archive.add(id_map)

    def __len__(self) -> int:
        return self.count


def _write_shard(path: Path, video_id: str, shard: VideoShard, clock: StageClock) -> None:
    with clock("write"):
        write_video_shard(path, video_id, shard)


# ----------------------------------------------------------------------------------------- summary


def summarize(store: MaskletStore) -> dict[str, float]:
    """Videos, frames, masklets, mean masklets/frame, mean frame coverage, mean purity of targeted masklets."""
    videos = store.manifest["videos"]
    frames = sum(v["frames"] for v in videos)
    coverage = sum(v["covered_pixels"] / max(1, v["height"] * v["width"]) for v in videos)
    targeted = np.asarray(store.label) != VOID
    return {
        "videos": len(videos),
        "frames": frames,
        "masklets": len(store),
        "masklets_per_frame": len(store) / max(1, frames),
        "coverage": coverage / max(1, frames),
        "purity": float(np.asarray(store.purity)[targeted].mean()) if targeted.any() else float("nan"),
    }


def format_summary(summary: dict[str, float]) -> str:
    purity = summary["purity"]
    purity_text = "n/a (no masklet with a target)" if purity != purity else f"{100 * purity:.1f}%"  # NaN
    return (
        f"videos: {summary['videos']}  frames: {summary['frames']}  masklets: {summary['masklets']}\n"
        f"masklets/frame: {summary['masklets_per_frame']:.1f}  coverage: {100 * summary['coverage']:.1f}%  "
        f"purity: {purity_text}"
    )
