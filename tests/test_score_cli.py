"""`python -m isam2.score` end to end: 1 vs 2 DDP processes, the numpy reference, options, and bad input."""

import json
import shutil

import numpy as np
import pytest

from isam2.data.datasets import VSPW
from isam2.data.predictions import prediction_path, read_prediction, write_prediction
from isam2.metrics.results import ScoreResults, schema_problems
from tests.test_metrics_video import KEYS, load_baseline
from tests.train_helpers import run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def scored_set(tmp_path_factory):
    """A tiny synthetic VSPW tree and predictions: GT with random flips, some 255 and some out-of-range 200."""
    root = tmp_path_factory.mktemp("score")
    sizes = [
        "num_train=1",
        "num_val=3",
        "num_test=1",
        "height=48",
        "width=64",
        "min_frames=12",
        "max_frames=22",
    ]
    run_cli("isam2.data.synthetic", [f"root={root / 'data'}", *sizes])
    rng = np.random.default_rng(0)
    for v in VSPW(root / "data", "val"):
        for i, name in enumerate(v.frame_names):
            p = v.load_mask(i).copy()
            noise = rng.random(p.shape)
            p[noise < 0.05] = rng.integers(0, 12, (noise < 0.05).sum())
            p[noise > 0.99] = 255
            p[(noise > 0.985) & (noise <= 0.99)] = 200
            write_prediction(prediction_path(root / "pred", v.id, name), p)
    return root


def run_score(root, *overrides, run="run"):
    """`python -m isam2.score` (in this process; with trainer.devices=2 a real one, whose ranks relaunch it)."""
    args = [f"pred_dir={root / 'pred'}", f"data.root={root / 'data'}", "data.split=val"]
    args += [f"hydra.run.dir={root / run}", f"paths.root_dir={root}", *overrides]
    return run_cli("isam2.score", args, check=False)


def reference(root, classes="gt", protocol="cffm"):
    videos = []
    for v in VSPW(root / "data", "val"):
        pred = np.stack(
            [read_prediction(prediction_path(root / "pred", v.id, n), v.size) for n in v.frame_names]
        )
        videos.append((pred, v.load_masks()))
    return load_baseline().reference_metrics(videos, 124, classes, protocol)


def test_one_and_two_processes_agree_and_match_the_reference(scored_set, tmp_path):
    one = run_score(scored_set, f"output={tmp_path / 'copy.json'}", run="one")
    assert one.returncode == 0, one.stderr
    two = run_score(scored_set, "trainer.accelerator=cpu", "trainer.devices=2", run="two")
    assert two.returncode == 0, two.stderr
    a = json.loads((scored_set / "one" / "metrics.json").read_text())
    b = json.loads((scored_set / "two" / "metrics.json").read_text())
    assert json.loads((tmp_path / "copy.json").read_text()) == a
    ref = reference(scored_set)
    for k in KEYS:
        assert a[k] is not None and 0 <= a[k] <= 1
        assert abs(a[k] - b[k]) <= 1e-9, k
        assert abs(a[k] - ref[k]) <= 1e-9, k
    assert (
        a["per_class_iou"] == pytest.approx(b["per_class_iou"], abs=1e-9) and len(a["per_class_iou"]) == 124
    )
    assert (
        (a["num_frames"], a["num_videos"])
        == (b["num_frames"], b["num_videos"])
        == (sum(1 for _ in (scored_set / "pred").rglob("*.png")), 3)
    )
    assert a["protocol"]["miou_classes"] == "gt" and a["protocol"]["vc_protocol"] == "cffm"
    # the table: percent with one decimal, class names from the dataset
    row = next(line for line in one.stdout.splitlines() if line.startswith("pred "))
    assert row.split()[1:] == [f"{100 * a[k]:.1f}" for k in KEYS]
    assert "0 sky" in one.stdout or "1 grass" in one.stdout
    # out-of-range predictions: warned once, with the count
    warned = [line for line in (one.stdout + one.stderr).splitlines() if "outside [0, 124)" in line]
    assert len(warned) == 1 and str(a["num_invalid_pred"]) in warned[0] and a["num_invalid_pred"] > 0


def test_protocol_options(scored_set):
    res = run_score(scored_set, "metrics.miou_classes=union", "metrics.vc_protocol=paper", run="paper")
    assert res.returncode == 0, res.stderr
    out = json.loads((scored_set / "paper" / "metrics.json").read_text())
    assert schema_problems(out, ScoreResults) == []
    ref = reference(scored_set, "union", "paper")
    assert all(abs(out[k] - ref[k]) <= 1e-9 for k in KEYS)
    assert out["protocol"]["miou_classes"] == "union" and out["protocol"]["vc_protocol"] == "paper"


def broken_copy(scored_set, tmp_path, how):
    pred = tmp_path / "pred"
    shutil.copytree(scored_set / "pred", pred)
    files = sorted(pred.rglob("*.png"))
    if how == "missing":
        files[3].unlink()
        files[5].unlink()
    elif how == "size":
        write_prediction(files[4], np.zeros((10, 10), np.uint8))
    elif how == "unreadable":
        files[4].write_bytes(files[4].read_bytes()[:60])  # header intact, pixel data cut
    elif how == "empty":
        shutil.rmtree(pred)
        pred.mkdir()
    return pred, files


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("missing", r"2 of \d+ ground-truth frames have no prediction"),
        ("size", r"is 10x10 but its ground truth is 48x64"),
        ("unreadable", r"unreadable or truncated prediction PNG"),
        ("empty", r"is empty"),
    ],
)
def test_bad_input_stops_with_one_clear_message(scored_set, tmp_path, how, message):
    import re

    pred, files = broken_copy(scored_set, tmp_path, how)
    for devices in ("1", "2") if how == "unreadable" else ("1",):
        args = [
            f"pred_dir={pred}",
            f"data.root={scored_set / 'data'}",
            f"hydra.run.dir={tmp_path / ('run' + devices)}",
        ]
        args += [f"paths.root_dir={tmp_path}", f"trainer.devices={devices}"]
        res = run_cli("isam2.score", args, check=False)
        assert res.returncode == 2, res.stderr
        errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and re.search(message, errors[0]), res.stderr
        if how in ("size", "unreadable"):
            assert files[4].name in errors[0] and files[4].parent.name in errors[0]
        if how == "missing":
            assert files[3].parent.name + "/" + files[3].name in errors[0]
        assert not (tmp_path / ("run" + devices) / "metrics.json").exists()
