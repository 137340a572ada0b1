"""Reliability of the masklet store build through the real CLI: full disk, bad split files, locks, kills."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

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
