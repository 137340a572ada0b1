"""Distributed training from the CLI: `trainer=ddp_cpu` (2 gloo processes) and two torchrun "nodes" on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .train_helpers import REPO, free_port, run_cli, tiny_overrides

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return tmp_path_factory.mktemp("ddp_shared")


def _check_run(run, num_test_videos: int = 2) -> dict:
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_videos"] == num_test_videos  # every test video scored exactly once across ranks
    ckpts = sorted(p.name for p in (run / "checkpoints").glob("*.ckpt"))
    assert "last.ckpt" in ckpts and len(ckpts) == 2, ckpts
    return metrics


def test_ddp_cpu_two_processes_end_to_end(shared, tmp_path):
    # 2 of the 3 tiny training videos held out for selection: one per process (check_videos_per_process)
    overrides = [*tiny_overrides(tmp_path, shared), "trainer=ddp_cpu", "data.selection.fraction=0.5"]
    proc = run_cli("isam2.train", overrides)
    assert "GLOBAL_RANK: 1" in proc.stdout + proc.stderr  # really two processes
    _check_run(tmp_path / "run")
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # the second rank wrote into rank 0's run dir


def test_torchrun_two_nodes_one_run_directory(shared, tmp_path):
    port = free_port()
    overrides = [
        *tiny_overrides(tmp_path, shared),
        "data.selection.fraction=0.5",
        "trainer.num_nodes=2",
        "trainer.devices=1",
        "trainer.accelerator=cpu",
        "trainer.strategy=ddp",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nnodes=2",
                "--nproc-per-node=1",
                f"--node-rank={rank}",
                "--master-addr=127.0.0.1",
                f"--master-port={port}",
                "-m",
                "isam2.train",
                *overrides,
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = []
    try:
        for p in procs:
            outputs.append(p.communicate(timeout=600)[0])
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-6000:]
    for rank, out in enumerate(outputs):  # node rank r runs global rank r
        assert f"GLOBAL_RANK: {rank}, MEMBER: {rank + 1}/2" in out
    _check_run(tmp_path / "run")
    assert [p.name for p in tmp_path.iterdir()] == ["run"]
    assert sum("run directory:" in out for out in outputs) == 1  # rank zero alone reports
