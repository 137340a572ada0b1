"""The pipelines' shared rules: the selection split, defaults that agree, evaluate's default checkpoint, the
metric main returns; and refine and score with no input folder given, on the built-in data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from isam2.datamodules.stores import StoreDataModule, held_out_videos
from isam2.errors import ConfigError, ISAM2Error

from .train_helpers import REPO, run_cli, tiny_dataset, tiny_overrides, toy_store


def _compose(name: str, overrides: list[str] | None = None):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose(name, overrides=["paths.output_dir=/tmp/x", *(overrides or [])])


def test_held_out_videos_are_a_seeded_fraction_with_at_least_one_left_to_train():
    ids = [f"v{i:02d}" for i in range(25)]
    chosen = held_out_videos(ids, 0.1, seed=0)
    assert chosen == held_out_videos(ids, 0.1, seed=0)  # deterministic for a seed
    assert len(chosen) == round(0.1 * 25) and set(chosen) <= set(ids)
    assert chosen == [v for v in ids if v in chosen]  # in split order
    assert any(held_out_videos(ids, 0.1, seed=s) != chosen for s in range(1, 5))  # the seed draws
    assert len(held_out_videos(ids[:3], 0.01, seed=0)) == 1  # at least one video
    assert len(held_out_videos(ids[:2], 0.99, seed=0)) == 1  # at least one left to train on
    with pytest.raises(ConfigError, match="data.selection.mode=paper_val"):
        held_out_videos(ids[:1], 0.1, seed=0)
    with pytest.raises(ConfigError, match="data.selection.fraction"):
        held_out_videos(ids, 1.5, seed=0)


def test_selection_split_roles_of_both_modes(tmp_path):
    from isam2.pipelines.train import selection_split

    data = [o for o in tiny_overrides(tmp_path) if o.startswith("data.")]
    roles, videos, record = selection_split(_compose("train", data))
    train_ids = [v.id for v in tiny_dataset(tmp_path / "data", "train").videos]
    assert roles == {"train": "train", "val": "train", "test": "test"}
    assert (
        set(videos["train"]).isdisjoint(videos["val"])
        and sorted(videos["train"] + videos["val"]) == train_ids
    )
    assert record["videos"] == videos["val"] and record["mode"] == "held_out"
    roles, videos, record = selection_split(_compose("train", [*data, "data.selection.mode=paper_val"]))
    assert roles == {"train": "train", "val": "val", "test": "test"} and videos is None
    assert record["split"] == "val" and "paper-literal" in record["label"]
    with pytest.raises(ConfigError, match="data.selection.mode='best'"):
        selection_split(_compose("train", [*data, "data.selection.mode=best"]))


def test_held_out_videos_are_never_trained_on_and_are_what_selection_sees(tmp_path):
    dataset = tiny_dataset(tmp_path / "data", "train")
    store = toy_store(tmp_path / "store", dataset)
    ids = store.videos()
    held = held_out_videos(ids, 0.1, seed=0)
    kept = [v for v in ids if v not in held]
    dm = StoreDataModule(
        {"train": store, "val": store},
        {"train": dataset, "val": dataset},
        videos={"train": kept, "val": held},
    )
    trained_on = {ids[i] for i in np.unique(np.asarray(store.video)[dm.train_rows])}
    assert trained_on == set(kept)  # every kept video has labelled rows, no held-out one
    labelled = np.flatnonzero(np.asarray(store.label) != 255)
    assert len(dm.train_rows) == sum(1 for r in labelled if ids[int(store.video[r])] in kept)
    assert [batch["video"] for batch in dm.val_dataloader()] == held
    counts = dm.training_statistics()["label_counts"]
    assert int(counts.sum()) == len(dm.train_rows)  # statistics of the training rows only


def test_defaults_agree_on_the_built_in_data():
    train, evaluate, refine = (_compose(n) for n in ("train", "evaluate", "refine"))
    score = _compose("score")
    for cfg in (train, evaluate, refine, score):
        assert cfg.data.name == "synthetic"
    for cfg in (evaluate, refine):  # the SAM2 of train's store on the same data
        assert cfg.sam2 == train.sam2 and cfg.masklets.source == train.masklets.source
    assert refine.base_pred_dir == score.pred_dir == train.data.base_predictions
    assert train.trainer.check_val_every_n_epoch == 1 and train.optimized_metric == "selection/miou_best"
    assert list(train.tags) == list(evaluate.tags) == list(refine.tags) == ["dev"]
    assert evaluate.ckpt_path is None
    vspw = {n: _compose(n, ["experiment=vspw_isam2"]) for n in ("train", "refine")}
    assert vspw["train"].sam2.variant == vspw["refine"].sam2.variant == "hiera_l"
    assert vspw["refine"].base_pred_dir is None  # the user supplies VSPW base predictions


def test_evaluate_without_ckpt_path_takes_the_newest_finished_train_run(tmp_path, caplog):
    from isam2.runs import newest_train_checkpoint

    with pytest.raises(ISAM2Error, match="no finished train run with a checkpoint"):
        newest_train_checkpoint(tmp_path)
    for age, name in enumerate(["newest", "older", "unfinished"]):
        run = tmp_path / "train" / "runs" / name
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "best.ckpt").write_bytes(b"")
        if name != "unfinished":
            (run / "metrics.json").write_text(json.dumps({"checkpoint": "checkpoints/best.ckpt"}))
            os.utime(run / "metrics.json", (1e9 - age, 1e9 - age))
    with caplog.at_level("INFO"):
        got = newest_train_checkpoint(tmp_path)
    assert got == tmp_path / "train" / "runs" / "newest" / "checkpoints" / "best.ckpt"
    assert str(got) in caplog.text


def test_main_returns_the_optimized_metric():
    from isam2.pipelines.report import optimized_value

    result = {"metrics": {"selection/miou_best": 0.5, "test/miou": 0.4}}
    assert optimized_value(_compose("train"), result) == 0.5
    assert optimized_value(_compose("train", ["optimized_metric=null"]), result) is None
    with pytest.raises(ConfigError, match="optimized_metric=val/miou.*selection/miou_best"):
        optimized_value(_compose("train", ["optimized_metric=val/miou"]), result)


@pytest.mark.slow
def test_refine_and_score_default_to_the_data_base_predictions(tmp_path):
    """No base_pred_dir / pred_dir: both read <data.root>/base_predictions (written here as the synthetic
    set's noisy base segmentor would)."""
    from tests.noisy import write_noisy_base

    keep = ("data", "sam2", "paths")
    overrides = [o for o in tiny_overrides(tmp_path) if o.split("=")[0].split(".")[0] in keep]
    base = tmp_path / "data" / "base_predictions"
    write_noisy_base(tiny_dataset(tmp_path / "data", "val"), base, seed=4)
    refined = run_cli("isam2.refine", [*overrides, f"hydra.run.dir={tmp_path}/refine"])
    metrics = json.loads((tmp_path / "refine" / "metrics.json").read_text())
    assert "speed:" in refined.stdout and metrics["refined"]["miou"] > metrics["base"]["miou"]
    assert "SAM2-refiner" in (tmp_path / "refine" / "refine.log").read_text()  # the table, in the log too
    data_only = [o for o in overrides if o.startswith(("data.", "paths."))]  # score has no sam2
    run_cli("isam2.score", [*data_only, f"hydra.run.dir={tmp_path}/score"])
    scored = json.loads((tmp_path / "score" / "metrics.json").read_text())
    assert Path(scored["pred_dir"]) == base.resolve() and scored["miou"] == metrics["base"]["miou"]


def test_every_process_needs_a_video_of_each_evaluated_split():
    from isam2.errors import ConfigError
    from isam2.pipelines.train import check_videos_per_process

    held_out = {"mode": "held_out", "fraction": 0.1}
    check_videos_per_process({"val": 2, "test": 2}, 2, held_out)  # one each: fine
    with pytest.raises(ConfigError, match=r"data\.selection\.fraction=0\.1 holds out 1 training video"):
        check_videos_per_process({"val": 1, "test": 4}, 2, held_out)
    with pytest.raises(ConfigError, match=r"the test split has 1 video\(s\) for 2 processes"):
        check_videos_per_process({"val": 4, "test": 1}, 2, {"mode": "paper_val"})
