"""The floors of docs/architecture.md are the import-linter contracts that `make lint` checks, and they hold."""

from __future__ import annotations

import re
import subprocess
import sys

import tomllib

from tests.train_helpers import REPO


def _contracts() -> list[dict]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_floors_and_the_no_cycle_contract_hold():
    from importlinter.cli import lint_imports

    # the contracts of pyproject.toml, with no exception: every import runs downwards, no cycle anywhere
    contracts = _contracts()
    assert {c["type"] for c in contracts} == {"layers", "acyclic_siblings"}
    assert not any("ignore_imports" in c for c in contracts)
    assert lint_imports(config_filename=str(REPO / "pyproject.toml")) == 0


def test_the_documented_floors_are_the_checked_floors():
    layers = next(c for c in _contracts() if c["type"] == "layers")["layers"]
    doc = (REPO / "docs" / "architecture.md").read_text()
    block = re.search(r"```text\n(.*?)```", doc, re.S).group(1)
    documented = [line.split("|", 1)[1].strip() for line in block.splitlines() if "|" in line]
    assert [" | ".join(sorted(x.strip() for x in floor.split("|"))) for floor in documented] == [
        " | ".join(sorted(x.strip() for x in floor.split("|"))) for floor in layers
    ]


def test_the_store_reader_needs_numpy_only():
    code = (
        "import sys, isam2.store.reader; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"
