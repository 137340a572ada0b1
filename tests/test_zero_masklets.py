"""Zero masklets is a normal frame: train, evaluate and refine through the CLI when SAM2 keeps no mask at all."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from isam2.data.datasets import VSPW
from isam2.data.synthetic import SyntheticConfig
from isam2.datamodules.stores import StoreDataModule, VideoBatches
from isam2.metrics import VideoSegmentationMetrics
from isam2.model import MaskletClassifier
from isam2.store.reader import MaskletStore
from tests.noisy import write_noisy_base
from tests.test_segment import _refine_brute_force

from .train_helpers import (
    REPO,
    coverage_brute_force,
    cpu_trainer,
    run_cli,
    tiny_dataset,
    tiny_overrides,
    toy_store,
)

# The smallest set the CLI runs on: with random SAM2 weights and the paper's AMG thresholds
# (conf/masklets/sam2.yaml) SAM2 keeps no mask on any of these frames, so every store is empty.
ZERO_DATA = SyntheticConfig(
    num_train=1, num_val=1, num_test=2, min_frames=3, max_frames=4, height=48, width=64, seed=0
)
PAPER_VAL = "data.selection.mode=paper_val"  # one training video: none to hold out, select on val
PAPER_MASKLETS = yaml.safe_load((REPO / "conf" / "masklets" / "sam2.yaml").read_text())
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("zero_masklets")


@pytest.fixture(scope="module")
def zero_run(shared):
    """`isam2.train masklets=sam2` (paper thresholds, random weights): builds the three empty stores."""
    overrides = [*tiny_overrides(shared / "train", shared, ZERO_DATA), "masklets=sam2", PAPER_VAL]
    proc = run_cli("isam2.train", overrides)
    return shared / "train" / "run", proc


@pytest.fixture(scope="module")
def base_dir(shared) -> Path:
    return write_noisy_base(tiny_dataset(shared / "data", "test", ZERO_DATA), shared / "base", seed=2)


def _cli_overrides(shared: Path, tmp: Path) -> list[str]:
    """The data, SAM2 and store settings of `zero_run` (so evaluate finds its test store)."""
    keep = ("data", "sam2", "paths", "hydra")
    overrides = tiny_overrides(tmp, shared, ZERO_DATA)
    return [o for o in overrides if o.split("=")[0].split(".")[0] in keep] + ["masklets=sam2"]


def _pooling_levels(run: Path) -> str:
    """A run's masklets.pooling.levels as a Hydra override value."""
    levels = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["masklets"]["pooling"]["levels"]
    return "[" + ",".join(map(str, levels)) + "]"


def _stack(folder: Path, video) -> np.ndarray:
    return np.stack([np.asarray(Image.open(folder / video.id / f"{n}.png")) for n in video.frame_names])


def _score(preds: list[np.ndarray], videos: list, protocol: dict) -> dict:
    """The metrics of prediction maps, scored directly (no masklets involved)."""
    metric = VideoSegmentationMetrics(124, **protocol)
    for pred, video in zip(preds, videos, strict=True):
        metric.update(torch.from_numpy(pred), torch.from_numpy(video.load_masks()))
    return metric.compute()


def test_train_on_empty_stores_leaves_the_head_untrained_and_predicts_void(zero_run, shared):
    run, proc = zero_run
    masklets = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())["masklets"]
    assert {k: masklets[k] for k in PAPER_MASKLETS if k != "pooling"} == {
        k: v for k, v in PAPER_MASKLETS.items() if k != "pooling"
    }  # the paper's AMG thresholds, not loosened
    stores = sorted(p.parent for p in (shared / "stores").rglob("manifest.json"))
    assert {p.name.split("-")[1] for p in stores} == {"train", "val", "test"}
    for path in stores:
        store, split = MaskletStore(path), path.name.split("-")[1]
        assert len(store) == 0 and store.videos() == [v.id for v in VSPW(shared / "data", split).videos]
    assert "no masklet with a target" in proc.stdout and "UNTRAINED" in proc.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["trained"] is False and "no masklet with a target" in metrics["note"]
    assert metrics["checkpoint"] == "checkpoints/untrained.ckpt"  # relative to the run directory
    assert metrics["selection"]["mode"] == "paper_val" and metrics["selection"]["split"] == "val"
    assert "paper-literal" in metrics["selection"]["label"]
    assert (run / "checkpoints" / "untrained.ckpt").is_file()
    # everything is void: every GT class gets IoU 0, and no metric is NaN
    assert metrics["miou"] == metrics["fwiou"] == metrics["mbiou"] == 0.0
    assert metrics["coverage"] == 0.0 and metrics["acc_inside"] is None and metrics["acc_outside"] == 0.0
    test = VSPW(shared / "data", "test")
    assert metrics["num_videos"] == len(test) and metrics["num_frames"] == test.num_frames
    for video in test.videos:
        png = _stack(run / "predictions", video)
        assert png.shape == (len(video), *video.size) and (png == 255).all()


def test_resuming_on_an_empty_training_store_is_a_clear_error(zero_run, shared, tmp_path):
    from hydra import compose, initialize_config_dir

    from isam2.errors import ISAM2Error
    from isam2.pipelines.train import run as train

    ckpt = zero_run[0] / "checkpoints" / "untrained.ckpt"
    overrides = [o for o in tiny_overrides(tmp_path, shared, ZERO_DATA) if not o.startswith("hydra.")]
    overrides += ["masklets=sam2", PAPER_VAL, f"paths.output_dir={tmp_path}", f"ckpt_path={ckpt}"]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    with pytest.raises(
        ISAM2Error, match=re.escape(f"ckpt_path={ckpt} resumes training, but ") + ".*no masklet with a target"
    ):
        train(cfg)


