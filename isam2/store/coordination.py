"""Coordination of a store build: the build lock, each rank's heartbeat, and waits with a deadline and dead-peer detection.

All of it lives in the store folder, the state every rank shares:

    build.lock           created with O_EXCL by the one process that builds the store: {"host", "pid", "start",
                         "since"}. Another build of the same store stops with an error naming the lock and its
                         holder, or waits (`store_build.lock_wait_seconds`). A lock whose process is gone
                         (same host: the pid is dead, or now belongs to a process started later) is stale and
                         removed; a lock from another host is never guessed stale.
    ranks/rank<r>.json   rank r's heartbeat: {"rank", "host", "pid", "start", "beat"}, rewritten every
                         `heartbeat_seconds` by a thread while the rank builds; removed when it is done, or
                         left with an "error" (the exception's message) when it failed.

A rank that waits (for the other ranks' shards, or for rank 0's manifest) gives up after `wait_seconds`, and
stops as soon as a peer failed (its heartbeat has an error) or is dead: its heartbeat has not changed for
`dead_after_seconds`, or its process on this host is gone. Heartbeats are compared with what this rank saw
before, never with a clock, so the clocks of different hosts need not agree.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from isam2.errors import ConfigError, ISAM2Error
from isam2.files import disk_error, write_json
from isam2.logs import get_logger

log = get_logger(__name__)

LOCK_NAME = "build.lock"
POLL_SECONDS = 0.5
HOST = socket.gethostname()


@dataclass(frozen=True)
class BuildSettings:
    """`store_build` settings (conf/store_build/default.yaml holds the same defaults)."""

    lock_wait_seconds: float = 0.0  # another process builds the store: 0 = stop at once, N = wait up to N s
    wait_seconds: float = 172800.0  # a rank waiting for the other ranks gives up after this long
    heartbeat_seconds: float = 10.0  # how often each rank rewrites its heartbeat
    dead_after_seconds: float = 300.0  # a rank whose heartbeat has not changed for this long is dead

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> BuildSettings:
        """The settings of `cfg.store_build` (defaults where absent); a negative or unknown one is a ConfigError."""
        given = dict(cfg.get("store_build") or {})
        names = {f.name for f in fields(cls)}
        for key, value in given.items():
            if key not in names:
                raise ConfigError(
                    f"store_build.{key} is not a setting (settings: {', '.join(sorted(names))})"
                )
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ConfigError(f"store_build.{key}={value!r} must be a number of seconds >= 0")
        settings = cls(**{k: float(v) for k, v in given.items()})
        if settings.heartbeat_seconds <= 0 or settings.dead_after_seconds <= settings.heartbeat_seconds:
            raise ConfigError(
                f"store_build.heartbeat_seconds={settings.heartbeat_seconds:g} must be > 0 and below "
                f"store_build.dead_after_seconds={settings.dead_after_seconds:g}"
            )
        return settings


# ------------------------------------------------------------------------------------------ processes


def process_start(pid: int) -> str | None:
    """When process `pid` of this host started (clock ticks since boot, from /proc), None if unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_gone(host: Any, pid: Any, start: Any) -> bool:
    """Whether the process a lock or heartbeat names is known to be gone: it ran on this host and its pid is
    dead, a zombie, or now belongs to a process started at another time. Other hosts: never known."""
    if host != HOST or not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by someone else
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state in ("Z", "X") or (start is not None and process_start(pid) not in (None, start))


def this_process() -> dict[str, Any]:
    """{"host", "pid", "start"} of this process, as locks and heartbeats record it."""
    return {"host": HOST, "pid": os.getpid(), "start": process_start(os.getpid())}


