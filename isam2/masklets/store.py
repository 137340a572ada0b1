"""MaskletStore: the on-disk, memory-mapped cache of masklet vectors, targets and per-frame id maps, and its writer.

Layout of one store (one folder per dataset, split and config hash, `<store_dir>/<dataset>-<split>-<hash12>/`):

    identity.json          the identity-relevant config and its hash (written when the build starts)
    backbone.json          SAM2Backbone.metadata() of the build
    videos/<video>.npz     per-video row shard (removed after finalising)
    idmaps/<video>.npz     per-frame id maps of the video, compressed: key str(t) -> [H,W] int16/int32 LOCAL
                           row index (row within the video, -1 = no masklet); written before the row shard
    videos/<video>.json    written after both: the sha256 of each, the row count and whether every float
                           row is finite; its presence = the video is done, once both files match their sha256
    features.npy [N,d] fp16, video.npy i32, frame.npy i32, track.npy i64, area.npy i64, score.npy f32,
    label.npy u8, purity.npy f32, valid.npy i64     contiguous rows in split-file video order
    manifest.json          written LAST: its presence = the store is complete
    encoders/<name>-<hash12>/features.npy [N,w] fp16, then encoder.json (its identity, widths, strides,
                           rows): another encoder's Eq. 3 vectors of the same masklets (docs/encoders.md),
                           added to a finished store by a second pass over its id maps and the frames

Every file is written to a temporary name and renamed, so a killed build resumes with no lost or
duplicated rows: videos whose shards exist and match their sha256 are skipped, the others (never written,
or truncated by a crash or a bad disk) are extracted again.

Float rows are finite: extraction refuses a non-finite value (naming the video and frame), each video's
record says whether its rows were finite when written, opening a store refuses a video recorded otherwise,
and `read_rows` (every read of float rows by the data modules) checks the rows it returns, so a store
changed after writing raises naming its file rather than training on NaN. The check rides on reads that
happen anyway (a batch, a video, the statistics pass), so opening a store stays O(videos).

Overlap rule of the id maps: a pixel covered by several masklets of a frame shows the one with the
higher predicted IoU (`score`); on equal scores the later row (larger row index) is on top.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import sys
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from isam2.errors import ISAM2Error
from isam2.files import atomic_file, cached_sha256, sha256_file, write_json

FORMAT_VERSION = 1
# Per-masklet arrays and their dtypes; `features` is [N, d], the others [N].
ROW_DTYPES: dict[str, type] = {
    "features": np.float16,
    "video": np.int32,
    "frame": np.int32,
    "track": np.int64,
    "area": np.int64,
    "score": np.float32,
    "label": np.uint8,
    "purity": np.float32,
    "valid": np.int64,
}
SHARD_ARRAYS = tuple(k for k in ROW_DTYPES if k != "video")  # `video` is implied by the shard's file
FLOAT_ARRAYS = tuple(k for k, dtype in ROW_DTYPES.items() if np.issubdtype(dtype, np.floating))
# What reading a damaged .npz (a zip archive) raises: truncated, bad CRC, bad compressed data, not a zip.
ZIP_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
_SAFE_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+\-]*")
# Settings that change only speed, memory or where SAM2 runs, never what the store holds (beyond floating
# point): they stay out of the config hash, so changing them never re-extracts; the manifest records them.
_SAM2_NOT_IDENTITY = ("device", "tf32")
_MASKLETS_NOT_IDENTITY = (
    "points_per_batch",
    "objects_per_batch",
    "frames_per_batch",
    "offload_state_to_cpu",
    "amg",
    "propagation",
)


FEATURE_PARTS = ("sam2", "masklets")  # the parts of a store identity that decide its feature space
# The optional part of an identity listing the encoders whose vectors a reader concatenates (absent for the
# default `encoder=[sam2]`, so heads and stores of sam2 features keep their identity). It never decides the
# folder: every encoder's vectors of the same masklets live in the one store folder.
ENCODERS_PART = "encoders"


class StoreMismatchError(ISAM2Error):
    """A store folder was built from a different config than the one asking for it."""


# ----------------------------------------------------------------------------------------- identity


def checkpoint_sha256(checkpoint: str | os.PathLike | None) -> str:
    """sha256 of a checkpoint file's bytes, or "random" for random weights (checkpoint=null)."""
    if checkpoint in (None, "", "null"):
        return "random"
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise ISAM2Error(f"sam2.checkpoint not found: {path}")
    return cached_sha256(path)  # the same digest SAM2Backbone.metadata() records


