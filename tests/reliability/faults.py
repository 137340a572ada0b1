"""Faults under isam2's atomic writer (`isam2.files._open_for_write`): a full disk (or another OSError) or a SIGKILL mid-write.

`python -m tests.reliability.faults <module> <overrides>` runs `python -m <module> <overrides>` with the fault
that the environment describes: ISAM2_FAULT (`kill`, or an errno name: `enospc`, `edquot`, `eacces`, `erofs`),
ISAM2_FAULT_FILE (a glob matched against the final path of each written file), ISAM2_FAULT_SKIP (how many
matching files to write whole first, default 0) and ISAM2_FAULT_BYTES (how many bytes of the failing file
reach the disk first, default 64; a smaller file fails when it is closed, before the rename).
"""

from __future__ import annotations

import errno
import fnmatch
import os
import runpy
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from isam2 import files


class FaultyFile:
    """A file that fails (raises the OSError, or SIGKILLs this process) once `budget` bytes are written."""

    def __init__(self, f: IO[bytes], kind: str, budget: int):
        self._f, self._kind, self._room = f, kind, budget

    def _fail(self) -> None:
        self._f.flush()
        if self._kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        code = getattr(errno, self._kind.upper())
        raise OSError(code, os.strerror(code))

    def write(self, data: Any) -> int:
        data = bytes(data)
        if len(data) > self._room:
            self._f.write(data[: self._room])
            self._fail()
        self._room -= len(data)
        return self._f.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> FaultyFile:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        try:
            if exc_type is None:
                self._fail()  # the whole file fitted in the budget: fail before it is renamed into place
        finally:
            self._f.close()


def faulty_opener(
    kind: str, pattern: str, skip: int = 0, nbytes: int = 64, real: Callable | None = None
) -> Callable[[Path], IO[bytes]]:
    """A replacement of `isam2.files._open_for_write` that fails the (skip+1)-th file matching `pattern`."""
    real = real or files._open_for_write
    seen = [0]

    def open_for_write(tmp: Path) -> IO[bytes]:
        f = real(tmp)
        final = tmp.with_name(tmp.name[1:].rsplit(".tmp", 1)[0])  # `.<name>.tmp<pid>` -> `<name>`
        if fnmatch.fnmatch(str(final), pattern):
            seen[0] += 1
            if seen[0] == skip + 1:
                return FaultyFile(f, kind, nbytes)
        return f

    return open_for_write


def install_from_env() -> None:
    """Install the fault that ISAM2_FAULT* describe (nothing when ISAM2_FAULT is unset)."""
    kind = os.environ.get("ISAM2_FAULT")
    if kind:
        files._open_for_write = faulty_opener(
            kind,
            os.environ.get("ISAM2_FAULT_FILE", "*"),
            int(os.environ.get("ISAM2_FAULT_SKIP", "0")),
            int(os.environ.get("ISAM2_FAULT_BYTES", "64")),
        )


if __name__ == "__main__":
    install_from_env()
    module, sys.argv = sys.argv[1], [sys.argv[1], *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