def test_evaluate_gives_void_for_i_sam2_and_the_base_for_the_others(zero_run, shared, base_dir, tmp_path):
    ckpt = zero_run[0] / "checkpoints" / "untrained.ckpt"
    overrides = [*_cli_overrides(shared, tmp_path), "data.split=test", f"ckpt_path={ckpt}"]
    proc = run_cli("isam2.evaluate", [*overrides, f"base_pred_dir={base_dir}"])
    assert "UNTRAINED" in proc.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["trained"] is False and str(ckpt) in metrics["note"]
    rows = metrics["methods"]
    assert set(rows) == {"I-SAM2", "I-SAM2_base", "base", "SAM2-refiner"}
    assert rows["I-SAM2"]["miou"] == rows["I-SAM2"]["fwiou"] == rows["I-SAM2"]["mbiou"] == 0.0
    test = VSPW(shared / "data", "test")
    bases = [_stack(base_dir, v) for v in test.videos]
    direct = _score(bases, test.videos, rows["base"]["protocol"])
    assert direct["miou"] > 0
    for name in ("base", "I-SAM2_base", "SAM2-refiner"):
        assert {k: rows[name][k] for k in direct} == direct, name
        assert rows[name]["coverage"] == 0.0 and rows[name]["acc_inside"] is None
    for video in test.videos:  # the primary method's maps: I-SAM2, all void
        assert (_stack(tmp_path / "run" / "predictions", video) == 255).all()


def test_refine_without_masklets_returns_the_base(zero_run, shared, base_dir, tmp_path):
    out = tmp_path / "refined"
    overrides = [
        f"base_pred_dir={base_dir}",
        "data=synthetic",
        *_cli_overrides(shared, tmp_path),
        "data.split=test",
        # the pooled features play no part in refining: the train run's pooling reuses its test store
        f"masklets.pooling.levels={_pooling_levels(zero_run[0])}",
        f"output_dir={out}",
    ]
    run_cli("isam2.refine", overrides)
    for video in VSPW(shared / "data", "test").videos:
        np.testing.assert_array_equal(_stack(out, video), _stack(base_dir, video))
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["refined"] == metrics["base"] and metrics["base"]["miou"] > 0
    assert len(list((shared / "stores").rglob("manifest.json"))) == 3  # no other store was built


def test_videos_and_frames_without_masklets_among_others(shared, base_dir, tmp_path):
    """A store where one test video and one frame of another have no masklet: validation on an empty store
    runs, and in the test stage those frames are void (I-SAM2) or the base (I-SAM2_base, refiner)."""
    datasets = {s: tiny_dataset(shared / "data", s, ZERO_DATA) for s in ("train", "val", "test")}
    first, second = (v.id for v in datasets["test"].videos)
    empty = {(first, t) for t in range(len(datasets["test"].videos[0]))} | {(second, 1)}
    stores = {
        "train": toy_store(tmp_path / "train", datasets["test"], seed=1),  # covers the test classes
        "val": toy_store(tmp_path / "val", datasets["val"], skip=lambda video, t: True),
        "test": toy_store(tmp_path / "test", datasets["test"], skip=lambda video, t: (video, t) in empty),
    }
    assert (
        len(stores["val"]) == 0
        and stores["test"].rows(first).stop == stores["test"].rows(first).start
        and len(stores["test"]) > 0
    )
    datamodule = StoreDataModule(stores, datasets, batch_size=8, seed=0)
    model = MaskletClassifier(num_classes=124, feature_dim=16, head={"depth": 0}, seed=0)
    trainer = cpu_trainer(tmp_path, max_epochs=2, enable_checkpointing=False)
    model.set_training_statistics(**datamodule.training_statistics())
    trainer.fit(model, datamodule=datamodule)
    assert trainer.callback_metrics["selection/miou"] == 0.0  # the empty validation store: all void
    trainer.test(model, datamodule=StoreDataModule(stores, datasets, base_pred_dir=base_dir), verbose=False)
    rows = model.test_results["methods"]
    assert rows["I-SAM2"]["num_videos"] == 2
    coverage = coverage_brute_force(stores["test"], datasets["test"].videos)
    assert 0 < coverage < 1  # the empty frames are uncovered, the others covered
    for name, row in rows.items():
        assert row["coverage"] == pytest.approx(coverage, rel=1e-12), name
    test = datasets["test"].videos
    bases = [_stack(base_dir, v) for v in test]
    refined = [_refine_brute_force(b, stores["test"].id_maps(v.id)) for b, v in zip(bases, test)]
    protocol = rows["base"]["protocol"]
    assert rows["SAM2-refiner"] == {**_score(refined, test, protocol), **_coverage(rows["SAM2-refiner"])}
    model.eval()
    with torch.no_grad():
        for item in VideoBatches(stores["test"], datasets["test"], base_dir):
            _, maps = model.predict_video(item)
            for t in range(len(item["frame_names"])):
                if (item["video"], t) in empty:
                    assert (maps["isam2"][t] == 255).all()
                    for key in ("isam2_base", "refiner"):
                        assert torch.equal(maps[key][t], item["base"][t]), key
                else:
                    assert (maps["isam2"][t] != 255).any()


def _coverage(row: dict) -> dict:
    return {k: row[k] for k in ("coverage", "acc_inside", "acc_outside")}
