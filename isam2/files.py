"""Atomic file writes (a temporary sibling, then a rename) and the cached sha256 of big files."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary sibling of `path` for writing; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with tmp.open("wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write `obj` as indented JSON; returns the path."""
    with atomic_file(path) as f:
        f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
    return Path(path)


def _sha256_cache_file() -> Path:
    root = os.environ.get("ISAM2_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "isam2"
    )
    return Path(root) / "sha256.json"


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, remembered by (absolute path, size, mtime_ns) in `$ISAM2_CACHE_DIR/sha256.json`
    (default ~/.cache/isam2), so a multi-GB checkpoint is hashed once, not on every run. A file that changes
    changes its size or mtime and is hashed again; an unwritable cache only costs the re-hash."""
    import hashlib

    path = Path(path).expanduser().resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = _sha256_cache_file()
    try:
        cache = json.loads(cache_file.read_text())
        if not isinstance(cache, dict):
            cache = {}
    except (OSError, ValueError):
        cache = {}
    if isinstance(cache.get(key), str):
        return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    digest = h.hexdigest()
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}|")}
    cache[key] = digest
    with contextlib.suppress(OSError):
        write_json(cache_file, cache)
    return digest