def store_identity(cfg: DictConfig, split: str, targets: str = "all") -> dict[str, Any]:
    """The config that decides a store's content: data name+root+split, sam2 (checkpoint by sha256), masklets;
    without the settings that change only speed or memory (`_SAM2_NOT_IDENTITY`, `_MASKLETS_NOT_IDENTITY`).
    `targets`: which videos have ground truth ("all", "none", "some"); recorded only when not "all", so a
    labelled store keeps its identity and an unlabelled one of the same frames is another store."""
    sam2 = OmegaConf.to_container(cfg.sam2, resolve=True)
    for key in _SAM2_NOT_IDENTITY:
        sam2.pop(key, None)
    sam2["checkpoint"] = checkpoint_sha256(sam2.get("checkpoint"))
    masklets = OmegaConf.to_container(cfg.masklets, resolve=True)
    for key in _MASKLETS_NOT_IDENTITY:
        masklets.pop(key, None)
    if masklets.get("source") == "gt":
        masklets.pop("window", None)  # oracle masklets have no keyframes
    identity = {
        "data": {
            "name": str(cfg.data.name),
            "root": str(Path(cfg.data.root).expanduser().resolve()),
            "split": split,
            **({} if targets == "all" else {"targets": targets}),
        },
        "sam2": sam2,
        "masklets": masklets,
    }
    encoders = encoders_identity(cfg)
    if encoders is not None:
        identity[ENCODERS_PART] = encoders
    return identity


def encoders_identity(cfg: DictConfig) -> list[dict[str, Any]] | None:
    """The identities of cfg.encoder's encoders in order (`isam2.encoders.encoder_identity`); None for the
    default `[sam2]`, whose vectors are the store's own `features.npy`."""
    from isam2.encoders import SAM2_ENCODER, encoder_configs, encoder_identity

    configs = encoder_configs(cfg)
    if list(configs) == [SAM2_ENCODER]:
        return None
    return [{"name": SAM2_ENCODER} if n == SAM2_ENCODER else encoder_identity(c) for n, c in configs.items()]


def feature_identity(identity: dict[str, Any] | None) -> dict[str, Any] | None:
    """The part of a store identity that decides the feature space of its vectors: its `sam2` and
    `masklets` parts (everything but the dataset and split), and its `encoders` when it has them; None for a
    store that recorded no identity."""
    if not isinstance(identity, dict) or not all(k in identity for k in FEATURE_PARTS):
        return None
    parts = FEATURE_PARTS + ((ENCODERS_PART,) if ENCODERS_PART in identity else ())
    return {k: identity[k] for k in parts}


