"""The store's on-disk format: row arrays and dtypes, file names, video ids, encoder folders."""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from isam2.errors import ISAM2Error

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


class StoreMismatchError(ISAM2Error):
    """A store folder was built from a different config than the one asking for it."""


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


def non_finite_arrays(rows: dict[str, np.ndarray]) -> list[str]:
    """Names of the float arrays (`FLOAT_ARRAYS`) in `rows` that hold a NaN or an infinity."""
    return [k for k in FLOAT_ARRAYS if k in rows and not np.isfinite(rows[k]).all()]


def _shard_files(video_id: str) -> tuple[str, str]:
    """The id-map and row shard files of a video, relative to the store folder."""
    return f"idmaps/{video_id}.npz", f"videos/{video_id}.npz"


ENCODERS_DIR = "encoders"
ENCODER_RECORD = "encoder.json"


def encoder_key(identity: Mapping[str, Any]) -> str:
    """The folder name of an encoder's vectors in a store: `<name>-<hash12 of its identity>`."""
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return f"{identity['name']}-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}"


def encoder_folder(path: str | os.PathLike, identity: dict[str, Any]) -> Path:
    """Where the vectors of the encoder of `identity` live in the store folder `path`."""
    return Path(path) / ENCODERS_DIR / encoder_key(identity)
