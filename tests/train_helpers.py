"""Helpers for the training tests: a tiny synthetic set, a SAM2-free toy masklet store, and CLI runners."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import runpy
import signal
import socket
import subprocess
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from lightning.pytorch.callbacks import Callback

from isam2.data.datasets import VSPW
from isam2.data.synthetic import SyntheticConfig, ensure_synthetic
from isam2.store.reader import MaskletStore
from isam2.store.writer import VideoShard, finalize_store, paint_id_map, prepare_folder, write_video_shard

REPO = Path(__file__).resolve().parents[1]
TINY_DATA = SyntheticConfig(
    num_train=3, num_val=2, num_test=2, min_frames=4, max_frames=5, height=64, width=96, seed=0
)


def tiny_dataset(root: Path, split: str, data: SyntheticConfig = TINY_DATA) -> VSPW:
    ensure_synthetic(root, data)
    return VSPW(root, split)


def toy_store(
    path: Path,
    dataset: VSPW,
    dim: int = 16,
    noise: float = 0.3,
    seed: int = 0,
    skip: Callable[[str, int], bool] | None = None,
) -> MaskletStore:
    """A store written with the store's own writer: one masklet per GT class per frame, features = a
    per-class prototype + noise (no SAM2), so a head can learn them and tests stay fast. Frames for which
    `skip(video_id, frame_index)` is true get no masklet."""
    prototypes = np.random.default_rng(1234).normal(size=(256, dim))
    rng = np.random.default_rng(seed)
    prepare_folder(path, {"toy": dataset.split, "dim": dim}, force=True)
    ids = []
    for video in dataset.videos:
        gt = video.load_masks()
        rows = {k: [] for k in ("features", "frame", "track", "area", "score", "label", "purity", "valid")}
        id_maps, first = [], 0
        for t, mask in enumerate(gt):
            classes = [] if skip and skip(video.id, t) else [c for c in np.unique(mask) if c != 255]
            masks = np.stack([mask == c for c in classes]) if classes else np.zeros((0, *mask.shape), bool)
            n = len(classes)
            rows["features"].append(
                (prototypes[classes] + noise * rng.normal(size=(n, dim))).astype(np.float16)
            )
            rows["frame"].append(np.full(n, t))
            rows["track"].append(np.asarray(classes, np.int64))
            rows["area"].append(masks.sum(axis=(1, 2)))
            rows["score"].append(np.ones(n, np.float32))
            rows["label"].append(np.asarray(classes, np.uint8))
            rows["purity"].append(np.ones(n, np.float32))
            rows["valid"].append(masks.sum(axis=(1, 2)))
            id_maps.append(paint_id_map(masks, np.ones(n), first))  # local rows of the video
            first += n
        rows = {k: np.concatenate(v) for k, v in rows.items()}
        write_video_shard(path, video.id, VideoShard(rows=rows, id_maps=id_maps))
        ids.append(video.id)
    finalize_store(
        path, ids, {"config_hash": json.loads((path / "identity.json").read_text())["config_hash"]}, dim
    )
    return MaskletStore(path)


def tiny_overrides(tmp: Path, shared: Path | None = None, data: SyntheticConfig = TINY_DATA) -> list[str]:
    """CLI overrides of a seconds-long train run: 7 tiny videos at 64x96 (or `data`), SAM2 at 64 px,
    3 epochs, CSV logs.

    `shared` holds the data and stores (built on first use, reused by later runs)."""
    shared = shared or tmp
    return [
        f"data.root={shared}/data",
        *(
            f"data.generate.{k}={getattr(data, k)}"
            for k in ("num_train", "num_val", "num_test", "min_frames", "max_frames", "height", "width")
        ),
        "sam2.image_size=64",
        f"paths.store_dir={shared}/stores",
        f"hydra.run.dir={tmp}/run",
        "logger=csv",
        "trainer.max_epochs=3",
        "trainer.check_val_every_n_epoch=1",
        "datamodule.batch_size=16",
        "callbacks.rich_progress_bar=null",
        "++figures=false",  # the figures (matplotlib) have tests of their own: test_wandb, test_notebooks
    ]


def run_cli(
    module: str,
    overrides: list[str],
    timeout: int = 600,
    env: dict | None = None,
    check: bool = True,
    spawn: bool = False,
) -> subprocess.CompletedProcess:
    """`python -m <module> <overrides>` from the repo root; fails the test with its output on error.

    In this process by default (`runpy`, as `python -m` runs it: Hydra, the user-error exit, exit codes and
    both streams), which spares every run the seconds of importing torch, Lightning, Hydra and sam2 anew.
    `spawn=True` starts a real process: for what only a process shows (signals, kills, DDP ranks, relaunching
    itself, what the interpreter prints at exit)."""
    if spawn or needs_a_process(module, overrides, env):
        return _spawn(module, overrides, timeout, env, check)
    return _in_process(module, overrides, env, check)


def needs_a_process(module: str, overrides: list[str], env: dict | None = None) -> bool:
    """Runs that only a real process can host: the fault injector (it kills its own process), several ranks
    (Lightning relaunches the command line per rank), SLURM (signal handlers, requeue)."""
    several = any(
        o.startswith(("trainer=ddp", "trainer.devices=2", "trainer.num_nodes=2")) for o in overrides
    )
    slurm = any(key.startswith("SLURM_") for key in env or {})
    return module.startswith("tests.reliability.faults") or several or slurm


def _spawn(module, overrides, timeout, env, check) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline", **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=REPO,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return _checked(module, proc, check)


def _in_process(module, overrides, env, check) -> subprocess.CompletedProcess:
    out, err = io.StringIO(), io.StringIO()
    saved_env, saved_argv, saved_cwd = dict(os.environ), sys.argv, os.getcwd()
    os.environ.update({"WANDB_MODE": "offline", **(env or {})})
    os.chdir(REPO)
    sys.argv = [module, *overrides]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                with warnings.catch_warnings():
                    # runpy's note that the module was imported before (by an earlier test): harmless here
                    warnings.filterwarnings("ignore", ".*found in sys.modules.*", RuntimeWarning)
                    runpy.run_module(module, run_name="__main__", alter_sys=True)
            except SystemExit as stop:
                code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            except Exception:
                # what the interpreter would print for an uncaught exception
                traceback.print_exc()
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.argv = saved_argv
        os.chdir(saved_cwd)
        _detach_handlers(out, err)
    proc = subprocess.CompletedProcess([module, *overrides], code, out.getvalue(), err.getvalue())
    return _checked(module, proc, check)


def _detach_handlers(*streams: io.StringIO) -> None:
    """Hydra's job logging wrote to the captured streams: later log records of this process go elsewhere."""
    for logger in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]:
        for handler in list(getattr(logger, "handlers", [])):
            if getattr(handler, "stream", None) in streams:
                logger.removeHandler(handler)
            elif isinstance(handler, logging.FileHandler):
                handler.close()
                logger.removeHandler(handler)


