"""Writing a store: id-map painting, per-video shards and their records, finalising, other encoders' vectors."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from isam2.errors import ISAM2Error
from isam2.files import atomic_file, remove_stale_temporaries, sha256_file, write_json
from isam2.logs import get_logger
from isam2.store.format import (
    ENCODER_RECORD,
    FORMAT_VERSION,
    ROW_DTYPES,
    SHARD_ARRAYS,
    StoreMismatchError,
    _shard_files,
    check_video_id,
    encoder_folder,
    non_finite_arrays,
)
from isam2.store.identity import _mismatch_message, config_hash, read_hash

log = get_logger(__name__)


def paint_ids(masks: torch.Tensor, scores: torch.Tensor, first_row: int = 0) -> torch.Tensor:
    """[H,W] int64 on the masks' device: for each pixel the row (`first_row + i`) of the masklet on top, -1 where
    none covers it. Overlap rule: higher score on top; equal scores -> larger row on top. Vectorised: rank
    the masks (top-most = n, bottom-most = 1), take the highest rank covering each pixel, map it back to a row."""
    n = int(masks.shape[0])
    if n == 0:
        return torch.full(tuple(masks.shape[1:]), -1, dtype=torch.int64, device=masks.device)
    rows_desc = torch.arange(n - 1, -1, -1, device=masks.device)
    order = torch.sort(scores.to(masks.device)[rows_desc], descending=True, stable=True).indices
    top_first = rows_desc[order]  # descending score, ties by descending row
    rank_dtype = torch.int16 if n < torch.iinfo(torch.int16).max else torch.int32
    rank = torch.empty(n, dtype=rank_dtype, device=masks.device)
    rank[top_first] = torch.arange(n, 0, -1, dtype=rank_dtype, device=masks.device)
    best = (masks.to(rank_dtype) * rank[:, None, None]).amax(dim=0).long()  # 0 where no mask covers
    return torch.where(
        best > 0, top_first[(n - best).clamp(max=n - 1)] + first_row, torch.full_like(best, -1)
    )


def paint_id_map(masks: np.ndarray, scores: np.ndarray, first_row: int = 0) -> np.ndarray:
    """`paint_ids` for numpy arrays: [H,W] int64 row of the masklet on top, -1 where none covers it."""
    masks_t = torch.from_numpy(np.ascontiguousarray(masks, dtype=bool))
    scores_t = torch.from_numpy(np.asarray(scores, dtype=np.float64))
    return paint_ids(masks_t, scores_t, first_row).numpy()


class IdMapWriter:
    """One video's per-frame id maps streamed into `idmaps/<video>.npz` as they come (compressed, one archive
    entry per frame, written to a temporary name); `write_video_shard` renames it into place. A long video's
    maps are never all in memory. Each map is stored as int16 when its rows fit, else int32."""

    def __init__(self, path: Path, video_id: str):
        self.file = Path(path) / _shard_files(check_video_id(video_id))[0]
        self._stack = contextlib.ExitStack()
        self._zip = zipfile.ZipFile(
            self._stack.enter_context(atomic_file(self.file)), "w", zipfile.ZIP_DEFLATED
        )
        self.covered: list[int] = []
        self.size: tuple[int, int] = (0, 0)
        self.finished = False

    def add(self, id_map: np.ndarray) -> None:
        """Append the next frame's map ([H,W] local row per pixel, -1 = none)."""
        top = int(id_map.max(initial=-1))
        dtype = np.int16 if top < np.iinfo(np.int16).max else np.int32
        with self._zip.open(f"{len(self.covered)}.npy", "w", force_zip64=True) as entry:
            np.lib.format.write_array(entry, np.ascontiguousarray(id_map, dtype=dtype), allow_pickle=False)
        self.covered.append(int((id_map >= 0).sum()))
        self.size = tuple(int(x) for x in id_map.shape)

    def __len__(self) -> int:
        return len(self.covered)

    def close(self) -> str:
        """Finish the archive, move it into place, and return its sha256."""
        self.finished = True
        self._zip.close()
        self._stack.close()
        return sha256_file(self.file)

    def abort(self) -> None:
        """Drop the temporary archive (the video failed or was interrupted); nothing once it is finished."""
        if self.finished:
            return
        self.finished = True
        with contextlib.suppress(Exception):
            self._zip.close()
        self._stack.__exit__(ISAM2Error, ISAM2Error("aborted"), None)


