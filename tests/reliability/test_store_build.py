"""Reliability of the masklet store build through the real CLI: full disk, bad split files, locks, kills."""

from __future__ import annotations

from pathlib import Path

from isam2.masklets.store import MaskletStore, done_videos
from tests.reliability.harness import assert_refused
from tests.train_helpers import run_cli


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
