"""`python -m isam2.extract` end to end: gt and sam2 masklet sources, and 2 processes giving the rows of 1."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from isam2.data.synthetic import SyntheticConfig, generate
from isam2.store.build import ensure_store
from isam2.store.format import ROW_DTYPES
from isam2.store.reader import MaskletStore
from tests.train_helpers import run_cli

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    cfg = SyntheticConfig(num_train=2, num_val=3, num_test=1, height=48, width=64, min_frames=6, max_frames=9)
    return generate(tmp_path_factory.mktemp("synthetic") / "data", cfg)


def run_extract(
    tmp: Path, data_root: Path, name: str, *overrides: str
) -> tuple[MaskletStore, list[str], Path]:
    run_dir = tmp / f"run_{name}"
    args = [
        f"data.root={data_root}",
        "data.generate=null",  # the set is already there
        "sam2.image_size=128",
        f"paths.root_dir={tmp}",
        f"paths.store_dir={tmp / ('stores_' + name)}",
        f"hydra.run.dir={run_dir}",
        "progress=false",
        *overrides,
    ]
    # in this process, but a process per rank where the overrides ask for several
    proc = run_cli("isam2.extract", args)
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("store: ")
    path = Path(lines[-1].removeprefix("store: "))
    assert path.is_absolute() and path.parent == tmp / f"stores_{name}"
    return MaskletStore(path), lines, run_dir


def check_consistent(store: MaskletStore) -> None:
    n = len(store)
    assert store.features.shape == (n, store.dim) and np.isfinite(store.features).all()
    for key in ROW_DTYPES:
        assert len(getattr(store, key)) == n, key
    for vi, vid in enumerate(store.videos()):
        rows = store.rows(vid)
        assert (store.video[rows] == vi).all()
        maps = store.id_maps(vid)
        assert maps.shape == (store.num_frames(vid), *store.frame_size(vid))
        shown = maps[maps >= 0]
        assert ((shown >= rows.start) & (shown < rows.stop)).all()
        # Every painted pixel names a masklet of that very frame.
        t_of_pixel = np.broadcast_to(np.arange(len(maps))[:, None, None], maps.shape)[maps >= 0]
        np.testing.assert_array_equal(store.frame[shown], t_of_pixel)


def test_gt_and_sam2_sources(tmp_path, data_root):
    gt_store, gt_lines, run_dir = run_extract(tmp_path, data_root, "gt", "data.split=test", "masklets=gt")
    sam2_store, _, _ = run_extract(
        tmp_path,
        data_root,
        "sam2",
        "data.split=test",
        "masklets=sam2",
        "masklets.pred_iou_thresh=0",
        "masklets.stability_score_thresh=0",
        "masklets.points_per_side=2",
    )
    for store in (gt_store, sam2_store):
        check_consistent(store)
        assert len(store) > 0 and store.manifest["backbone"]
        assert store.manifest["identity"]["sam2"]["checkpoint"] == "random"
    assert gt_store.dim == sam2_store.dim
    assert gt_store.manifest["config_hash"] != sam2_store.manifest["config_hash"]
    # Oracle masklets are connected components of one class each: pure.
    assert (gt_store.purity == 1).all() and (gt_store.label != 255).all()
    # The summary counts what the store holds; the run dir keeps the manifest (backbone metadata included).
    summary = json.loads((run_dir / "summary.json").read_text())
    frames = sum(gt_store.num_frames(v) for v in gt_store.videos())
    assert summary["masklets"] == len(gt_store) and summary["frames"] == frames
    covered = np.mean(
        [
            (gt_store.id_map(v, t) >= 0).mean()
            for v in gt_store.videos()
            for t in range(gt_store.num_frames(v))
        ]
    )
    assert summary["coverage"] == pytest.approx(covered)
    assert any(f"masklets: {len(gt_store)}" in line for line in gt_lines)
    assert (
        json.loads((run_dir / "store_manifest.json").read_text())["config_hash"]
        == gt_store.manifest["config_hash"]
    )


def test_two_processes_give_the_rows_of_one(tmp_path, data_root):
    two, _, _ = run_extract(
        tmp_path,
        data_root,
        "two",
        "data.split=val",
        "masklets=gt",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
    )
    # The single-process build runs in this process, through the same library call the CLI makes.
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            "extract",
            overrides=[
                f"data.root={data_root}",
                "data.generate=null",
                "sam2.image_size=128",
                "masklets=gt",
                f"paths.root_dir={tmp_path}",
                f"paths.store_dir={tmp_path / 'stores_one'}",
            ],
        )
    one = ensure_store(cfg, "val", progress=False)
    check_consistent(two)
    assert one.manifest["config_hash"] == two.manifest["config_hash"]
    assert one.videos() == two.videos() and len(one) == len(two) > 0
    for key in ROW_DTYPES:
        if key == "features":  # thread counts differ per process: fp32 sums may differ in the last bits
            np.testing.assert_allclose(
                one.features.astype(np.float32), two.features.astype(np.float32), atol=1e-2
            )
        else:
            np.testing.assert_array_equal(getattr(one, key), getattr(two, key), err_msg=key)
    for vid in one.videos():
        np.testing.assert_array_equal(one.id_maps(vid), two.id_maps(vid))
