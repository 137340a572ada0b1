"""MaskletStore: the memory-mapped reader of a finished store (numpy only, cheap in DataLoader workers)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from isam2.errors import ISAM2Error
from isam2.store.format import (
    ENCODER_RECORD,
    FORMAT_VERSION,
    ROW_DTYPES,
    ZIP_READ_ERRORS,
    StoreMismatchError,
    check_video_id,
    encoder_folder,
)
from isam2.store.identity import ENCODERS_PART, _mismatch_message, feature_identity, read_hash

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
