"""Plots and tables for analysing runs and masklet stores: each plot helper returns a matplotlib Figure (Agg)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import matplotlib.pyplot as plt  # noqa: F401  (in a notebook kernel, importing pyplot sets up figure display)
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from isam2.constants import VOID  # GT void and "no prediction" in label maps
from isam2.runs import config_value, read_json, run_config, run_folders, run_methods

TABLE_METRICS = ("miou", "fwiou", "mbiou", "mvc8", "mvc16")
OUTLINE_COLOUR = np.array([255, 255, 0], np.uint8)  # masklet borders: yellow shows on most scenes


def new_figure(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, Any]:
    """(figure, axes) outside pyplot's figure manager: nothing to close, no second copy shown at the end of a
    notebook cell, and rendered by Agg when saved, with or without a display."""
    figsize = kwargs.pop("figsize", None)
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


# ---- colours and label-map overlays -------------------------------------------------------------------
def class_colours(num_classes: int = 256) -> np.ndarray:
    """[num_classes, 3] uint8 colours, fixed per class id (the same class has the same colour in every plot)."""
    rng = np.random.default_rng(0)
    colours = rng.integers(40, 256, size=(max(num_classes, 1), 3)).astype(np.uint8)
    base = (np.asarray(matplotlib.colormaps["tab20"].colors) * 255).astype(np.uint8)
    colours[: min(len(base), num_classes)] = base[: min(len(base), num_classes)]
    return colours


def overlay_image(
    frame: np.ndarray, label_map: np.ndarray, alpha: float = 0.5, void: int = VOID
) -> np.ndarray:
    """[H,W,3] uint8: the frame blended with each class's colour; void pixels keep the frame as it is."""
    frame, label_map = _check_frame(frame, label_map)
    colours = class_colours(256)
    keep = label_map != void
    out = frame.copy()
    blend = (1 - alpha) * frame[keep].astype(np.float64) + alpha * colours[label_map[keep]]
    out[keep] = np.round(blend).astype(np.uint8)
    return out


def _check_frame(frame: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frame, other = np.asarray(frame), np.asarray(other)
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be [H, W, 3] uint8, got {frame.shape} {frame.dtype}")
    if other.shape != frame.shape[:2]:
        raise ValueError(f"map shape {other.shape} differs from the frame's {frame.shape[:2]}")
    return frame, other


def class_name(class_names: Sequence[str] | None, class_id: int) -> str:
    if class_names is not None and 0 <= class_id < len(class_names):
        return str(class_names[class_id])
    return f"class_{class_id}"


def overlay(
    frame: np.ndarray,
    label_map: np.ndarray,
    class_names: Sequence[str] | None,
    void: int = VOID,
    alpha: float = 0.5,
    title: str | None = None,
    id_map: np.ndarray | None = None,
) -> Figure:
    """The frame with its classes coloured (void masked out, i.e. the frame shows through) and a legend of the
    class NAMES present; with `id_map`, masklet borders are drawn on top (`masklet_outline_image`)."""
    image = overlay_image(frame, label_map, alpha, void)
    if id_map is not None:
        image = masklet_outline_image(image, id_map)
    fig, ax = new_figure(figsize=(6, 6 * image.shape[0] / image.shape[1] + 0.6))
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    colours = class_colours(256)
    present = [int(c) for c in np.unique(label_map) if c != void]
    handles = [Patch(color=colours[c] / 255, label=class_name(class_names, c)) for c in present]
    if handles:
        ax.legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False
        )
    fig.tight_layout()
    return fig


def outline_mask(id_map: np.ndarray) -> np.ndarray:
    """[H,W] bool: pixels of a masklet whose right or lower neighbour belongs to another masklet (or none)."""
    ids = np.asarray(id_map)
    border = np.zeros(ids.shape, bool)
    right = ids[:, 1:] != ids[:, :-1]
    down = ids[1:, :] != ids[:-1, :]
    border[:, :-1] |= right & (ids[:, :-1] >= 0)
    border[:, 1:] |= right & (ids[:, 1:] >= 0)
    border[:-1, :] |= down & (ids[:-1, :] >= 0)
    border[1:, :] |= down & (ids[1:, :] >= 0)
    return border


def masklet_outline_image(frame: np.ndarray, id_map: np.ndarray) -> np.ndarray:
    """[H,W,3] uint8: the frame with every masklet border pixel (`outline_mask`) in OUTLINE_COLOUR."""
    frame, id_map = _check_frame(frame, id_map)
    out = frame.copy()
    out[outline_mask(id_map)] = OUTLINE_COLOUR
    return out