def config_hash(identity: dict[str, Any]) -> str:
    """sha256 of the canonical JSON (sorted keys, no spaces) of `identity` without its `encoders` part (the
    vectors of every encoder of the same masklets share one store folder)."""
    masklets_only = {k: v for k, v in identity.items() if k != ENCODERS_PART}
    canonical = json.dumps(masklets_only, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def masklet_identity(identity: dict[str, Any]) -> dict[str, Any]:
    """`identity` without its `encoders` part: what a store folder records (identity.json, the manifest)."""
    return {k: v for k, v in identity.items() if k != ENCODERS_PART}


def store_folder(store_dir: str | os.PathLike, identity: dict[str, Any]) -> Path:
    """`<store_dir>/<dataset>-<split>-<hash12>`, absolute."""
    name = f"{identity['data']['name']}-{identity['data']['split']}-{config_hash(identity)[:12]}"
    return Path(store_dir).expanduser().resolve() / name


# ------------------------------------------------------------------------------------------ writing


def check_video_id(video_id: str, source: str | os.PathLike | None = None) -> str:
    """`video_id` if it can name a file inside the store folder (no separator, no `..`); `source` is the
    file that listed it (a manifest from elsewhere is untrusted: it must not make us read outside)."""
    if not isinstance(video_id, str) or not _SAFE_ID.fullmatch(video_id):
        listed = f"{source} lists " if source is not None else ""
        raise ISAM2Error(
            f"{listed}video id {video_id!r}, which cannot name a store file (allowed: letters, digits, _ . + -)"
        )
    return video_id


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


def non_finite_arrays(rows: dict[str, np.ndarray]) -> list[str]:
    """Names of the float arrays (`FLOAT_ARRAYS`) in `rows` that hold a NaN or an infinity."""
    return [k for k in FLOAT_ARRAYS if k in rows and not np.isfinite(rows[k]).all()]


def _shard_files(video_id: str) -> tuple[str, str]:
    """The id-map and row shard files of a video, relative to the store folder."""
    return f"idmaps/{video_id}.npz", f"videos/{video_id}.npz"


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
            print(f"warning: video {video_id!r} is extracted again: {fault}", file=sys.stderr, flush=True)
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


def remove_temp_files(path: Path) -> None:
    """Delete temporary files that a killed writer left behind."""
    for tmp in Path(path).rglob(".*.tmp*"):
        tmp.unlink(missing_ok=True)


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
    remove_temp_files(path)


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
    remove_temp_files(path)
    if found is None:
        write_json(path / "identity.json", {"config_hash": expected, "identity": identity})


def read_hash(path: Path) -> str | None:
    """The config hash recorded in a store folder (manifest first, then identity.json), None if none."""
    for name in ("manifest.json", "identity.json"):
        file = Path(path) / name
        if file.is_file():
            try:
                return json.loads(file.read_text())["config_hash"]
            except (OSError, ValueError, KeyError, TypeError) as e:  # ValueError: not JSON, not UTF-8
                raise ISAM2Error(f"corrupt store file {file}: {e}; rebuild with force=true") from None
    return None


def _mismatch_message(path: Path, found: str, expected: str) -> str:
    return (
        f"masklet store {path} was built with config hash {found}, but the current config has hash "
        f"{expected}; pass force=true to rebuild it, or set paths.store_dir elsewhere"
    )


# ------------------------------------------------------------------------------------------ reading


_MANIFEST_KEYS = {"dim": int, "num_rows": int, "videos": list}
_MANIFEST_VIDEO_KEYS = {"id": str, "frames": int, "height": int, "width": int, "start": int, "stop": int}


def _check_manifest_keys(manifest_path: Path, manifest: Any) -> None:
    """Refuse a manifest that lacks a key the reader needs (a damaged file, or one from another tool)."""
    entries = [(manifest, _MANIFEST_KEYS, "")]
    if isinstance(manifest, dict) and isinstance(manifest.get("videos"), list):
        entries += [(v, _MANIFEST_VIDEO_KEYS, f" in videos[{i}]") for i, v in enumerate(manifest["videos"])]
    for entry, keys, where in entries:
        for key, kind in keys.items():
            if not isinstance(entry, dict) or not isinstance(entry.get(key), kind):
                raise ISAM2Error(
                    f"{manifest_path} has no {kind.__name__} {key!r}{where}: the store is damaged or was not "
                    "written by isam2; rebuild it with force=true"
                )


def _check_manifest_videos(manifest_path: Path, videos: list[dict[str, Any]], num_rows: int) -> None:
    """Refuse a manifest whose videos could name files outside the store or rows outside its arrays, or
    whose rows were not finite when written (stores of older builds have no such record)."""
    for v in videos:
        check_video_id(v.get("id"), manifest_path)
        if not 0 <= int(v["start"]) <= int(v["stop"]) <= num_rows:
            raise ISAM2Error(
                f"{manifest_path} gives video {v['id']!r} rows {v['start']}:{v['stop']} of {num_rows}; "
                "rebuild with force=true"
            )
        if v.get("finite") is False:
            raise ISAM2Error(
                f"{manifest_path}: video {v['id']!r} has non-finite (NaN or infinite) values in its rows; "
                "rebuild with force=true"
            )


def read_rows(array: np.ndarray, rows: slice | np.ndarray) -> np.ndarray:
    """array[rows] in memory, for a slice or sorted row indices (read as one contiguous slice when they are a
    range). Float rows are checked: a store's rows are finite when written, so a NaN or an infinity means
    its file changed since, and raises naming the file and the row."""
    if isinstance(rows, np.ndarray) and len(rows) and rows[-1] - rows[0] + 1 == len(rows):
        rows = slice(int(rows[0]), int(rows[-1]) + 1)
    values = np.asarray(array[rows])
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        bad = int(np.flatnonzero(~np.isfinite(values).reshape(len(values), -1).all(axis=1))[0])
        row = (rows.start or 0) + bad if isinstance(rows, slice) else int(rows[bad])
        file = getattr(array, "filename", None) or "a masklet store array"
        raise ISAM2Error(
            f"{file}: row {row} is not finite (NaN or infinite); the store changed after it was written "
            "(it was finite then): rebuild it with force=true"
        )
    return values


ENCODERS_DIR = "encoders"
ENCODER_RECORD = "encoder.json"


def encoder_folder(path: str | os.PathLike, identity: dict[str, Any]) -> Path:
    """Where the vectors of the encoder of `identity` live in the store folder `path`."""
    from isam2.encoders.base import encoder_key

    return Path(path) / ENCODERS_DIR / encoder_key(identity)


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


class ConcatRows:
    """Row-wise concatenation of [N, d_i] arrays (memory maps) along the feature axis, read lazily: what
    `MaskletStore.features` is when several encoders are configured. Supports what the readers use:
    `shape`, `dtype`, `len()`, `[rows]` (a slice or row indices), `np.asarray`."""

    def __init__(self, parts: list[np.ndarray], names: list[str]):
        self.parts, self.names = parts, names
        self.shape = (len(parts[0]), int(sum(p.shape[1] for p in parts)))
        self.dtype = parts[0].dtype
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def filename(self) -> str:
        return " + ".join(self.names)

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, tuple):  # [rows, columns]: the rows of every part, then the columns
            rows, *rest = index
            return self[rows][(slice(None), *rest)]
        return np.concatenate([np.asarray(p[index]) for p in self.parts], axis=-1)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class MaskletStore:
    """A finished store, read-only and memory-mapped. Arrays are attributes (see ROW_DTYPES); rows of a
    video are contiguous and in frame order; `id_map` returns GLOBAL row indices into those arrays.

    `encoders` (identities, `encoders_identity(cfg)`) selects whose vectors `features` holds: None is the
    store's own (SAM2's) `features.npy`; a list concatenates each encoder's vectors in its order (`sam2`:
    `features.npy`; any other: `encoders/<key>/features.npy`, which must have been added)."""

    features: np.ndarray
    video: np.ndarray
    frame: np.ndarray
    track: np.ndarray
    area: np.ndarray
    score: np.ndarray
    label: np.ndarray
    purity: np.ndarray
    valid: np.ndarray

    def __init__(
        self,
        path: str | os.PathLike,
        expected_hash: str | None = None,
        encoders: list[dict[str, Any]] | None = None,
    ):
        self.path = Path(path).expanduser().resolve()
        self._expected_hash = expected_hash
        self.encoders = encoders
        manifest_path = self.path / "manifest.json"
        if not manifest_path.is_file():
            raise ISAM2Error(
                f"no finished masklet store at {self.path} (manifest.json missing); build it with python -m isam2.extract"
            )
        found = read_hash(self.path)
        if expected_hash is not None and found != expected_hash:
            raise StoreMismatchError(_mismatch_message(self.path, str(found), expected_hash))
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != FORMAT_VERSION:
            raise ISAM2Error(
                f"{manifest_path} has store format {self.manifest.get('format')}, expected {FORMAT_VERSION}; rebuild with force=true"
            )
        _check_manifest_keys(manifest_path, self.manifest)
        self.dim = int(self.manifest["dim"])
        n = int(self.manifest["num_rows"])
        _check_manifest_videos(manifest_path, self.manifest["videos"], n)
        for key, dtype in ROW_DTYPES.items():
            file = self.path / f"{key}.npy"
            try:
                arr = np.load(file, mmap_mode="r") if n else np.load(file)
            except (OSError, ValueError, EOFError) as e:
                raise ISAM2Error(f"unreadable store array {file}: {e}; rebuild with force=true") from None
            if len(arr) != n or arr.dtype != dtype:
                raise ISAM2Error(
                    f"{file} has {len(arr)} rows of {arr.dtype}, manifest says {n} of {np.dtype(dtype)}"
                )
            setattr(self, key, arr)
        self._videos = {v["id"]: v for v in self.manifest["videos"]}
        self._cached_video: tuple[str, dict[str, np.ndarray]] | None = None
        if encoders is not None:
            self.features = self._encoder_features(encoders, n)
            self.dim = int(self.features.shape[1])

    def _encoder_features(self, encoders: list[dict[str, Any]], n: int) -> ConcatRows:
        parts, names = [], []
        for identity in encoders:
            if identity.get("name") == "sam2":
                parts.append(self.features)
                names.append(str(self.path / "features.npy"))
                continue
            folder = encoder_folder(self.path, identity)
            record_file, file = folder / ENCODER_RECORD, folder / "features.npy"
            if not record_file.is_file():
                raise ISAM2Error(
                    f"masklet store {self.path} has no vectors of encoder {identity['name']} ({folder}); "
                    "python -m isam2.extract with the same encoder adds them"
                )
            try:
                record = json.loads(record_file.read_text())
                arr = np.load(file, mmap_mode="r") if n else np.load(file)
            except (OSError, ValueError, EOFError) as e:
                raise ISAM2Error(
                    f"unreadable encoder vectors {folder}: {e}; delete the folder to redo them"
                ) from None
            if record.get("identity") != identity or arr.shape[0] != n or arr.dtype != np.float16:
                raise ISAM2Error(
                    f"{file} ({arr.shape[0]} rows of {arr.dtype}) does not hold the {n} fp16 vectors of the "
                    f"configured encoder {identity['name']}; delete {folder} to redo them"
                )
            parts.append(arr)
            names.append(str(file))
        return ConcatRows(parts, names)

    def __len__(self) -> int:
        return int(self.manifest["num_rows"])

    @property
    def feature_identity(self) -> dict[str, Any] | None:
        """The sam2 and masklets identity its manifest records (`feature_identity`): what a head trained on
        this store's vectors expects of the vectors it is given."""
        identity = feature_identity(self.manifest.get("identity"))
        if identity is not None and self.encoders is not None:
            identity[ENCODERS_PART] = self.encoders
        return identity

    def __repr__(self) -> str:
        return (
            f"MaskletStore({str(self.path)!r}, rows={len(self)}, dim={self.dim}, videos={len(self._videos)})"
        )

    # Pickle by path: a memmap would otherwise be copied into every DataLoader worker.
    def __getstate__(self) -> dict[str, Any]:
        return {"path": str(self.path), "expected_hash": self._expected_hash, "encoders": self.encoders}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["expected_hash"], state.get("encoders"))

    def _video(self, video_id: str) -> dict[str, Any]:
        try:
            return self._videos[video_id]
        except KeyError:
            raise ISAM2Error(f"video {video_id!r} is not in the masklet store {self.path}") from None

    def videos(self) -> list[str]:
        """Video ids in store (split-file) order; `video` holds indices into this list."""
        return list(self._videos)

    def rows(self, video_id: str) -> slice:
        v = self._video(video_id)
        return slice(v["start"], v["stop"])

    def num_frames(self, video_id: str) -> int:
        return int(self._video(video_id)["frames"])

    def frame_size(self, video_id: str) -> tuple[int, int]:
        v = self._video(video_id)
        return int(v["height"]), int(v["width"])

    def _local_maps(self, video_id: str) -> dict[str, np.ndarray]:
        # Keep the last video's opened archive: frames of one video are usually read one after another.
        if self._cached_video is None or self._cached_video[0] != video_id:
            file = self._id_map_file(video_id)
            try:
                self._cached_video = (video_id, np.load(file))
            except ZIP_READ_ERRORS as e:
                raise ISAM2Error(f"unreadable id maps {file}: {e}; rebuild with force=true") from None
        return self._cached_video[1]

    def _id_map_file(self, video_id: str) -> Path:
        return self.path / "idmaps" / f"{check_video_id(video_id)}.npz"

    def _local_map(self, video_id: str, t: int) -> np.ndarray:
        """Frame t's local id map, decompressed from the video's archive; a damaged archive is named."""
        try:
            return self._local_maps(video_id)[str(t)]
        except (KeyError, *ZIP_READ_ERRORS) as e:
            file = self._id_map_file(video_id)
            raise ISAM2Error(
                f"unreadable id maps {file} (frame {t}: {type(e).__name__}: {e}); rebuild with force=true"
            ) from None

    def _to_global(self, local: np.ndarray, video_id: str) -> np.ndarray:
        local = local.astype(np.int64)
        return np.where(local >= 0, local + self.rows(video_id).start, -1)

    def id_map(self, video_id: str, frame_index: int) -> np.ndarray:
        """[H,W] int64 global row index of the masklet on top at each pixel, -1 where none."""
        t = int(frame_index)
        if not 0 <= t < self.num_frames(video_id):
            raise ISAM2Error(
                f"frame {t} is out of range for video {video_id!r} ({self.num_frames(video_id)} frames) in {self.path}"
            )
        return self._to_global(self._local_map(video_id, t), video_id)

    def id_maps(self, video_id: str) -> np.ndarray:
        """[T,H,W] int64 id maps of every frame of the video."""
        maps = [self._local_map(video_id, t) for t in range(self.num_frames(video_id))]
        return self._to_global(np.stack(maps), video_id)


def ensure_store(cfg: DictConfig, split: str, force: bool = False) -> MaskletStore:
    """The store of (cfg.data, split, cfg.sam2, cfg.masklets) under cfg.paths.store_dir, built if missing
    (see isam2.masklets.extraction.ensure_store)."""
    from isam2.masklets.extraction import ensure_store as build

    return build(cfg, split, force=force)