def _read_json(file: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


# ----------------------------------------------------------------------------------------------- lock


class BuildLock:
    """`<store>/build.lock`: at most one process builds a store at a time."""

    def __init__(self, folder: Path):
        self.file = Path(folder) / LOCK_NAME
        self.held = False

    def _create(self) -> bool:
        record = {**this_process(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        try:
            self.file.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.file, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        except OSError as e:
            error = disk_error(self.file, e)
            if error is e:
                raise
            raise error from None
        self.held = True
        with os.fdopen(fd, "w") as f:
            f.write(json.dumps(record) + "\n")
        return True

    def _holder(self) -> dict[str, Any] | None:
        return _read_json(self.file)

    def _describe(self, holder: dict[str, Any] | None) -> str:
        if holder is None:
            return f"{self.file} (its holder is unknown: the file is empty or unreadable)"
        return f"{self.file}, held by pid {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"

    def _remove_stale(self, holder: dict[str, Any]) -> None:
        """Remove the lock if it still is `holder`'s: rename it aside first, so that a lock another process
        created meanwhile is put back rather than deleted."""
        aside = self.file.with_name(f".{LOCK_NAME}.stale{os.getpid()}")
        try:
            os.rename(self.file, aside)
        except FileNotFoundError:
            return
        if _read_json(aside) != holder:
            with contextlib.suppress(OSError):
                os.link(aside, self.file)
        aside.unlink(missing_ok=True)
        log.warning(
            f"removed the stale lock {self.file} of pid {holder.get('pid')} on {holder.get('host')}",
            rank_zero_only=False,
        )

    def acquire(self, wait_seconds: float) -> None:
        """Take the lock; while another live process holds it, wait up to `wait_seconds`, then raise an
        ISAM2Error naming the lock file and its holder."""
        deadline = time.monotonic() + wait_seconds
        announced = False
        while not self._create():
            holder = self._holder()
            if holder is not None and (
                process_gone(holder.get("host"), holder.get("pid"), holder.get("start"))
                or holder == {**this_process(), "since": holder.get("since")}  # left by this very process
            ):
                self._remove_stale(holder)
                continue
            if time.monotonic() >= deadline:
                waited = f" after waiting {wait_seconds:g} s" if wait_seconds else ""
                raise ISAM2Error(
                    f"another process is building the masklet store {self.file.parent}{waited}: "
                    f"{self._describe(holder)}. Wait for it to finish, set store_build.lock_wait_seconds=<s> "
                    "to wait, or delete the lock file if that process is gone"
                )
            if not announced:
                log.info(
                    f"waiting up to {wait_seconds:g} s for {self._describe(holder)}", rank_zero_only=False
                )
                announced = True
            time.sleep(POLL_SECONDS)

    def release(self) -> None:
        if self.held:
            self.held = False
            self.file.unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------ heartbeats


def heartbeat_file(folder: Path, rank: int) -> Path:
    return Path(folder) / "ranks" / f"rank{rank}.json"


def reset_heartbeats(folder: Path) -> None:
    """Remove the heartbeats an earlier build left (rank 0 does this under the lock, before the ranks start)."""
    shutil.rmtree(Path(folder) / "ranks", ignore_errors=True)


class Heartbeat:
    """While entered, rank `rank` rewrites its heartbeat file every `period` seconds (a daemon thread). On
    exit the file is removed, or, on an exception, rewritten with its message for the waiting ranks to
    report. A failing write (e.g. a full disk) only lets the heartbeat go stale."""

    def __init__(self, folder: Path, rank: int, period: float):
        self.file, self.rank, self.period = heartbeat_file(folder, rank), rank, period
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"isam2-heartbeat{rank}", daemon=True)
        self._beat = 0

    def _write(self, **extra: Any) -> None:
        with contextlib.suppress(OSError, ISAM2Error):
            write_json(self.file, {"rank": self.rank, **this_process(), "beat": self._beat, **extra})
        self._beat += 1

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self._write()

    def __enter__(self) -> Heartbeat:
        self._write()
        self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._stop.set()
        self._thread.join()
        if exc is None:
            self.file.unlink(missing_ok=True)
        else:
            self._write(error=f"{exc_type.__name__}: {exc}")


class PeerWatch:
    """Tells whether ranks that this one waits on are dead, from their heartbeat files.

    `fresh`: the heartbeat files were reset for this build before any peer started (rank 0 does so before
    the ranks of a process group start), so a file is this build's from the first look. Otherwise (ranks
    without a process group, which start with rank 0 and may see an earlier build's file) a file is trusted
    to be this build's (its error reported, its process checked) only once it changed while this rank
    watched; an unchanged one is still dead after `dead_after` seconds.
    """

    def __init__(self, folder: Path, ranks: Iterable[int], dead_after: float, fresh: bool):
        self.folder, self.dead_after, self.fresh = Path(folder), dead_after, fresh
        now = time.monotonic()
        self._seen = {r: (_read_json(heartbeat_file(folder, r)), now, fresh) for r in ranks}

    def check(self) -> None:
        """Raise an ISAM2Error naming the first dead peer, if any."""
        now = time.monotonic()
        for rank, (last, since, trusted) in self._seen.items():
            file = heartbeat_file(self.folder, rank)
            beat = _read_json(file)
            if beat != last:
                last, since, trusted = beat, now, True
                self._seen[rank] = (last, since, trusted)
            if beat is not None and trusted and beat.get("error"):
                raise ISAM2Error(f"extraction failed on rank {rank} ({file}): {beat['error']}")
            if (
                beat is not None
                and trusted
                and process_gone(beat.get("host"), beat.get("pid"), beat.get("start"))
            ):
                reason = f"its process (pid {beat.get('pid')} on {beat.get('host')}) is gone"
            elif now - since > self.dead_after:
                reason = (
                    f"its heartbeat {file} has not changed for {self.dead_after:g} s"
                    if beat is not None
                    else f"it wrote no heartbeat ({file}) in {self.dead_after:g} s"
                )
            else:
                continue
            raise ISAM2Error(
                f"rank {rank} stopped while the masklet store {self.folder} was being built: {reason}; "
                "see that rank's output (store_build.dead_after_seconds sets how long a silent rank is waited for)"
            )


def wait_until(ready: Callable[[], bool], watch: PeerWatch, wait_seconds: float, what: str) -> None:
    """Poll until `ready()`; raise an ISAM2Error when a watched peer failed or is dead, or after
    `wait_seconds` (saying what was awaited)."""
    deadline = time.monotonic() + wait_seconds
    while not ready():
        watch.check()
        if time.monotonic() >= deadline:
            raise ISAM2Error(
                f"gave up after waiting {wait_seconds:g} s for {what} (store_build.wait_seconds)"
            )
        time.sleep(POLL_SECONDS)