def masklet_outlines(frame: np.ndarray, id_map: np.ndarray, title: str | None = None) -> Figure:
    """The frame with the borders of its masklets (id map: masklet per pixel, -1 = none)."""
    image = masklet_outline_image(frame, id_map)
    fig, ax = new_figure(figsize=(6, 6 * image.shape[0] / image.shape[1]))
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(title or f"{len(np.unique(id_map[id_map >= 0]))} masklets")
    fig.tight_layout()
    return fig


# ---- per-class IoU and confusion --------------------------------------------------------------------------
def per_class_iou_bars(
    per_class_iou: Sequence[float | None] | Mapping[str, Sequence[float | None]],
    class_names: Sequence[str] | None,
    title: str = "Per-class IoU",
) -> Figure:
    """Horizontal bars of IoU (%) per class with an IoU; several methods ({method: per_class_iou}) side by
    side. Classes are ordered by the first method's IoU, best first."""
    series = dict(per_class_iou) if isinstance(per_class_iou, Mapping) else {"IoU": per_class_iou}
    first = next(iter(series.values()))
    classes = sorted(
        {i for values in series.values() for i, v in enumerate(values) if v is not None},
        key=lambda i: -(first[i] if i < len(first) and first[i] is not None else -1.0),
    )
    fig, ax = new_figure(figsize=(7, 0.6 + 0.3 * max(len(classes), 1) * max(len(series), 1) ** 0.5))
    height = 0.8 / len(series)
    y = np.arange(len(classes))
    for k, (method, values) in enumerate(series.items()):
        widths = [100 * (values[i] or 0.0) if i < len(values) else 0.0 for i in classes]
        ax.barh(y + k * height, widths, height=height, label=method)
    ax.set_yticks(y + height * (len(series) - 1) / 2, [class_name(class_names, i) for i in classes])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("IoU (%)")
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def top_confusions(matrix: np.ndarray, k: int) -> list[tuple[int, int, int]]:
    """The k largest off-diagonal counts of a [C, C] or [C, C+1] confusion matrix (GT row, predicted column;
    column C = "none"), as (gt class, predicted column, pixels), largest first; zero counts are left out."""
    m = np.asarray(matrix, np.int64)
    off = m.copy()
    n = min(m.shape)
    off[np.arange(n), np.arange(n)] = 0
    order = np.argsort(-off, axis=None, kind="stable")[:k]
    pairs = [(int(i), int(j), int(off[i, j])) for i, j in zip(*np.unravel_index(order, off.shape))]
    return [p for p in pairs if p[2] > 0]


def normalised_rows(matrix: np.ndarray) -> np.ndarray:
    """Each GT row divided by its pixel count (rows without pixels stay 0)."""
    m = np.asarray(matrix, np.float64)
    return m / np.maximum(m.sum(1, keepdims=True), 1)


def confusion_classes(matrix: np.ndarray, top_k: int) -> list[int]:
    """The classes in the top_k confusions (as GT or prediction), in class order: the rows and columns that
    `confusion_matrix_plot` shows."""
    num_classes = np.asarray(matrix).shape[0]
    pairs = top_confusions(matrix, top_k)
    return sorted({c for i, j, _ in pairs for c in (i, j) if c < num_classes})


def confusion_matrix_plot(
    matrix: np.ndarray, class_names: Sequence[str] | None, top_k: int = 10, title: str | None = None
) -> Figure:
    """The confusion matrix normalised per GT row, restricted to the classes of the top_k confusions (so it stays
    readable at 124 classes); a [C, C+1] matrix keeps its "none" column (pixels no masklet predicted). Rows are
    the classes with ground-truth pixels; cells show the share of the GT row in percent."""
    m = np.asarray(matrix)
    num_classes = m.shape[0]
    classes = confusion_classes(m, top_k) or sorted(int(c) for c in np.flatnonzero(m.sum(1)))[:top_k]
    columns = classes + ([num_classes] if m.shape[1] > num_classes else [])
    rows = [c for c in classes if m[c].sum() > 0]  # a class only predicted has no GT row to show
    share = normalised_rows(m)[np.ix_(rows, columns)]
    names = [class_name(class_names, c) for c in columns if c < num_classes]
    fig, ax = new_figure(figsize=(1.5 + 0.55 * len(columns), 1.2 + 0.5 * len(rows)))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(
        range(len(columns)), names + ["none"] * (len(columns) - len(classes)), rotation=45, ha="right"
    )
    ax.set_yticks(range(len(rows)), [class_name(class_names, c) for c in rows])
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    for (i, j), v in np.ndenumerate(share):
        ax.text(
            j,
            i,
            f"{100 * v:.0f}",
            ha="center",
            va="center",
            color="white" if v > 0.5 else "black",
            fontsize=7,
        )
    ax.set_title(title or f"Confusion (% of GT row), classes of the top {top_k} confusions")
    fig.tight_layout()
    return fig


