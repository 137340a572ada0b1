"""Settings are checked before any work: a bad one stops the CLI before a store folder exists or a frame is read."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from isam2.data.synthetic import SyntheticConfig, generate
from tests.reliability.harness import assert_refused

TINY = SyntheticConfig(num_train=1, num_val=2, num_test=1, min_frames=3, max_frames=3, height=24, width=32)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    return generate(tmp_path_factory.mktemp("settings") / "synthetic", TINY)


def extract(tmp: Path, root: Path, *more: str) -> list[str]:
    return [
        f"data.root={root}",
        f"paths.store_dir={tmp / 'stores'}",
        f"hydra.run.dir={tmp / 'run'}",
        "sam2.image_size=64",
        "masklets=gt",
        "progress=false",
        *more,
    ]


@pytest.mark.parametrize(
    "override, culprit",
    [
        ("sam2.image_size=250", "sam2.image_size=250"),
        ("sam2.variant=hiera_x", "sam2.variant"),
        ("sam2.device=tpu", "sam2.device"),
        ("masklets.min_area=-3", "masklets.min_area"),
        ("masklets.frames_per_batch=0", "masklets.frames_per_batch"),
        ("masklets.pooling.levels=[0,7]", "masklets.pooling.levels"),
        ("masklets.track_iou=1.5", "masklets.track_iou"),
    ],
)
def test_a_bad_setting_stops_before_any_store_folder_exists(tmp_path, data_root, override, culprit):
    assert_refused("isam2.extract", extract(tmp_path, data_root, override), culprit, protected=[data_root])
    assert not (tmp_path / "stores").exists()


@pytest.mark.parametrize(
    "override, culprit",
    [
        ("masklets.window=0", "masklets.window"),
        ("masklets.pred_iou_thresh=1.2", "masklets.pred_iou_thresh"),
        ("masklets.amg=fast", "masklets.amg"),
        ("masklets.propagation=all", "masklets.propagation"),
        ("masklets.objects_per_batch=0", "masklets.objects_per_batch"),
    ],
)
def test_a_bad_sam2_masklet_setting_stops_first(tmp_path, data_root, override, culprit):
    args = extract(tmp_path, data_root, "masklets=sam2", override)
    assert_refused("isam2.extract", args, culprit, protected=[data_root])
    assert not (tmp_path / "stores").exists()


def test_an_unusable_video_id_is_refused_before_the_first_video_is_extracted(tmp_path, data_root):
    root = Path(shutil.copytree(data_root, tmp_path / "data"))
    first, second = (root / "val.txt").read_text().split()
    (root / "data" / second).rename(root / "data" / "vidéo")  # not ASCII: cannot name a store file
    (root / "val.txt").write_text(f"{first}\nvidéo\n")
    assert_refused("isam2.extract", extract(tmp_path, root), ["vidéo", "val.txt"], protected=[root])
    assert not list((tmp_path / "stores").glob("*/videos/*.npz"))  # the first video was not extracted


def test_a_store_target_beyond_the_class_count_names_the_setting(tmp_path, data_root):
    """Before: an IndexError deep in the loss. The store's targets reach class 9 of the synthetic set."""
    args = [
        f"data.root={data_root}",
        f"paths.store_dir={tmp_path / 'stores'}",
        f"hydra.run.dir={tmp_path / 'run'}",
        "sam2.image_size=64",
        "masklets=gt",
        "logger=csv",
        "callbacks.rich_progress_bar=null",
        "trainer.max_epochs=1",
        "data.num_classes=5",
        "data.selection.mode=paper_val",  # one training video: none to hold out for selection
    ]
    assert_refused("isam2.train", args, ["data.num_classes=5", "stores"], protected=[data_root])
    assert not list((tmp_path / "run").glob("checkpoints/*.ckpt"))
