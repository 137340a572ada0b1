"""The notebooks run top to bottom on the current code (executed headless; committed without outputs): the
quickstart tour, and the analysis notebooks against a tiny train run and a refine run of its predictions."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.train_helpers import run_cli, tiny_overrides

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"


def execute(name: str, cwd: Path) -> list[dict]:
    """Run notebooks/<name> in a fresh kernel; returns the code cells' outputs, in order."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert not any(c.get("outputs") or c.get("execution_count") for c in code), (
        f"commit {name} without outputs"
    )
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return [o for c in code for o in c.outputs]


def text_of(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") + o.get("data", {}).get("text/plain", "") for o in outputs)


def images_of(outputs: list[dict]) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


@pytest.fixture(autouse=True)
def kernel_imports_this_tree(monkeypatch):
    """The kernel imports isam2 from this checkout (not another editable install of it)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))


@pytest.fixture(scope="module")
def refine_run(dashboard_run: Path) -> Path:
    """`python -m isam2.refine` of the dashboard run's test predictions (GT masklets, the same tiny data)."""
    shared = dashboard_run.parent
    data = [o for o in tiny_overrides(shared) if o.startswith(("data.", "sam2.", "paths.store_dir"))]
    run_cli(
        "isam2.refine",
        [
            "data=synthetic",
            "masklets=gt",
            "masklets.pooling.levels=[2]",  # the train run's (experiment=demo): its test store is reused
            *data,
            "data.split=test",
            f"base_pred_dir={dashboard_run / 'predictions'}",
            f"hydra.run.dir={shared / 'refine'}",
        ],
    )
    return shared / "refine"


def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("ISAM2_REPO", str(REPO))
    text = text_of(execute("quickstart.ipynb", tmp_path))
    assert "SAM2-refiner" in text and "oracle masklet labels" in text


def test_masklets_notebook_shows_store_statistics(dashboard_run, monkeypatch):
    monkeypatch.setenv("ISAM2_RUN_DIR", str(dashboard_run))
    outputs = execute("masklets.ipynb", NOTEBOOKS)
    assert "mean_masklets_per_frame" in text_of(outputs) and "'mean_purity': 1.0" in text_of(outputs)
    assert images_of(outputs) == 1 + 2 * 2  # statistics, then outlines and overlay of two frames


def test_results_notebook_compares_methods_and_finds_worst_frames(dashboard_run, refine_run, monkeypatch):
    monkeypatch.setenv("ISAM2_RUN_DIR", str(dashboard_run))
    monkeypatch.setenv("ISAM2_REFINE_DIR", str(refine_run))
    outputs = execute("results.ipynb", NOTEBOOKS)
    text = text_of(outputs)
    for method in ("run I-SAM2", "refine base", "refine refined"):
        assert method in text, method
    assert "FrameScore(video='test_" in text
    assert images_of(outputs) == 4  # methods, per-class IoU, confusion, worst frames


def test_compare_runs_notebook_tables_several_runs(dashboard_run, refine_run, monkeypatch):
    monkeypatch.setenv("ISAM2_RUN_DIRS", os.pathsep.join([str(dashboard_run), str(refine_run)]))
    outputs = execute("compare_runs.ipynb", NOTEBOOKS)
    text = text_of(outputs)
    assert "swept: [" in text and "base_pred_dir" in text  # refine's override, absent from the train run
    assert "I-SAM2" in text and "refined" in text
    assert images_of(outputs) == 1


def test_predict_notebook_segments_a_video_with_the_api(dashboard_run, monkeypatch):
    monkeypatch.setenv("ISAM2_RUN_DIR", str(dashboard_run))
    outputs = execute("predict.ipynb", NOTEBOOKS)
    text = text_of(outputs)
    assert "8 frames, masklets per frame:" in text and "masklet 0 (track" in text
    assert images_of(outputs) == 1  # the three overlays in one figure
