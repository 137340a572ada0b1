"""Sweeps and debugging through the real CLI: a 2-trial Optuna search (hparams_search=head_optuna) and the
debug= configs (fdr, limit, profiler, overfit), each run as a multirun on the tiny built-in data."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from tests.test_config import group_override
from tests.train_helpers import run_cli, tiny_overrides

SEARCHED = ("model.optimizer.lr", "model.head.hidden_dim", "model.head.dropout", "model.label_smoothing")


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("sweeps_shared")


def _tiny(tmp: Path, shared: Path) -> list[str]:
    """tiny_overrides without its epoch count (the debug configs and the test set their own)."""
    return [o for o in tiny_overrides(tmp, shared) if not o.startswith("trainer.max_epochs=")]


def _job_overrides(job: Path) -> dict[str, str]:
    lines = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    return dict(line.split("=", 1) for line in lines)


class RecordReturnValue(Callback):
    """Test-only Hydra callback (`+hydra.callbacks.record._target_=tests.test_sweeps.RecordReturnValue`): writes
    what each job's task function returned to <job dir>/returned.json, the value the sweeper received."""

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.COMPLETED:
            value = job_return.return_value
            path = Path(config.hydra.runtime.output_dir) / "returned.json"
            path.write_text(json.dumps(value if isinstance(value, (int, float, type(None))) else repr(value)))


@pytest.fixture(scope="module")
def optuna_sweep(shared, tmp_path_factory):
    """Two Optuna trials of one epoch each; each job records the value it returned."""
    tmp = tmp_path_factory.mktemp("optuna")
    sweep_dir = tmp / "sweep"
    proc = run_cli(
        "isam2.train",
        [
            "-m",
            *_tiny(tmp, shared),
            group_override("hparams_search", "head_optuna"),
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.seed=7",
            "+hydra.callbacks.record._target_=tests.test_sweeps.RecordReturnValue",
            f"hydra.sweep.dir={sweep_dir}",
            "trainer.max_epochs=1",
        ],
        check=False,
    )
    return proc, sweep_dir


def test_optuna_sweep_runs_each_trial_as_a_job_and_optimises_the_returned_metric(optuna_sweep):
    proc, sweep_dir = optuna_sweep
    assert sweep_dir.is_dir(), f"the sweep did not start:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    jobs = sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    assert [p.name for p in jobs] == ["0", "1"], "each trial runs as its own job in <sweep dir>/<n>"
    sampled = []
    for job in jobs:
        overrides = _job_overrides(job)
        assert set(SEARCHED) <= set(overrides), f"{job}: the sampled settings are the job's overrides"
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert config["model"]["head"]["hidden_dim"] == int(overrides["model.head.hidden_dim"])
        assert math.isclose(config["model"]["optimizer"]["lr"], float(overrides["model.optimizer.lr"]))
        assert (
            1e-4 <= config["model"]["optimizer"]["lr"] <= 1e-2
            and 0 <= config["model"]["head"]["dropout"] <= 0.5
        )
        assert (job / "metrics.json").is_file() and (job / "train.log").is_file(), f"{job} ran to the end"
        sampled.append(tuple(overrides[k] for k in SEARCHED))
    assert sampled[0] != sampled[1], "the two trials sampled different settings"

    # The sweeper only records a trial whose run returned a number (isam2.train's main returns
    # cfg.optimized_metric); a run that returns nothing fails the trial and the sweep.
    assert proc.returncode == 0, f"the sweep failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    results = yaml.safe_load((sweep_dir / "optimization_results.yaml").read_text())
    assert isinstance(results["best_value"], float) and math.isfinite(results["best_value"])
    returned = [json.loads((job / "returned.json").read_text()) for job in jobs]
    assert all(isinstance(v, float) and math.isfinite(v) for v in returned), f"returned values: {returned}"
    best = returned.index(max(returned))  # direction maximize
    assert results["best_value"] == returned[best]
    best_overrides = _job_overrides(jobs[best])
    assert {k: str(v) for k, v in results["best_params"].items()} == {k: best_overrides[k] for k in SEARCHED}


@pytest.fixture(scope="module")
def debug_runs(shared, tmp_path_factory):
    """debug=fdr,limit,profiler,overfit as one multirun (one process: the imports are paid once), 2 epochs each
    (test_config checks the epochs each config sets)."""
    tmp = tmp_path_factory.mktemp("debug")
    options = ("fdr", "limit", "profiler", "overfit")
    sweep = group_override("debug", ",".join(options))
    proc = run_cli(
        "isam2.train",
        [
            "-m",
            *_tiny(tmp, shared),
            sweep,
            "trainer.max_epochs=2",
            "datamodule.batch_size=4",
            f"hydra.sweep.dir={tmp / 'sweep'}",
        ],
        check=False,
    )
    jobs = {}
    for job in (tmp / "sweep").iterdir():
        if (job / ".hydra").is_dir():
            jobs[next(v for k, v in _job_overrides(job).items() if k.lstrip("+") == "debug")] = job
    return proc, jobs


def _global_step(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=True)["global_step"])


def test_debug_configs_run_and_do_what_they_say(debug_runs):
    proc, jobs = debug_runs
    for option in ("fdr", "limit", "profiler"):
        assert option in jobs and (jobs[option] / "metrics.json").is_file(), (
            f"debug={option} did not finish:\n{proc.stderr[-5000:]}"
        )
        log = (jobs[option] / "debug.log").read_text()  # task_name=debug, plain text
        assert "INFO" in log and "\x1b[" not in log
        hydra = yaml.safe_load((jobs[option] / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra["job_logging"]["root"]["level"] == "DEBUG"
        assert not (jobs[option] / "csv").exists(), "debug runs have no logger"
    # fast_dev_run: one batch of each stage, no checkpoint written
    assert not (jobs["fdr"] / "checkpoints").exists()
    # limit: at most 10 training batches an epoch (the tiny store at batch 4 has more than 10)
    assert _global_step(jobs["limit"] / "checkpoints" / "last.ckpt") == 2 * 10
    # profiler: the per-hook timings are saved in the run
    profile = (jobs["profiler"] / "fit-profile.txt").read_text()
    assert "run_training_epoch" in profile and "training_step" in profile
    # overfit: the same 3 batches every epoch (needs the data module's `shuffle` setting)
    assert proc.returncode == 0, f"debug=overfit failed:\n{proc.stderr[-5000:]}"
    assert _global_step(jobs["overfit"] / "checkpoints" / "last.ckpt") == 2 * 3
    # every run prints its config tree at the start and keeps it (isam2.cli.hydra_entry -> print_config_tree)
    for job in jobs.values():
        assert (job / "config_tree.log").read_text().startswith("CONFIG"), f"{job}: no config_tree.log"
    assert "fast_dev_run: true" in (jobs["fdr"] / "config_tree.log").read_text()
