"""Atomic file writes (a temporary sibling, then a rename), the cached sha256 of big files, checked checkpoint loads."""

from __future__ import annotations

import collections
import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from isam2.errors import ConfigError, ISAM2Error

# OSErrors of a write that the user must fix (space, quota, permissions), by errno: what to tell them.
DISK_ERRORS = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EACCES: "permission denied",
    errno.EROFS: "the file system is read-only",
}


def disk_error(path: str | os.PathLike, error: OSError) -> OSError | ISAM2Error:
    """For an OSError the user must fix (`DISK_ERRORS`), an ISAM2Error naming `path`; else `error` itself."""
    if error.errno in DISK_ERRORS:
        return ISAM2Error(f"cannot write {path}: {DISK_ERRORS[error.errno]} ({error.strerror or error})")
    return error


def _open_for_write(path: Path) -> IO[bytes]:
    """The temporary file of `atomic_file` (a seam: tests replace it to simulate a full disk or a crash)."""
    return open(path, "wb")


def _temporary(path: Path, pid: int | str) -> Path:
    """The temporary sibling `atomic_file` writes `path` to in process `pid` (`*`: a glob of all of them)."""
    return path.with_name(f".{path.name}.tmp{pid}")


def remove_stale_temporaries(
    folder: str | os.PathLike, pattern: str = "*", recursive: bool = False
) -> list[Path]:
    """Remove the temporary files that writers of `atomic_file` killed mid-write (SIGKILL, power loss) left in
    `folder` (and its subfolders with `recursive`): those of files matching `pattern`, written by a process
    other than this one. Returns them."""
    stale = []
    name = _temporary(Path(pattern), "*").name
    for tmp in Path(folder).rglob(name) if recursive else Path(folder).glob(name):
        pid = tmp.name.rsplit(".tmp", 1)[1]
        if pid.isdigit() and int(pid) != os.getpid():
            tmp.unlink(missing_ok=True)
            stale.append(tmp)
    return stale


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[IO[bytes]]:
    """Open a temporary sibling of `path` for writing; rename it onto `path` only if the block succeeds.

    A full disk, an exceeded quota, a denied permission or a read-only file system (`DISK_ERRORS`) raises
    an ISAM2Error naming `path`; the temporary file is removed and an earlier `path` stays as it was."""
    path = Path(path)
    tmp = _temporary(path, os.getpid())
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _open_for_write(tmp) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        error = disk_error(path, e)
        if error is e:
            raise
        raise error from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Atomically write `obj` as indented JSON; returns the path."""
    with atomic_file(path) as f:
        f.write((json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
    return Path(path)


def sha256_file(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 4 MB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _sha256_cache_file() -> Path:
    root = os.environ.get("ISAM2_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "isam2"
    )
    return Path(root) / "sha256.json"


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, remembered by (absolute path, size, mtime_ns) in `$ISAM2_CACHE_DIR/sha256.json`
    (default ~/.cache/isam2), so a multi-GB checkpoint is hashed once, not on every run. A file that changes
    changes its size or mtime and is hashed again; an unwritable cache only costs the re-hash."""
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
    digest = sha256_file(path)
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}|")}
    cache[key] = digest
    with contextlib.suppress(OSError):
        write_json(cache_file, cache)
    return digest


def load_weights(path: str | os.PathLike, setting: str) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU. A file holding pickled objects besides tensors and
    plain containers is refused without running them; a missing, unreadable, corrupt or truncated file is
    named. Both raise an ISAM2Error naming `setting=path`."""
    import pickle

    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise ISAM2Error(f"{setting}={path} is not a file; check the path")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a bad file: UnpicklingError, RuntimeError, EOFError, KeyError, OSError, ...
        # weights_only names the global (a function or class) that a pickled object would have called
        unsafe = next((ln for ln in str(e).splitlines() if "Unsupported global" in ln), None)
        if isinstance(e, pickle.UnpicklingError) and unsafe is not None:
            reason = unsafe.split("error:")[-1].split(" was not an allowed global")[0].strip()
            raise ISAM2Error(
                f"{setting}={path} holds pickled objects, not only weights ({reason}), and was not loaded "
                "(isam2 loads checkpoints with weights_only=True); use a checkpoint of plain tensors"
            ) from None
        detail = (str(e).splitlines() or [""])[0].split(". ")[0].strip() or "the file ends early"
        raise ISAM2Error(
            f"{setting}={path} cannot be read as a checkpoint ({type(e).__name__}: {detail}); "
            "it is corrupt, truncated, unreadable or not a checkpoint: use an intact copy"
        ) from None


def check_output_apart(output: str | os.PathLike, setting: str, inputs: dict[str, str | os.PathLike]) -> None:
    """Refuse an output folder that is an input folder, lies inside one or holds one (symlinks resolved):
    writing there could overwrite what is read. `inputs`: name (a setting) -> folder."""
    out = Path(output).expanduser().resolve()
    for name, folder in inputs.items():
        given = Path(folder).expanduser().resolve()
        if out == given:
            relation = "is"
        elif given in out.parents:
            relation = "lies inside"
        elif out in given.parents:
            relation = "holds"
        else:
            continue
        raise ConfigError(
            f"{setting}={out} {relation} the input {name} {given}: writing there could overwrite it; "
            f"set {setting} to a folder apart from every input"
        )


class BackgroundWriter:
    """File writing in one thread beside the device work, in submission order, with at most `pending` jobs
    waiting (a slow disk slows the loop rather than filling memory); a job's error is raised in the caller
    at its next `submit` or at `wait`, and the jobs after a failed one are skipped (a later file, such as the
    record that marks a video done, is never written after an earlier one failed)."""

    def __init__(self, pending: int = 16):
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(1, thread_name_prefix="isam2-write")
        self.futures: collections.deque = collections.deque()
        self.pending = pending
        self.failed = False

    def _run(self, fn: Any, *args: Any) -> None:
        if self.failed:
            return
        try:
            fn(*args)
        except BaseException:
            self.failed = True
            raise

    def submit(self, fn: Any, *args: Any) -> None:
        self.futures.append(self.pool.submit(self._run, fn, *args))
        while len(self.futures) > self.pending or (self.futures and self.futures[0].done()):
            self.futures.popleft().result()

    def wait(self, raise_errors: bool = True) -> None:
        """Finish every job and stop the thread (errors ignored with `raise_errors=False`: a failing run)."""
        try:
            while self.futures:
                future = self.futures.popleft()
                if raise_errors:
                    future.result()
                else:
                    future.exception()
        finally:
            self.pool.shutdown(wait=True)


def is_unset(value: object) -> bool:
    """A path setting left empty: None, "" or the string "null" (how a shell or an old config spells None)."""
    return value in (None, "", "null")
