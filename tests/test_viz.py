"""isam2.viz plots and tables, and the ClassConfusion metric, against brute force on hand-made cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from isam2 import runs, viz
from isam2.metrics.confusion import ClassConfusion

NAMES = ["sky", "grass", "road", "wall"]


def brute_confusion(pred: np.ndarray, gt: np.ndarray, c: int) -> np.ndarray:
    m = np.zeros((c, c + 1), np.int64)
    for p, g in zip(pred.ravel().tolist(), gt.ravel().tolist()):
        if 0 <= g < c:
            m[g, p if 0 <= p < c else c] += 1
    return m


def test_confusion_metric_matches_a_pixel_loop():
    rng = np.random.default_rng(0)
    metric = ClassConfusion(num_classes=4)
    total = np.zeros((4, 5), np.int64)
    for _ in range(3):
        gt = rng.choice([0, 1, 2, 3, 255], size=(2, 5, 7)).astype(np.uint8)
        pred = rng.choice([0, 1, 2, 3, 255, 9], size=(2, 5, 7)).astype(np.uint8)  # 9: outside [0, 4)
        metric.update(torch.from_numpy(pred), torch.from_numpy(gt))
        total += brute_confusion(pred, gt, 4)
    assert np.array_equal(metric.compute().numpy(), total)
    iou = metric.per_class_iou()
    for c in range(4):
        union = total[c].sum() + total[:, c].sum() - total[c, c]
        assert iou[c] == (pytest.approx(total[c, c] / union) if union else None)


def test_overlay_masks_void_and_names_the_classes_present():
    frame = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 2
    labels = np.full((4, 6), 255, np.uint8)
    labels[:2, :3] = 1
    labels[3, 5] = 3
    fig = viz.overlay(frame, labels, NAMES, alpha=0.5)
    shown = fig.axes[0].images[0].get_array()
    colours = viz.class_colours(256)
    for y, x in np.ndindex(labels.shape):
        if labels[y, x] == 255:
            assert np.array_equal(shown[y, x], frame[y, x])
        else:
            expected = np.round(0.5 * frame[y, x] + 0.5 * colours[labels[y, x]]).astype(np.uint8)
            assert np.array_equal(shown[y, x], expected)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["grass", "wall"]


def test_masklet_outlines_mark_the_borders_of_each_masklet():
    ids = np.full((6, 8), -1)
    ids[1:4, 1:4] = 0
    ids[1:4, 4:7] = 1
    frame = np.zeros((6, 8, 3), np.uint8)
    shown = viz.masklet_outlines(frame, ids).axes[0].images[0].get_array()
    for y, x in np.ndindex(ids.shape):
        neighbours = [(y + dy, x + dx) for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0))]
        border = ids[y, x] >= 0 and any(
            0 <= a < 6 and 0 <= b < 8 and ids[a, b] != ids[y, x] for a, b in neighbours
        )
        assert np.array_equal(shown[y, x], viz.OUTLINE_COLOUR if border else frame[y, x]), (y, x)


def test_per_class_iou_bars_show_the_classes_with_an_iou_best_first():
    fig = viz.per_class_iou_bars([0.5, None, 0.9, 0.0], NAMES)
    ax = fig.axes[0]
    assert [p.get_width() for p in ax.patches] == pytest.approx([90.0, 50.0, 0.0])
    assert [t.get_text() for t in ax.get_yticklabels()] == ["road", "sky", "wall"]


def test_confusion_plot_keeps_the_top_confusions_normalised_per_row():
    m = np.array(
        [
            [50, 10, 0, 0, 5],  # sky: 10 to grass, 5 to none
            [0, 40, 0, 0, 0],
            [0, 0, 30, 2, 0],  # road: 2 to wall
            [0, 0, 0, 20, 0],
        ]
    )
    assert viz.top_confusions(m, 2) == [(0, 1, 10), (0, 4, 5)]
    fig = viz.confusion_matrix_plot(m, NAMES, top_k=2)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sky", "grass"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sky", "grass", "none"]
    expected = [[50 / 65, 10 / 65, 5 / 65], [0, 1, 0]]
    assert np.allclose(ax.images[0].get_array(), expected)
    # "road" is only predicted (no GT pixel): a column, but no row
    only_predicted = np.array([[6, 0, 4, 0], [0, 3, 0, 0], [0, 0, 0, 0]])
    ax = viz.confusion_matrix_plot(only_predicted, NAMES[:3], top_k=3).axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sky"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["sky", "road", "none"]
    assert np.allclose(ax.images[0].get_array(), [[0.6, 0.4, 0.0]])


def test_store_statistics_match_the_ground_truth_of_a_toy_store(tmp_path):
    from tests.train_helpers import tiny_dataset, toy_store

    dataset = tiny_dataset(tmp_path / "data", "val")
    store = toy_store(tmp_path / "store", dataset)
    stats = viz.store_statistics(store)
    masks = [m for video in dataset for m in video.load_masks()]
    # the toy store has one masklet per GT class per frame, covering exactly the non-void pixels
    assert stats["masklets_per_frame"].tolist() == [len(set(np.unique(m)) - {255}) for m in masks]
    assert np.allclose(stats["coverage_per_frame"], [(m != 255).mean() for m in masks])
    assert stats["masklets"] == len(store) and stats["mean_purity"] == 1.0
    assert sorted(stats["area"].tolist()) == sorted(
        int((m == c).sum()) for m in masks for c in np.unique(m) if c != 255
    )
    fig = viz.store_statistics_plot(stats)
    assert sum(p.get_height() for p in fig.axes[0].patches) == stats["frames"]


def _fake_run(folder: Path, window: int, methods: dict[str, float]) -> Path:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text(f"masklets:\n  window: 32\nseed: {window}\n")
    (folder / ".hydra" / "overrides.yaml").write_text(f"- masklets.window={window}\n")
    body = {name: {"miou": v, "fwiou": v / 2, "mbiou": None} for name, v in methods.items()}
    (folder / "metrics.json").write_text(json.dumps({"methods": body, "miou": 0.0}))
    return folder


def test_metrics_table_reads_a_multirun_and_plots_the_swept_key(tmp_path):
    for job, (window, miou) in enumerate([(16, 0.4), (8, 0.3), (32, 0.5)]):
        _fake_run(tmp_path / "multirun" / str(job), window, {"I-SAM2": miou, "I-SAM2_base": miou + 0.1})
    rows = viz.metrics_table([tmp_path / "multirun"], swept=["masklets.window", "seed"])
    assert [(r["masklets.window"], r["method"], r["miou"]) for r in rows[:2]] == [
        (16, "I-SAM2", 0.4),
        (16, "I-SAM2_base", 0.5),
    ]
    assert [r["seed"] for r in rows] == [16, 16, 8, 8, 32, 32] and rows[0]["mbiou"] is None
    text = viz.format_metrics_table(rows, ["masklets.window"])
    assert "0 masklets.window=16 I-SAM2" in text and "40.0" in text
    lines = viz.compare_runs_plot(rows, key="masklets.window").axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["I-SAM2", "I-SAM2_base"]
    assert lines[0].get_xdata().tolist() == [8, 16, 32]
    assert np.allclose(lines[0].get_ydata(), [30, 40, 50])


def test_refine_metrics_are_read_as_two_methods(tmp_path):
    run = tmp_path / "refine"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"base": {"miou": 0.2}, "refined": {"miou": 0.3}}))
    rows = viz.metrics_table([run])
    assert [(r["method"], r["miou"]) for r in rows] == [("base", 0.2), ("refined", 0.3)]


def test_worst_frames_are_those_with_the_lowest_frame_miou(tmp_path):
    from isam2.data.predictions import write_prediction
    from tests.train_helpers import tiny_dataset

    dataset = tiny_dataset(tmp_path / "data", "test")
    expected = {}
    for video in dataset:
        for t, name in enumerate(video.frame_names):
            gt = video.load_mask(t)
            pred = gt.copy()
            wrong = t + 1  # later frames lose more rows to "none" (255): lower frame mIoU
            pred[: 4 * wrong] = 255
            write_prediction(tmp_path / "pred" / video.id / f"{name}.png", pred)
            m = brute_confusion(pred, gt, dataset.num_classes)
            present = m.sum(1) > 0
            with np.errstate(invalid="ignore"):  # 0/0 for classes absent from both: not in `present`
                iou = np.diag(m[:, :-1]) / (m.sum(1) + m[:, :-1].sum(0) - np.diag(m[:, :-1]))
            expected[(video.id, name)] = iou[present].mean()
    worst = viz.worst_frames(tmp_path / "pred", dataset, k=3)
    ranked = sorted(expected.items(), key=lambda kv: kv[1])[:3]
    assert [(w.video, w.frame) for w in worst] == [key for key, _ in ranked]
    assert [w.miou for w in worst] == pytest.approx([v for _, v in ranked])
    fig = viz.frames_figure(tmp_path / "pred", dataset, worst)
    assert len(fig.axes) == 6


def test_swept_keys_are_the_overrides_that_differ(tmp_path):
    for job, window in enumerate([16, 8]):
        run = _fake_run(tmp_path / "multirun" / str(job), window, {"I-SAM2": 0.1})
        (run / ".hydra" / "overrides.yaml").write_text(f"- masklets.window={window}\n- seed=3\n")
    assert runs.swept_keys([tmp_path / "multirun"]) == ["masklets.window"]
