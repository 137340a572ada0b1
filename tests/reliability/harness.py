"""The reliability suite's one check: a bad input through the real CLI stops cleanly and loses nothing."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from tests.train_helpers import run_cli


def snapshot(paths: Iterable[Path]) -> dict[str, str]:
    """sha256 of every file under `paths` (files or folders), to prove later that none changed."""
    out: dict[str, str] = {}
    for root in paths:
        root = Path(root)
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def temp_files(paths: Iterable[Path]) -> list[str]:
    """Temporary files of isam2's atomic writer (`.<name>.tmp<pid>`) left anywhere under `paths`."""
    found: list[str] = []
    for root in paths:
        root = Path(root)
        if root.is_dir():
            found += [str(p) for p in root.rglob(".*.tmp*")]
    return found


def assert_refused(
    module: str,
    overrides: list[str],
    culprit: str | Iterable[str],
    protected: Iterable[Path] = (),
    timeout: int = 600,
    env: dict | None = None,
    spawn: bool = False,
) -> str:
    """Run `python -m <module> <overrides>` and check the four promises of a refused input:
    exit 2; exactly one `error:` line on stderr, naming every culprit (a file or a setting); no
    half-written file under `protected`; every file already under `protected` unchanged. Returns the line."""
    protected = [Path(p) for p in protected]
    before = snapshot(protected)
    proc = run_cli(module, overrides, timeout=timeout, env=env, check=False, spawn=spawn)
    output = f"STDOUT:\n{proc.stdout[-3000:]}\nSTDERR:\n{proc.stderr[-5000:]}"
    assert proc.returncode == 2, f"exit {proc.returncode}, expected 2\n{output}"
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, f"expected one error: line, got {lines}\n{output}"
    assert "Traceback" not in proc.stderr, output
    for name in [culprit] if isinstance(culprit, str) else culprit:
        assert name in lines[0], f"{name!r} is not named in {lines[0]!r}"
    assert temp_files(protected) == [], temp_files(protected)
    after = snapshot(protected)
    changed = sorted(k for k in before if after.get(k) != before[k])
    assert changed == [], f"changed or removed: {changed}"
    return lines[0]
