"""The encoder pass: an encoder's Eq. 3 vectors of a finished store's masklets, from its id maps and the frames.

No SAM2 work: the masklets are the store's (its id maps), the frames are decoded again, and each frame's
vectors are the mean of the encoder's maps (spread over the frame, see isam2.masklets.pooling) over each
masklet's region of the id map, i.e. its visible pixels once overlaps are resolved (SAM2's own vectors in
`features.npy` pool the whole mask, overlaps included). A masklet hidden under others has a zero vector.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isam2.encoders.base import Encoder, build_encoder
from isam2.errors import ISAM2Error
from isam2.logs import get_logger
from isam2.store.format import ENCODER_RECORD, encoder_folder
from isam2.store.reader import MaskletStore
from isam2.store.writer import write_encoder_features

log = get_logger(__name__)


def video_vectors(encoder: Encoder, store: MaskletStore, video: Any, frames: np.ndarray) -> np.ndarray:
    """[rows of the video, width] float32: the encoder's Eq. 3 vectors of each of the video's masklets."""
    rows = store.rows(video.id)
    frame_of_row = np.asarray(store.frame[rows]).astype(np.int64)
    first = np.searchsorted(frame_of_row, np.arange(len(frames) + 1))  # rows of frame t: first[t]:first[t+1]
    out = np.zeros((rows.stop - rows.start, encoder.width), np.float32)
    # a frame without masklets has nothing to pool: it is not encoded
    pooled = [t for t in range(len(frames)) if first[t + 1] > first[t]]
    for start in range(0, len(pooled), encoder.frames_per_batch):
        indices = pooled[start : start + encoder.frames_per_batch]
        maps = encoder.maps(frames[indices], video, indices)
        for b, t in enumerate(indices):
            n = int(first[t + 1] - first[t])
            # the frame's rows from 0; pixels of no masklet (-1 globally) stay negative
            ids = torch.from_numpy(store.id_map(video.id, t) - rows.start - first[t]).to(encoder.device)
            ids = torch.where((ids >= 0) & (ids < n), ids, torch.full_like(ids, -1))
            with torch.inference_mode():
                vec = encoder.pool_frame([m[b] for m in maps], ids, n)
            out[first[t] : first[t + 1]] = vec.float().cpu().numpy()
    bad = ~np.isfinite(out.astype(np.float16)).all(axis=1)
    if bad.any():
        t = int(frame_of_row[int(np.flatnonzero(bad)[0])])
        raise ISAM2Error(
            f"encoder {encoder.name}: video {video.id!r} frame {t}: a vector is not finite (NaN or infinite in fp16)"
        )
    return out


def _decoded(videos: list[Any]) -> Iterator[tuple[Any, np.ndarray]]:
    """(video, frames), decoding the next video in a thread while the caller works on this one."""
    if not videos:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="isam2-decode") as decoder:
        loading = decoder.submit(lambda v: v.load_frames(), videos[0])
        for i, video in enumerate(videos):
            frames = loading.result()
            if i + 1 < len(videos):
                loading = decoder.submit(lambda v: v.load_frames(), videos[i + 1])
            yield video, frames


def add_encoder_features(
    store: MaskletStore,
    settings: dict[str, Any],
    identity: dict[str, Any],
    videos: list[Any],
    progress: bool = True,
    encoder: Encoder | None = None,
) -> Path:
    """Compute and store the vectors of the encoder of `settings` for every masklet of `store` (whose
    videos are `videos`, in store order); returns its folder. Done already: nothing is computed. `encoder`:
    the encoder of `settings` already built (the benchmark builds it outside its timing, as it does SAM2)."""
    folder = encoder_folder(store.path, identity)
    if (folder / ENCODER_RECORD).is_file():
        return folder
    by_id = {v.id: v for v in videos}
    missing = [v for v in store.videos() if v not in by_id]
    if missing:
        raise ISAM2Error(f"the dataset has no video {missing[0]!r} of the masklet store {store.path}")
    encoder = encoder or build_encoder(settings)
    ordered = [by_id[v] for v in store.videos()]
    if progress:
        log.info(f"encoder {identity['name']}: pooling {len(store)} masklets into {folder}")
    blocks = (video_vectors(encoder, store, video, frames) for video, frames in _decoded(ordered))
    return write_encoder_features(
        store.path, identity, blocks, len(store), list(encoder.widths), list(encoder.strides)
    )
