"""Reliability of the store build through the real CLI and real processes: disk, untrusted files, NaN, kills, locks, ranks."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import isam2.store.build as store_build
from isam2.store.build import ensure_store
from isam2.store.reader import MaskletStore
from isam2.store.writer import done_videos
from tests.reliability.harness import assert_refused
from tests.test_store import FakeSource, assert_same_store, fake_build, make_cfg
from tests.train_helpers import REPO, run_cli, tiny_overrides

pytestmark = pytest.mark.slow  # real processes: the CLI, killed builds, two ranks


def extract_args(tmp: Path, split: str, run: str, *more: str) -> list[str]:
    """`python -m isam2.extract` overrides of a seconds-long build: tiny synthetic videos, gt masklets, SAM2 at 64 px."""
    return [
        f"paths.root_dir={tmp}",
        f"paths.store_dir={tmp / 'stores'}",
        "data.generate.num_train=2",
        "data.generate.num_val=2",
        "data.generate.num_test=1",
        "data.generate.height=24",
        "data.generate.width=32",
        "data.generate.min_frames=3",
        "data.generate.max_frames=4",
        "masklets=gt",
        "sam2.image_size=64",
        f"data.split={split}",
        f"hydra.run.dir={tmp / 'runs' / run}",
        "progress=false",
        *more,
    ]


def store_of(tmp: Path, split: str) -> Path:
    (folder,) = (tmp / "stores").glob(f"synthetic-{split}-*")
    return folder


def test_a_full_disk_names_the_file_and_keeps_earlier_outputs(tmp_path):
    run_cli("isam2.extract", extract_args(tmp_path, "val", "val"))  # an earlier output, protected
    videos = (tmp_path / "data" / "synthetic" / "train.txt").read_text().split()
    assert_refused(
        "tests.reliability.faults",
        ["isam2.extract", *extract_args(tmp_path, "train", "full")],
        [f"videos/{videos[1]}.npz", "the disk is full"],
        protected=[tmp_path / "stores"],
        env={"ISAM2_FAULT": "enospc", "ISAM2_FAULT_FILE": f"*/videos/{videos[1]}.npz"},
    )
    folder = store_of(tmp_path, "train")
    assert done_videos(folder) == {videos[0]} and not (folder / "manifest.json").exists()
    run_cli("isam2.extract", extract_args(tmp_path, "train", "rerun"))  # resumes: the disk has room again
    assert MaskletStore(folder).videos() == videos


@pytest.fixture
def escaping_split(tmp_path) -> tuple[Path, Path]:
    """A synthetic set whose val.txt also lists `../../outside`, a real video folder outside the root."""
    from isam2.data.synthetic import SyntheticConfig, generate

    root = generate(
        tmp_path / "data", SyntheticConfig(num_train=1, num_val=1, num_test=1, height=24, width=32)
    )
    shutil.copytree(root / "data" / (root / "val.txt").read_text().split()[0], tmp_path / "outside")
    split_file = root / "val.txt"
    split_file.write_text(split_file.read_text() + "../../outside\n")
    return root, split_file


def test_a_split_file_cannot_lead_outside_the_dataset_root(escaping_split):
    from isam2.data import VSPW, DataError

    root, split_file = escaping_split
    with pytest.raises(DataError, match=re.escape(f"split file {split_file} lists '../../outside'")):
        VSPW(root, "val")


def test_a_split_file_cannot_lead_the_cli_outside_the_dataset_root(tmp_path, escaping_split):
    root, split_file = escaping_split
    assert_refused(
        "isam2.extract",
        [*extract_args(tmp_path, "val", "outside"), f"data.root={root}", "data.generate=null"],
        [str(split_file), "../../outside"],
        protected=[tmp_path / "outside", root],
    )


def test_training_on_a_store_changed_after_writing_stops_naming_the_file(tmp_path):
    from hydra import compose, initialize_config_dir

    overrides = tiny_overrides(tmp_path)
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[o for o in overrides if not o.startswith("hydra.")])
    store = ensure_store(cfg, cfg.data.train_split, progress=False)
    features = np.load(store.path / "features.npy", mmap_mode="r+")
    features[3] = np.nan  # today: NaN statistics, NaN weights, and exit 0
    features.flush()
    del features
    assert_refused(
        "isam2.train", overrides, [str(store.path / "features.npy"), "row 3"], protected=[store.path]
    )


# ------------------------------------------------------------------------- crash safety (SIGKILL)

QUIET_HEARTBEAT = ("store_build.heartbeat_seconds=3600", "store_build.dead_after_seconds=7200")


def fake_build_process(tmp: Path, store_dir: str, env: dict, *overrides: str) -> subprocess.Popen:
    """`python -m tests.reliability.fake_build`: one process building the val store of `make_cfg(tmp, store_dir)`."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.reliability.fake_build",
            str(tmp),
            store_dir,
            *QUIET_HEARTBEAT,
            *overrides,
        ],
        cwd=REPO,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> tuple[Path, MaskletStore, int]:
    """A folder with the tiny data set, the store of an uninterrupted build with the fake source in it, and
    how many files that build wrote."""
    from isam2 import files

    tmp = tmp_path_factory.mktemp("kills")
    written = []
    real = files._open_for_write
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(store_build, "_build_backbone_and_source", fake_build(FakeSource()))
        patch.setattr(files, "_open_for_write", lambda path: written.append(path) or real(path))
        store = ensure_store(make_cfg(tmp, "whole", *QUIET_HEARTBEAT), "val")
    return tmp, store, sum(str(p).startswith(str(tmp / "whole")) for p in written)


