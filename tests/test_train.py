"""`python -m isam2.train` end to end on a tiny set: run directory contents, repeatable seeds, exact resume."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from isam2.data.datasets import VSPW

from .train_helpers import TINY_DATA, run_cli, scalar_metrics, tiny_overrides

METRIC_KEYS = {
    "miou",
    "fwiou",
    "mbiou",
    "mvc8",
    "mvc16",
    "per_class_iou",
    "num_frames",
    "num_videos",
    "protocol",
}
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("train_shared")


@pytest.fixture(scope="module")
def straight_run(shared, tmp_path_factory):
    """3 epochs, seed 0 (also builds the shared data and stores on first use)."""
    tmp = tmp_path_factory.mktemp("straight")
    proc = run_cli("isam2.train", [*tiny_overrides(tmp, shared), "seed=0"])
    return tmp / "run", proc


def test_run_directory_holds_config_metrics_checkpoints_predictions_metadata(straight_run, shared):
    run, proc = straight_run
    assert (run / ".hydra" / "config.yaml").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert "mIoU" in proc.stdout and f"{metrics['miou'] * 100:.1f}" in proc.stdout  # the paper-style table
    test = VSPW(shared / "data", "test")
    assert metrics["num_videos"] == len(test) and metrics["num_frames"] == test.num_frames
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and len(ckpts) == 2
    for video in test.videos:
        for name in video.frame_names:
            png = np.asarray(Image.open(run / "predictions" / video.id / f"{name}.png"))
            assert png.shape == video.size and png.dtype == np.uint8
    meta = json.loads((run / "metadata.json").read_text())
    assert meta["backbone"]["checkpoint_sha256"] == "random" or "random" in json.dumps(meta["backbone"])
    assert meta["versions"]["torch"] and meta["seed"] == 0
    assert "RANDOM" in proc.stdout + proc.stderr  # says the weights are random


def test_resume_from_epoch_checkpoint_matches_uninterrupted_run(straight_run, shared, tmp_path):
    straight = json.loads((straight_run[0] / "metrics.json").read_text())
    # "killed" after epoch 1: same schedule (T_max of the 3-epoch run), stopped after one epoch
    first = [*tiny_overrides(tmp_path, shared), "seed=0", "trainer.max_epochs=1", "model.scheduler.T_max=3"]
    run_cli("isam2.train", first)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    resumed = [*tiny_overrides(tmp_path, shared), "seed=0", f"ckpt_path={last}"]
    run_cli("isam2.train", resumed)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert scalar_metrics(metrics) == pytest.approx(scalar_metrics(straight), abs=1e-9)
    assert metrics["per_class_iou"] == pytest.approx(straight["per_class_iou"], abs=1e-9, nan_ok=True)


def test_bad_ckpt_path_is_a_clear_error(shared, tmp_path):
    proc = run_cli(
        "isam2.train", [*tiny_overrides(tmp_path, shared), f"ckpt_path={tmp_path}/nope.ckpt"], check=False
    )
    assert proc.returncode == 2 and "ckpt_path" in proc.stderr and "nope.ckpt" in proc.stderr


def test_base_fill_without_base_pred_dir_is_a_clear_error(shared, tmp_path):
    proc = run_cli("isam2.train", [*tiny_overrides(tmp_path, shared), "segment.fill=base"], check=False)
    assert proc.returncode == 2 and "base_pred_dir" in proc.stderr


def test_evaluate_reproduces_the_test_stage(straight_run, shared, tmp_path):
    run, _ = straight_run
    metrics = json.loads((run / "metrics.json").read_text())
    overrides = [
        o
        for o in tiny_overrides(tmp_path, shared)
        if o.split("=")[0].split(".")[0] in ("data", "sam2", "paths", "hydra")
    ]
    proc = run_cli("isam2.evaluate", [*overrides, "data.split=test", f"ckpt_path={metrics['checkpoint']}"])
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert scalar_metrics(again) == pytest.approx(scalar_metrics(metrics), abs=1e-9)
    assert "mIoU" in proc.stdout


def test_evaluate_refuses_a_checkpoint_for_another_class_count(straight_run, shared, tmp_path):
    metrics = json.loads((straight_run[0] / "metrics.json").read_text())
    overrides = [
        o
        for o in tiny_overrides(tmp_path, shared)
        if o.split("=")[0].split(".")[0] in ("data", "sam2", "paths", "hydra")
    ]
    proc = run_cli(
        "isam2.evaluate",
        [*overrides, "data.split=test", "data.num_classes=10", f"ckpt_path={metrics['checkpoint']}"],
        check=False,
    )
    assert proc.returncode == 2
    assert "124 classes" in proc.stderr and "10 classes" in proc.stderr


assert TINY_DATA.num_test >= 2  # the sharding tests need at least two test videos