# ---- masklet stores --------------------------------------------------------------------------------------
def store_statistics(store: Any, videos: Iterable[str] | None = None) -> dict[str, Any]:
    """Plain statistics of a MaskletStore (all videos, or `videos`): numpy arrays per frame and per masklet.

    masklets_per_frame [F], coverage_per_frame [F] (share of the frame's pixels under a masklet), area and
    purity [N] (per masklet; purity = share of its pixels of its majority GT class), labelled (share of
    masklets with a target), plus their means."""
    chosen = list(videos) if videos is not None else store.videos()
    per_frame, coverage, rows = [], [], []
    for video in chosen:
        span = store.rows(video)
        per_frame.append(np.bincount(np.asarray(store.frame[span]), minlength=store.num_frames(video)))
        maps = store.id_maps(video)
        coverage.append((maps >= 0).reshape(len(maps), -1).mean(1))
        rows.append(np.arange(span.start, span.stop))
    masklets_per_frame = np.concatenate(per_frame) if per_frame else np.zeros(0, np.int64)
    coverage_per_frame = np.concatenate(coverage) if coverage else np.zeros(0)
    index = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    area = np.asarray(store.area)[index]
    purity = np.asarray(store.purity)[index]
    label = np.asarray(store.label)[index]
    return {
        "videos": len(chosen),
        "frames": len(masklets_per_frame),
        "masklets": len(index),
        "masklets_per_frame": masklets_per_frame,
        "coverage_per_frame": coverage_per_frame,
        "area": area,
        "purity": purity,
        "mean_masklets_per_frame": float(masklets_per_frame.mean()) if len(masklets_per_frame) else 0.0,
        "mean_coverage": float(coverage_per_frame.mean()) if len(coverage_per_frame) else 0.0,
        "mean_purity": float(purity.mean()) if len(purity) else None,
        "labelled": float((label != VOID).mean()) if len(label) else None,
    }


def store_statistics_plot(stats: Mapping[str, Any]) -> Figure:
    """Four histograms of `store_statistics`: masklets per frame, coverage per frame, area, purity."""
    fig, axes = new_figure(1, 4, figsize=(14, 3))
    panels = [
        ("masklets_per_frame", "masklets per frame", None),
        ("coverage_per_frame", "coverage per frame", (0, 1)),
        ("area", "masklet area (pixels, log10)", None),
        ("purity", "masklet purity", (0, 1)),
    ]
    for ax, (key, label, limits) in zip(axes, panels):
        values = np.asarray(stats[key], np.float64)
        if key == "area":
            values = np.log10(np.maximum(values, 1))
        ax.hist(values, bins=20, range=limits, color="tab:blue")
        ax.set_xlabel(label)
    axes[0].set_ylabel("count")
    fig.suptitle(
        f"{stats['masklets']} masklets in {stats['frames']} frames of {stats['videos']} videos: "
        f"{stats['mean_masklets_per_frame']:.1f} per frame, coverage {100 * stats['mean_coverage']:.1f}%"
    )
    fig.tight_layout()
    return fig


def metrics_table(run_dirs: Iterable[str | os.PathLike], swept: Sequence[str] = ()) -> list[dict[str, Any]]:
    """One row per (run, method): run, method, each `swept` key's value, and miou/fwiou/mbiou/mvc8/mvc16
    (fractions, None where undefined). Accepts run folders and multirun folders."""
    rows = []
    for run in run_folders(run_dirs):
        for method, values in run_methods(read_json(run / "metrics.json")).items():
            row: dict[str, Any] = {"run": str(run), "method": method}
            row.update({key: config_value(run, key) for key in swept})
            row.update({key: values.get(key) for key in TABLE_METRICS})
            rows.append(row)
    return rows


def format_metrics_table(rows: Sequence[Mapping[str, Any]], swept: Sequence[str] = ()) -> str:
    """`metrics_table` rows in the paper's layout (percent), one line per run and method."""
    from isam2.metrics import format_table

    def label(row: Mapping[str, Any]) -> str:
        keys = " ".join(f"{k}={row.get(k)}" for k in swept)
        return " ".join(filter(None, [Path(row["run"]).name, keys, row["method"]]))

    return format_table({label(row): dict(row) for row in rows})