@dataclass
class VideoShard:
    """One video's rows (arrays of SHARD_ARRAYS, row order = frame order) and its per-frame local id maps:
    a list of [H,W] arrays, or an `IdMapWriter` that already holds them."""

    rows: dict[str, np.ndarray]
    id_maps: list[np.ndarray] | IdMapWriter  # per frame [H,W], local row index or -1

    def __post_init__(self) -> None:
        n = len(self.rows["frame"])
        for key in SHARD_ARRAYS:
            if len(self.rows[key]) != n:
                raise ISAM2Error(f"shard array {key!r} has {len(self.rows[key])} rows, expected {n}")


def done_videos(path: Path) -> set[str]:
    """Ids of the videos whose shards were written completely in the store folder `path` (their record
    exists; `verified_done_videos` also checks their sha256)."""
    shard_dir = Path(path) / "videos"
    if not shard_dir.is_dir():
        return set()
    return {p.stem for p in shard_dir.glob("*.json") if not p.name.startswith(".")}


def shard_record(path: Path, video_id: str) -> dict[str, Any]:
    """The record of a done video (`videos/<video>.json`): sha256 per shard file, rows, finite."""
    return json.loads((Path(path) / "videos" / f"{video_id}.json").read_text())


def shard_fault(path: Path, video_id: str) -> str | None:
    """Why the done video's shards cannot be trusted (a file missing or not matching its sha256), or None."""
    try:
        digests = shard_record(path, video_id)["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"its record {Path(path) / 'videos' / f'{video_id}.json'} is unreadable ({e})"
    for name in _shard_files(video_id):
        file = Path(path) / name
        if not file.is_file():
            return f"{file} is missing"
        if sha256_file(file) != digests.get(name):
            return f"{file} does not match its sha256 (truncated or changed since it was written)"
    return None


def forget_video(path: Path, video_id: str) -> None:
    """Remove a video's record and shards, so that it is extracted again."""
    for name in (f"videos/{video_id}.json", *_shard_files(video_id)):
        (Path(path) / name).unlink(missing_ok=True)


def verified_done_videos(path: Path, video_ids: list[str]) -> set[str]:
    """Those of `video_ids` whose shards are done and match their sha256. A video whose shards do not is
    forgotten (a warning says so), so that it is extracted again rather than trusted."""
    done = done_videos(path)
    verified = set()
    for video_id in video_ids:
        if video_id not in done:
            continue
        fault = shard_fault(path, video_id)
        if fault is None:
            verified.add(video_id)
        else:
            log.warning(f"video {video_id!r} is extracted again: {fault}", rank_zero_only=False)
            forget_video(path, video_id)
    return verified


def _npz_bytes(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


def write_video_shard(path: Path, video_id: str, shard: VideoShard) -> None:
    """Write a video's id maps (or move its streamed ones into place), then its row shard, then its record
    (sha256 of both, rows, whether every float row is finite): the record marks the video done."""
    video_id = check_video_id(video_id)
    id_maps = shard.id_maps
    if not isinstance(id_maps, IdMapWriter):
        id_maps = IdMapWriter(path, video_id)
        try:
            for m in shard.id_maps:
                id_maps.add(m)
        except BaseException:
            id_maps.abort()
            raise
    n = len(shard.rows["frame"])
    rows = {k: np.asarray(shard.rows[k], dtype=ROW_DTYPES[k]) for k in SHARD_ARRAYS}
    covered, size = np.array(id_maps.covered, np.int64), np.array(id_maps.size, np.int64)
    names = _shard_files(video_id)
    digests = {names[0]: id_maps.close()}
    data = _npz_bytes({"covered": covered, "size": size, **rows}, compressed=False)
    with atomic_file(Path(path) / names[1]) as f:
        f.write(data)
    digests[names[1]] = hashlib.sha256(data).hexdigest()
    record = {"sha256": digests, "rows": n, "finite": not non_finite_arrays(rows)}
    write_json(Path(path) / "videos" / f"{video_id}.json", record)


def finalize_store(path: Path, video_ids: list[str], manifest: dict[str, Any], feature_dim: int) -> None:
    """Concatenate the row shards of `video_ids` (in this order) into contiguous .npy arrays, write
    manifest.json last (with the videos, N and dim added), then drop the row shards."""
    path = Path(path)
    missing = [v for v in video_ids if v not in done_videos(path)]
    if missing:
        raise ISAM2Error(
            f"cannot finalise {path}: {len(missing)} videos have no shard yet, e.g. {missing[0]!r}"
        )
    for video_id in video_ids:
        fault = shard_fault(path, check_video_id(video_id))
        if fault is not None:
            forget_video(path, video_id)
            raise ISAM2Error(
                f"cannot finalise {path}: {fault}; the video's shards were removed, run again to extract it again"
            )
    records = [shard_record(path, v) for v in video_ids]
    shards = [np.load(path / "videos" / f"{v}.npz") for v in video_ids]
    counts = [len(s["frame"]) for s in shards]
    total = int(sum(counts))
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(int)
    for key, dtype in ROW_DTYPES.items():
        shape = (total, feature_dim) if key == "features" else (total,)
        with atomic_file(path / f"{key}.npy") as f:
            # Stream the rows (features may not fit in memory): header, then each shard's bytes.
            np.lib.format.write_array_header_1_0(
                f,
                {
                    "descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                    "fortran_order": False,
                    "shape": shape,
                },
            )
            for i, shard in enumerate(shards):
                block = np.full(counts[i], i, dtype) if key == "video" else shard[key].astype(dtype)
                if key == "features" and block.shape[1:] != (feature_dim,):
                    raise ISAM2Error(
                        f"{path}/videos/{video_ids[i]}.npz has features {block.shape}, expected dim {feature_dim}"
                    )
                f.write(np.ascontiguousarray(block).tobytes())
    videos = [
        {
            "id": vid,
            "frames": len(shard["covered"]),
            "height": int(shard["size"][0]),
            "width": int(shard["size"][1]),
            "start": int(starts[i]),
            "stop": int(starts[i + 1]),
            "covered_pixels": int(shard["covered"].sum()),
            "finite": bool(record["finite"]),
        }
        for i, (vid, shard, record) in enumerate(zip(video_ids, shards, records))
    ]
    for shard in shards:
        shard.close()
    write_json(
        path / "manifest.json",
        {**manifest, "format": FORMAT_VERSION, "videos": videos, "num_rows": total, "dim": feature_dim},
    )
    shutil.rmtree(path / "videos", ignore_errors=True)
    remove_stale_temporaries(path, recursive=True)


def prepare_folder(path: Path, identity: dict[str, Any], force: bool, keep: tuple[str, ...] = ()) -> None:
    """Create (or, with force, empty but for the names in `keep`, e.g. the build lock) the store folder and
    record its identity; refuse a foreign folder."""
    path = Path(path)
    expected = config_hash(identity)
    if force and path.exists():
        for entry in path.iterdir():
            if entry.name in keep:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    found = read_hash(path)
    if found is not None and found != expected:
        raise StoreMismatchError(_mismatch_message(path, found, expected))
    path.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path, recursive=True)
    if found is None:
        write_json(path / "identity.json", {"config_hash": expected, "identity": identity})


def write_encoder_features(
    path: Path, identity: dict[str, Any], blocks: Any, num_rows: int, widths: list[int], strides: list[int]
) -> Path:
    """Stream an encoder's per-video vector blocks ([n_v, w] float, store row order) into
    `encoders/<key>/features.npy` (fp16), then write its record `encoder.json` (which marks it done)."""
    folder = encoder_folder(path, identity)
    width = int(sum(widths))
    written = 0
    with atomic_file(folder / "features.npy") as f:
        np.lib.format.write_array_header_1_0(
            f,
            {
                "descr": np.lib.format.dtype_to_descr(np.dtype(np.float16)),
                "fortran_order": False,
                "shape": (int(num_rows), width),
            },
        )
        for block in blocks:
            block = np.ascontiguousarray(block, dtype=np.float16)
            if block.ndim != 2 or block.shape[1] != width:
                raise ISAM2Error(
                    f"encoder {identity['name']} gave vectors {block.shape}, expected width {width}"
                )
            f.write(block.tobytes())
            written += len(block)
        if written != num_rows:
            raise ISAM2Error(f"encoder {identity['name']} gave {written} vectors for {num_rows} masklets")
    record = {"identity": identity, "widths": widths, "strides": strides, "num_rows": int(num_rows)}
    write_json(folder / ENCODER_RECORD, record)
    return folder
