"""Bad input through the real CLIs: each case stops with one `error:` line naming the culprit and loses nothing."""

from __future__ import annotations

from pathlib import Path

from tests.reliability.harness import assert_refused, snapshot
from tests.train_helpers import run_cli

SMALL_SET = ["num_train=1", "num_val=1", "num_test=1", "min_frames=3", "max_frames=3", "height=24", "width=32"]


def test_synthetic_refuses_a_folder_it_did_not_make(tmp_path):
    folder = tmp_path / "my_data"
    (folder / "videos").mkdir(parents=True)
    (folder / "videos" / "keep.mp4").write_bytes(b"precious")
    (folder / "train.txt").write_text("keep\n")
    assert_refused("isam2.data.synthetic", [f"root={folder}", *SMALL_SET], str(folder), protected=[folder])
    assert_refused("isam2.data.synthetic", [f"root={folder}", "force=true"], str(folder), protected=[folder])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_data"]


def test_synthetic_regenerates_its_own_set_only_with_force(tmp_path):
    root = tmp_path / "syn"
    run_cli("isam2.data.synthetic", [f"root={root}", *SMALL_SET])
    before = snapshot([root])
    run_cli("isam2.data.synthetic", [f"root={root}", *SMALL_SET])  # the same settings: kept as it is
    assert snapshot([root]) == before
    assert_refused(
        "isam2.data.synthetic", [f"root={root}", *SMALL_SET, "seed=1"], [str(root), "force=true"], [root]
    )
    run_cli("isam2.data.synthetic", [f"root={root}", *SMALL_SET, "seed=1", "force=true"])
    assert snapshot([root]) != before
    assert_refused("isam2.data.synthetic", [f"root={root}", "seed=x"], "seed", [root])
    assert_refused("isam2.data.synthetic", [f"root={root}", "colour=3"], "colour=3", [root])