def compare_runs_plot(
    rows: Sequence[Mapping[str, Any]], key: str | None = None, metric: str = "miou"
) -> Figure:
    """`metrics_table` rows as a plot of `metric` (%): against the swept `key` (one line per method, points in
    key order) or, without a key, one bar per run and method."""
    fig, ax = new_figure(figsize=(7, 4))
    if key is not None:
        for method in dict.fromkeys(r["method"] for r in rows):
            points = sorted(
                ((r[key], r[metric]) for r in rows if r["method"] == method and r[metric] is not None),
                key=lambda p: p[0],
            )
            ax.plot([p[0] for p in points], [100 * p[1] for p in points], marker="o", label=method)
        ax.set_xlabel(key)
        ax.legend(fontsize="small")
    else:
        labels = [f"{Path(r['run']).name}\n{r['method']}" for r in rows]
        ax.bar(range(len(rows)), [100 * (r[metric] or 0.0) for r in rows])
        ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize="small")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"{metric} across runs" + (f" by {key}" if key else ""))
    fig.tight_layout()
    return fig


# ---- predictions against the ground truth ------------------------------------------------------------------
@dataclass(frozen=True)
class FrameScore:
    """One predicted frame's mIoU over the classes of its ground truth (None: no valid GT pixel)."""

    video: str
    frame: str
    index: int
    miou: float | None


def run_dataset(run_dir: str | os.PathLike, split: str | None = None) -> Any:
    """The dataset reader a run was tested on (its data config; `data.test_split` unless `split` is given)."""
    from isam2.data import open_split

    data = run_config(run_dir).data
    return open_split(data, split or data.get("test_split") or data.split)


def predictions_and_gt(
    pred_dir: str | os.PathLike, dataset: Any
) -> Iterable[tuple[Any, np.ndarray, np.ndarray]]:
    """(video, predictions [T,H,W], GT [T,H,W]) for each video of `dataset` in the prediction folder."""
    from isam2.data.predictions import check_predictions, prediction_path, read_prediction

    check_predictions(pred_dir, dataset.videos)
    for video in dataset:
        preds = np.stack(
            [read_prediction(prediction_path(pred_dir, video.id, f), video.size) for f in video.frame_names]
        )
        yield video, preds, video.load_masks()


def confusion_from_predictions(pred_dir: str | os.PathLike, dataset: Any) -> np.ndarray:
    """int64 [C, C+1] confusion (GT x predicted, last column "none") of a prediction folder against `dataset`."""
    from isam2.metrics.confusion import ClassConfusion

    confusion = ClassConfusion(dataset.num_classes)
    for _, preds, gt in predictions_and_gt(pred_dir, dataset):
        confusion.update(preds, gt)
    return confusion.compute().numpy()


def worst_frames(pred_dir: str | os.PathLike, dataset: Any, k: int = 4) -> list[FrameScore]:
    """The k frames with the lowest mIoU (over their GT classes) of a prediction folder, worst first."""
    from isam2.metrics.iou import confusion_matrix, iou_scores
    from isam2.metrics.labels import label_pair

    scores = []
    for video, preds, gt in predictions_and_gt(pred_dir, dataset):
        pred_t, gt_t = label_pair(preds, gt, dataset.num_classes)
        for t, name in enumerate(video.frame_names):
            miou = iou_scores(confusion_matrix(pred_t[t], gt_t[t], dataset.num_classes))["miou"]
            scores.append(FrameScore(video.id, name, t, miou))
    scored = [s for s in scores if s.miou is not None]
    return sorted(scored, key=lambda s: (s.miou, s.video, s.index))[:k]


def frames_figure(
    pred_dir: str | os.PathLike,
    dataset: Any,
    frames: Sequence[FrameScore],
    class_names: Sequence[str] | None = None,
) -> Figure:
    """One row per frame: the ground truth and the prediction overlaid on the frame (void masked out), with
    the class names of both in a legend."""
    from isam2.data.predictions import prediction_path, read_prediction

    names = class_names if class_names is not None else dataset.class_names
    by_id = {v.id: v for v in dataset}
    colours = class_colours(256)
    fig, axes = new_figure(max(len(frames), 1), 2, figsize=(10, 3.2 * max(len(frames), 1)), squeeze=False)
    for row, score in zip(axes, frames):
        video = by_id[score.video]
        image, gt = video.load_frame(score.index), video.load_mask(score.index)
        pred = read_prediction(prediction_path(pred_dir, score.video, score.frame), video.size)
        for ax, labels, what in ((row[0], gt, "ground truth"), (row[1], pred, "prediction")):
            ax.imshow(overlay_image(image, labels), interpolation="nearest")
            ax.set_axis_off()
            miou = "" if score.miou is None else f", frame mIoU {100 * score.miou:.1f}%"
            ax.set_title(f"{score.video}/{score.frame} {what}{miou}", fontsize="small")
        present = sorted({int(c) for c in np.unique(np.concatenate([gt.ravel(), pred.ravel()])) if c != VOID})
        handles = [Patch(color=colours[c] / 255, label=class_name(names, c)) for c in present]
        row[1].legend(
            handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small", frameon=False
        )
    fig.tight_layout()
    return fig