def resume(tmp: Path, store_dir: str, monkeypatch) -> MaskletStore:
    """Finish a killed build in this process (the fake source again)."""
    monkeypatch.setattr(store_build, "_build_backbone_and_source", fake_build(FakeSource()))
    return ensure_store(make_cfg(tmp, store_dir), "val")


@pytest.mark.parametrize("seed", range(4))
def test_a_build_killed_mid_write_resumes_to_the_uninterrupted_store(uninterrupted, monkeypatch, seed):
    tmp, whole, num_writes = uninterrupted
    rng = np.random.default_rng(seed)
    fault = {  # SIGKILL while a random file of the build is written, after a random number of its bytes
        "ISAM2_FAULT": "kill",
        "ISAM2_FAULT_FILE": f"{tmp / f'killed{seed}'}/*",
        "ISAM2_FAULT_SKIP": str(rng.integers(num_writes)),
        "ISAM2_FAULT_BYTES": str(rng.integers(0, 4096)),
    }
    proc = fake_build_process(tmp, f"killed{seed}", fault)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == -signal.SIGKILL, out + err
    assert_same_store(resume(tmp, f"killed{seed}", monkeypatch), whole)


@pytest.mark.parametrize("seed", range(2))
def test_a_build_killed_after_a_random_delay_resumes_to_the_uninterrupted_store(
    uninterrupted, monkeypatch, seed
):
    tmp, whole, _ = uninterrupted
    proc = fake_build_process(tmp, f"delayed{seed}", {"ISAM2_FAKE_FRAME_SECONDS": "0.05"})
    assert proc.stdout.readline().strip() == "building"
    time.sleep(np.random.default_rng(seed).uniform(0, 1.0))  # about the length of the build
    proc.kill()
    proc.communicate(timeout=600)
    assert_same_store(resume(tmp, f"delayed{seed}", monkeypatch), whole)


# ------------------------------------------------------------------------------------ the build lock


def extract_store_folder(tmp: Path, split: str) -> Path:
    """The store folder that `python -m isam2.extract <extract_args(tmp, split, ...)>` builds."""
    from hydra import compose, initialize_config_dir

    from isam2.store.identity import store_folder, store_identity

    overrides = [o for o in extract_args(tmp, split, "any") if not o.startswith("hydra.")]
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("extract", overrides=overrides)
    return store_folder(cfg.paths.store_dir, store_identity(cfg, split))


def test_a_second_build_of_a_locked_store_stops_naming_the_lock_and_its_holder(tmp_path):
    from isam2.store.coordination import BuildLock

    lock = BuildLock(extract_store_folder(tmp_path, "val"))
    lock.acquire(0)  # held by this live process, as by a build running elsewhere
    try:
        assert_refused(
            "isam2.extract",
            extract_args(tmp_path, "val", "second"),
            [str(lock.file), f"pid {os.getpid()}", "store_build.lock_wait_seconds"],
            protected=[tmp_path / "stores"],
            # another process: this one holds the lock
            spawn=True,
        )
    finally:
        lock.release()
    assert not (lock.file.parent / "manifest.json").exists()


def test_a_second_build_waits_for_the_lock_when_asked(uninterrupted, monkeypatch):
    from isam2.store.coordination import BuildLock
    from isam2.store.identity import store_folder, store_identity

    tmp, whole, _ = uninterrupted
    cfg = make_cfg(tmp, "waits")
    lock = BuildLock(store_folder(cfg.paths.store_dir, store_identity(cfg, "val")))
    lock.acquire(0)
    proc = fake_build_process(tmp, "waits", {}, "store_build.lock_wait_seconds=600")
    try:
        assert proc.stderr.readline().startswith(
            f"waiting up to 600 s for {lock.file}, held by pid {os.getpid()}"
        )
    finally:
        lock.release()
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, out + err
    assert_same_store(MaskletStore(out.strip().splitlines()[-1].removeprefix("store: ")), whole)


def test_two_builds_at_once_give_one_store_and_no_stray_shard(uninterrupted):
    tmp, whole, _ = uninterrupted
    slow = {"ISAM2_FAKE_FRAME_SECONDS": "0.02"}
    procs = [fake_build_process(tmp, "twice", slow, "store_build.lock_wait_seconds=600") for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in procs]
    for proc, (out, err) in zip(procs, outputs):
        assert proc.returncode == 0, out + err
    folder = Path(outputs[0][0].strip().splitlines()[-1].removeprefix("store: "))
    assert_same_store(MaskletStore(folder), whole)
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert not [f for f in left if f.startswith(("videos", "ranks", "build.lock")) or ".tmp" in f], left


# ------------------------------------------------------------------------- ranks never wait forever


def test_when_a_rank_dies_the_other_stops_naming_it(uninterrupted):
    from tests.train_helpers import free_port

    tmp, _, _ = uninterrupted
    group = {"WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}
    killed = {"ISAM2_FAULT": "kill", "ISAM2_FAULT_FILE": "*/videos/*.npz"}  # rank 1 dies at its first shard
    deadline = "store_build.wait_seconds=300"  # far beyond the test's need: only a safety net
    ranks = [
        fake_build_process(tmp, "ranks", {**group, "RANK": "0"}, deadline),
        fake_build_process(tmp, "ranks", {**group, "RANK": "1", **killed}, deadline),
    ]
    out, err = ranks[0].communicate(timeout=600)
    ranks[1].communicate(timeout=600)
    assert ranks[1].returncode == -signal.SIGKILL
    assert ranks[0].returncode == 2, out + err
    (line,) = [line for line in err.splitlines() if line.startswith("error: ")]
    assert re.search(
        r"rank 1 stopped while the masklet store .* was being built: its process \(pid \d+", line
    )