def _checked(module: str, proc: subprocess.CompletedProcess, check: bool) -> subprocess.CompletedProcess:
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{module} exited {proc.returncode}\nSTDOUT:\n{proc.stdout[-4000:]}\nSTDERR:\n{proc.stderr[-6000:]}"
        )
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scalar_metrics(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def coverage_brute_force(store: MaskletStore, videos: list) -> float:
    """The fraction of valid ground-truth pixels (label != 255) under some masklet of `store`."""
    covered = total = 0
    for video in videos:
        valid = video.load_masks() != 255
        covered += int((np.asarray(store.id_maps(video.id))[valid] >= 0).sum())
        total += int(valid.sum())
    return covered / total


EPOCH_KEYS = (
    "train/loss_epoch",
    "train/acc",
    "selection/loss",
    "selection/acc",
    "selection/miou",
    "selection/fwiou",
)


def epoch_logs(run: Path) -> dict[int, dict[str, float]]:
    """{epoch: {key: value}} of the per-epoch training and validation values in a run's CSV log."""
    logs: dict[int, dict[str, float]] = {}
    with open(run / "csv" / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            for key in EPOCH_KEYS:
                if row.get(key) and row.get("epoch"):
                    logs.setdefault(int(row["epoch"]), {})[key] = float(row[key])
    return logs


def assert_same_weights(ckpt: Path, other: Path) -> None:
    """The two checkpoints hold bit-identical head weights and buffers."""
    import torch

    a, b = (torch.load(p, map_location="cpu", weights_only=True)["state_dict"] for p in (ckpt, other))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs between {ckpt} and {other}"


class SignalAtEpochEnd(Callback):
    """Test-only callback (add it with `+callbacks.signal._target_=tests.train_helpers.SignalAtEpochEnd`): sends
    `signum` (default SIGUSR1, SLURM's warning before the time limit) to this process at the end of training
    epoch `epoch`, before that epoch's checkpoints are written."""

    def __init__(self, epoch: int, signum: int = signal.SIGUSR1):
        self.epoch, self.signum = int(epoch), int(signum)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), self.signum)


def cpu_trainer(tmp_path: Path, max_epochs: int, **kwargs):
    """A quiet one-process CPU Lightning Trainer for in-process fits (no logger, bar or summary)."""
    import lightning.pytorch as pl

    settings = {
        "max_epochs": max_epochs,
        "accelerator": "cpu",
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "default_root_dir": tmp_path,
        "use_distributed_sampler": False,
    }
    return pl.Trainer(**{**settings, **kwargs})
