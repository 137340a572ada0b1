"""`python -m isam2.train` end to end on a tiny set: run directory contents, repeatable seeds, exact resume."""

from __future__ import annotations

import errno
import importlib.metadata
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from isam2.data.datasets import VSPW
from isam2.errors import ISAM2Error
from isam2.metrics.results import MethodScores, SelectionRecord, SpeedRecord, TestResults, schema_problems
from tests.reliability.harness import assert_refused, temp_files

from .train_helpers import (
    REPO,
    TINY_DATA,
    assert_same_weights,
    coverage_brute_force,
    epoch_logs,
    run_cli,
    scalar_metrics,
    tiny_overrides,
)

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
EPOCHS = 4
RUN = ["seed=0", f"trainer.max_epochs={EPOCHS}", "model.head.dropout=0.1"]  # a resume must repeat dropout too
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("train_shared")


@pytest.fixture(scope="module")
def straight_run(shared, tmp_path_factory):
    """EPOCHS epochs uninterrupted, seed 0, dropout 0.1 (also builds the shared data and stores on first use)."""
    tmp = tmp_path_factory.mktemp("straight")
    proc = run_cli("isam2.train", [*tiny_overrides(tmp, shared), *RUN])
    return tmp / "run", proc


def test_run_directory_holds_config_metrics_checkpoints_predictions_metadata(straight_run, shared):
    run, proc = straight_run
    assert (run / ".hydra" / "config.yaml").is_file()
    metrics = json.loads((run / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics)
    assert (
        schema_problems(metrics, TestResults) == []
        and schema_problems(metrics["selection"], SelectionRecord) == []
    )
    assert all(schema_problems(m, MethodScores) == [] for m in metrics["methods"].values())
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
    backbone = meta["backbone"]  # random weights: no checkpoint, recorded as such
    assert backbone["checkpoint"] is None and backbone["checkpoint_sha256"] == "random"
    assert backbone["random_weights"] is True
    assert meta["versions"]["torch"] == importlib.metadata.version("torch") and meta["seed"] == 0
    assert "RANDOM" in proc.stdout + proc.stderr  # says the weights are random
    # the checkpoint was selected on held-out train videos, recorded in metrics.json and metadata.json
    selection = metrics["selection"]
    train_ids = [v.id for v in VSPW(shared / "data", "train").videos]
    assert selection["mode"] == "held_out" and selection["monitor"] == "selection/miou"
    assert 1 <= len(selection["videos"]) < len(train_ids) and set(selection["videos"]) <= set(train_ids)
    assert meta["selection"] == selection
    # the table is in train.log too; Lightning's INFO lines print once; its tips and known warnings are gone
    log = (run / "train.log").read_text()
    assert f"{metrics['miou'] * 100:.1f}" in log and "I-SAM2" in log
    output = proc.stdout + proc.stderr
    assert output.count("GPU available") == 1
    for noise in ("litlogger", "litmodels", "not writable", "does not have many workers"):
        assert noise not in output, noise


def test_last_ckpt_is_the_last_epoch_and_the_best_is_kept_beside_it(straight_run):
    run, _ = straight_run
    miou = [epoch_logs(run)[epoch]["selection/miou"] for epoch in range(EPOCHS)]
    best_epoch = int(np.argmax(miou))  # the first maximum: a tie is no improvement
    assert best_epoch != EPOCHS - 1, "this test needs a run whose best epoch is not its last"
    ckpts = {
        p.name: torch.load(p, map_location="cpu", weights_only=True) for p in (run / "checkpoints").iterdir()
    }
    best = run / json.loads((run / "metrics.json").read_text())["checkpoint"]  # relative to the run
    assert set(ckpts) == {"last.ckpt", best.name} and best.parent == run / "checkpoints"
    assert ckpts["last.ckpt"]["epoch"] == EPOCHS - 1
    assert ckpts[best.name]["epoch"] == best_epoch


def test_resume_after_half_the_epochs_repeats_every_epoch_and_the_final_weights(
    straight_run, shared, tmp_path
):
    straight = straight_run[0]
    # stopped after half the epochs, on the schedule of the whole run (T_max), then resumed in place
    args = [*tiny_overrides(tmp_path, shared), *RUN]
    run_cli("isam2.train", [*args, f"trainer.max_epochs={EPOCHS // 2}", f"model.scheduler.T_max={EPOCHS}"])
    run = tmp_path / "run"
    first_half = epoch_logs(run)  # read now: the resumed run starts a new CSV log
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == EPOCHS // 2 - 1
    run_cli("isam2.train", [*args, f"ckpt_path={last}"])
    second_half = epoch_logs(run)
    assert sorted(second_half) == list(range(EPOCHS // 2, EPOCHS))  # continued after the last completed epoch
    assert {**first_half, **second_half} == epoch_logs(straight)  # every loss, accuracy and mIoU, exactly
    assert_same_end(run, straight)


def assert_same_end(run: Path, reference: Path) -> None:
    """The runs end with the same head (last.ckpt, bit for bit) and the same test metrics of every method."""
    assert_same_weights(run / "checkpoints" / "last.ckpt", reference / "checkpoints" / "last.ckpt")
    metrics, expected = (json.loads((r / "metrics.json").read_text()) for r in (run, reference))
    assert metrics == expected  # the best checkpoint's name (relative to the run) too


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_run_killed_while_writing_a_checkpoint_resumes_to_the_same_end(
    straight_run, shared, tmp_path, seed
):
    straight = straight_run[0]
    rng = np.random.default_rng(seed)
    # SIGKILL partway through the (skip+1)-th checkpoint file; skip >= 2 leaves epoch 0's best and last whole
    skip = int(rng.integers(2, EPOCHS + 1))
    nbytes = int(rng.integers(0, (straight / "checkpoints" / "last.ckpt").stat().st_size))
    fault = {"ISAM2_FAULT": "kill", "ISAM2_FAULT_FILE": "*/checkpoints/*.ckpt"}
    fault |= {"ISAM2_FAULT_SKIP": str(skip), "ISAM2_FAULT_BYTES": str(nbytes)}
    args = [*tiny_overrides(tmp_path, shared), *RUN]
    proc = run_cli("tests.reliability.faults", ["isam2.train", *args], env=fault, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    run = tmp_path / "run"
    last = run / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] < EPOCHS - 1  # whole, and earlier
    run_cli("isam2.train", [*args, f"ckpt_path={last}"])
    assert_same_end(run, straight)
    assert temp_files([run]) == []  # the killed write's temporary file is gone too


SLURM_TASK = {  # what srun sets for the one task of job 4242 on one node
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "isam2-train",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_NNODES": "1",
    "SLURM_NODELIST": "localhost",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}


def test_a_preempted_slurm_job_is_requeued_and_resumes_to_the_same_end(straight_run, shared, tmp_path):
    """SIGUSR1 reaches the training task at the end of epoch 1, as `#SBATCH --signal=SIGUSR1@90` sends it:
    Lightning's SLURMEnvironment saves its checkpoint and runs `scontrol requeue 4242`, and a fake scontrol
    records that and SIGKILLs the task, as SLURM ends a requeued job. The requeued job (the same command in the
    same run dir, SLURM_RESTART_COUNT=1) resumes from last.ckpt and ends like the uninterrupted run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {bin_dir / "calls"}\nkill -9 $PPID\n')
    (bin_dir / "scontrol").chmod(0o755)
    slurm = {**SLURM_TASK, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    args = [*tiny_overrides(tmp_path, shared), *RUN]
    at_epoch_1 = [
        "+callbacks.signal._target_=tests.train_helpers.SignalAtEpochEnd",
        "+callbacks.signal.epoch=1",
    ]
    proc = run_cli("isam2.train", [*args, *at_epoch_1], env=slurm, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    assert (bin_dir / "calls").read_text().split() == ["requeue", "4242"]
    run, last = tmp_path / "run", tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert [p.name for p in run.glob("hpc_ckpt_*.ckpt")] == ["hpc_ckpt_1.ckpt"]  # Lightning's, mid-epoch
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 0  # epoch 1 never finished
    requeued = run_cli("isam2.train", args, env={**slurm, "SLURM_RESTART_COUNT": "1"})
    assert f"requeued SLURM job 4242: resuming from {last}" in requeued.stdout
    assert_same_end(run, straight_run[0])


def test_the_sbatch_script_asks_for_sigusr1_before_the_time_limit_and_allows_requeue():
    script = (REPO / "scripts" / "slurm" / "train.sbatch").read_text().splitlines()
    options = [line.split()[1] for line in script if line.startswith("#SBATCH ")]
    assert "--signal=SIGUSR1@90" in options and "--requeue" in options
    assert "--open-mode=append" in options  # the requeued job's log goes after the first one's
    assert 'RUN_DIR="outputs/train/slurm/${SLURM_JOB_ID}"' in script  # the same run dir after a requeue


def test_a_checkpoint_save_that_fails_partway_keeps_the_previous_one(tmp_path, monkeypatch):
    from hydra import compose, initialize_config_dir

    from isam2 import files
    from isam2.pipelines.trainer import build_trainer
    from tests.reliability.faults import faulty_opener

    overrides = [f"paths.output_dir={tmp_path}", "logger=none", "trainer=cpu"]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        checkpoint_io = build_trainer(compose("train", overrides=overrides)).strategy.checkpoint_io
    last = tmp_path / "checkpoints" / "last.ckpt"
    checkpoint_io.save_checkpoint({"epoch": 1, "state_dict": {"w": torch.ones(256)}}, last)
    # the temp dir on another file system (node-local /tmp, a shared run dir): a rename into the checkpoint
    # folder from elsewhere fails with EXDEV (shutil.move then copies); and that folder's disk is full
    rename = os.rename

    def rename_across_file_systems(src, dst, *args, **kwargs):
        if Path(src).resolve().parent != Path(dst).resolve().parent:
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
        return rename(src, dst, *args, **kwargs)

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "rename", rename_across_file_systems)
    monkeypatch.setattr(os, "sendfile", disk_full)
    monkeypatch.setattr(files, "_open_for_write", faulty_opener("enospc", str(last)))
    with pytest.raises((OSError, ISAM2Error), match="disk is full|No space left"):
        checkpoint_io.save_checkpoint({"epoch": 2, "state_dict": {"w": torch.zeros(256)}}, last)
    assert torch.load(last, map_location="cpu", weights_only=True)["epoch"] == 1  # whole, the previous one
    assert temp_files([tmp_path]) == []


def test_bad_ckpt_path_is_a_clear_error(shared, tmp_path):
    proc = run_cli(
        "isam2.train", [*tiny_overrides(tmp_path, shared), f"ckpt_path={tmp_path}/nope.ckpt"], check=False
    )
    assert proc.returncode == 2 and "ckpt_path" in proc.stderr and "nope.ckpt" in proc.stderr


@pytest.mark.parametrize("override", ["trainer.max_epochs=0", "+trainer.max_steps=0"])
def test_a_fit_of_no_epoch_or_step_is_refused_before_any_work(tmp_path, override):
    # it would skip the fit and test the untrained head as if trained
    culprit = f"error: {override.lstrip('+')} trains nothing"
    line = assert_refused("isam2.train", [*tiny_overrides(tmp_path), override], culprit)
    assert "untrained" in line
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no data generated, no store built
    run = tmp_path / "run"
    assert not (run / "checkpoints").exists() and not (run / "metrics.json").exists()


def test_base_fill_without_base_pred_dir_is_a_clear_error(shared, tmp_path):
    proc = run_cli("isam2.train", [*tiny_overrides(tmp_path, shared), "segment.fill=base"], check=False)
    assert proc.returncode == 2 and "base_pred_dir" in proc.stderr


def test_evaluate_reproduces_the_test_stage(straight_run, shared, tmp_path):
    run, _ = straight_run
    metrics = json.loads((run / "metrics.json").read_text())
    ckpt = run / metrics.pop("checkpoint")  # relative to the run
    proc = run_cli(
        "isam2.evaluate", [*_eval_overrides(tmp_path, shared), "data.split=test", f"ckpt_path={ckpt}"]
    )
    again = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert schema_problems(again, TestResults) == [] and schema_problems(again["speed"], SpeedRecord) == []
    assert again.pop("checkpoint") == str(ckpt)
    assert set(again.pop("speed")) >= {"fps", "frames", "seconds", "masklets_per_frame"}  # evaluate's own
    assert metrics.pop("selection")["mode"] == "held_out"  # train's own: how its checkpoint was selected
    assert again == metrics  # every metric of the test stage, exactly
    assert "mIoU" in proc.stdout


def test_evaluate_refuses_a_checkpoint_for_another_class_count(straight_run, shared, tmp_path):
    run = straight_run[0]
    ckpt = run / json.loads((run / "metrics.json").read_text())["checkpoint"]
    proc = run_cli(
        "isam2.evaluate",
        [*_eval_overrides(tmp_path, shared), "data.split=test", "data.num_classes=10", f"ckpt_path={ckpt}"],
        check=False,
    )
    assert proc.returncode == 2
    assert "124 classes" in proc.stderr and "10 classes" in proc.stderr


assert TINY_DATA.num_test >= 2  # the sharding tests need at least two test videos


# ---- issue 5: the evaluation table (I-SAM2, I-SAM2_base, base, SAM2-refiner), coverage, DDP, bad input


def _eval_overrides(tmp_path, shared):
    keep = ("data", "sam2", "paths", "hydra")
    return [o for o in tiny_overrides(tmp_path, shared) if o.split("=")[0].split(".")[0] in keep]


def _miou_brute_force(preds: list[np.ndarray], gts: list[np.ndarray], num_classes: int = 124) -> float:
    """Mean IoU over classes present in GT, from per-class pixel counts (docs/metrics.md)."""
    p, g = np.concatenate([x.ravel() for x in preds]).astype(int), np.concatenate([x.ravel() for x in gts])
    p, g = p[g != 255], g[g != 255].astype(int)
    ious = []
    for c in np.unique(g):
        inter = np.sum((p == c) & (g == c))
        ious.append(inter / (np.sum(g == c) + np.sum(p == c) - inter))
    return float(np.mean(ious))


@pytest.fixture(scope="module")
def evaluated_with_base(straight_run, shared, tmp_path_factory):
    from tests.noisy import write_noisy_base

    tmp = tmp_path_factory.mktemp("eval_base")
    test = VSPW(shared / "data", "test")
    base_dir = write_noisy_base(test, tmp / "base", seed=3)
    ckpt = straight_run[0] / json.loads((straight_run[0] / "metrics.json").read_text())["checkpoint"]
    args = [
        *_eval_overrides(tmp, shared),
        "data.split=test",
        f"ckpt_path={ckpt}",
        f"base_pred_dir={base_dir}",
    ]
    return tmp, base_dir, args, run_cli("isam2.evaluate", args)


def test_evaluate_with_a_base_reports_the_four_methods(evaluated_with_base, shared):
    from isam2.store.reader import MaskletStore
    from tests.test_segment import _refine_brute_force

    tmp, base_dir, _, proc = evaluated_with_base
    metrics = json.loads((tmp / "run" / "metrics.json").read_text())
    assert "speed:" in proc.stdout and "frames/s" in proc.stdout
    assert set(metrics["methods"]) == {"I-SAM2", "I-SAM2_base", "base", "SAM2-refiner"}
    for name in metrics["methods"]:
        assert name in proc.stdout
    test = VSPW(shared / "data", "test")
    gts = [v.load_masks() for v in test]
    bases = [
        np.stack([np.asarray(Image.open(base_dir / v.id / f"{n}.png")) for n in v.frame_names]) for v in test
    ]
    (store_path,) = {
        p.parent for p in (shared / "stores").rglob("manifest.json") if "-test-" in p.parent.name
    }
    store = MaskletStore(store_path)
    refined = [_refine_brute_force(b, store.id_maps(v.id)) for b, v in zip(bases, test)]
    speed = metrics["speed"]  # timings are not asserted, only what they are measured over
    assert {"fps", "seconds", "measured"} <= set(speed) and speed["frames"] == test.num_frames
    assert speed["masklets_per_frame"] == pytest.approx(masklets_per_frame_brute_force(store), rel=1e-12)
    rows = metrics["methods"]
    assert rows["base"]["miou"] == pytest.approx(_miou_brute_force(bases, gts), abs=1e-9)
    assert rows["SAM2-refiner"]["miou"] == pytest.approx(_miou_brute_force(refined, gts), abs=1e-9)
    # I-SAM2 leaves uncovered pixels void (always wrong there); the base fill-in changes only those pixels
    coverage = coverage_brute_force(store, test.videos)
    assert 0 < coverage < 1  # some valid pixels lie outside every masklet, so acc_outside is defined
    for name in rows:
        assert rows[name]["coverage"] == pytest.approx(coverage, rel=1e-12), name
    assert rows["I-SAM2"]["acc_outside"] == 0.0
    assert rows["I-SAM2_base"]["acc_inside"] == rows["I-SAM2"]["acc_inside"]
    assert metrics["method"] == "I-SAM2" and metrics["miou"] == rows["I-SAM2"]["miou"]


def masklets_per_frame_brute_force(store) -> float:
    """Store rows counted frame by frame over every frame of every video, divided by the frames."""
    rows = frames = 0
    for video_id in store.videos():
        of_video = np.asarray(store.frame[store.rows(video_id)])
        for t in range(store.num_frames(video_id)):
            rows += int(np.sum(of_video == t))
            frames += 1
    return rows / frames


def test_evaluate_two_processes_equal_one(evaluated_with_base, tmp_path):
    tmp, _, args, _ = evaluated_with_base
    args = [a if not a.startswith("hydra.run.dir=") else f"hydra.run.dir={tmp_path}/run" for a in args]
    run_cli("isam2.evaluate", [*args, "trainer=ddp_cpu"])
    one = json.loads((tmp / "run" / "metrics.json").read_text())["methods"]
    two = json.loads((tmp_path / "run" / "metrics.json").read_text())["methods"]
    for name in one:
        assert scalar_metrics(two[name]) == pytest.approx(scalar_metrics(one[name]), abs=1e-9)


@pytest.mark.parametrize("damage", ["missing", "wrong_size"])
def test_evaluate_names_a_bad_base_prediction(evaluated_with_base, shared, tmp_path, damage):
    import shutil

    _, base_dir, args, _ = evaluated_with_base
    broken = shutil.copytree(base_dir, tmp_path / "base")
    victim = sorted(broken.rglob("*.png"))[2]
    if damage == "missing":
        victim.unlink()
    else:
        Image.fromarray(np.zeros((10, 12), np.uint8)).save(victim)
    args = [a for a in args if not a.startswith(("base_pred_dir=", "hydra.run.dir="))]
    proc = run_cli(
        "isam2.evaluate", [*args, f"base_pred_dir={broken}", f"hydra.run.dir={tmp_path}/run"], check=False
    )
    assert proc.returncode == 2
    if damage == "missing":
        frames = VSPW(shared / "data", "test").num_frames
        named = f"1 of {frames} ground-truth frames have no prediction in {broken}: {victim.parent.name}/{victim.name}"
    else:
        height, width = np.asarray(Image.open(base_dir / victim.relative_to(broken))).shape
        named = f"{victim} is 10x12 but its ground truth is {height}x{width} (HxW)"
    assert f"error: {named}" in proc.stderr.splitlines()


def test_a_store_of_another_split_is_refused(straight_run, shared):
    from isam2.datamodules.stores import VideoBatches
    from isam2.errors import ISAM2Error
    from isam2.store.reader import MaskletStore

    (train_store,) = {
        p.parent for p in (shared / "stores").rglob("manifest.json") if "-train-" in p.parent.name
    }
    with pytest.raises(ISAM2Error, match="built from split 'train'.*split 'test'"):
        VideoBatches(MaskletStore(train_store), VSPW(shared / "data", "test"))
