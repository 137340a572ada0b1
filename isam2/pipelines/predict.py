"""The predict pipeline: a trained head on any videos (files, frame folders, a split), maps written as they come."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from isam2.constants import VOID
from isam2.errors import ConfigError
from isam2.logs import get_logger
from isam2.pipelines.report import flat_metrics, report

log = get_logger(__name__)
OUTPUT_FORMATS = ("isam2", "vspw")
VSPW_CLASSES = 124


def run(cfg: DictConfig) -> dict[str, Any]:
    """Segment every video of `cfg.input` (or of data.split) into cfg.output_dir; predict.json (per video:
    frames, masklets per frame, classes present, speed) into the run directory and output_dir; where a video
    has ground truth it is scored with evaluate's metrics and table.
    Returns {"metrics": {"predict/miou", ...} (None without GT), "results", "run_dir", "output_dir"}."""
    from isam2.encoders import encoder_configs
    from isam2.files import check_output_apart, write_json
    from isam2.runs import newest_train_checkpoint
    from isam2.segmenter import Segmenter
    from isam2.segmenter.parts import load_head_checkpoint, load_segmenter_parts

    fmt = str(cfg.output_format)
    if fmt not in OUTPUT_FORMATS:
        raise ConfigError(f"output_format={fmt!r} is not one of {list(OUTPUT_FORMATS)}")
    streams, inputs, class_names = _open_inputs(cfg)
    out_dir = Path(cfg.output_dir).expanduser().resolve()
    if cfg.get("base_pred_dir"):
        inputs["base_pred_dir"] = Path(cfg.base_pred_dir)
    check_output_apart(out_dir, "output_dir", inputs)  # before any work: never written over an input
    ckpt = Path(cfg.ckpt_path) if cfg.get("ckpt_path") else newest_train_checkpoint(Path(cfg.paths.log_dir))
    num_classes = int(load_head_checkpoint(ckpt).get("hyper_parameters", {}).get("num_classes", -1))
    if fmt == "vspw" and num_classes != VSPW_CLASSES:
        raise ConfigError(
            f"output_format=vspw: checkpoint {ckpt} classifies {num_classes} classes, not VSPW's "
            f"{VSPW_CLASSES}; write output_format=isam2 instead"
        )
    parts = load_segmenter_parts(
        ckpt,
        cfg.sam2.get("checkpoint"),
        str(cfg.sam2.get("device", "auto")),
        masklets=OmegaConf.to_container(cfg.masklets, resolve=True),
        encoders=encoder_configs(cfg),
        segment=OmegaConf.to_container(cfg.segment, resolve=True),
        allow_feature_mismatch=bool(cfg.allow_feature_mismatch),
    )
    segmenter = Segmenter(parts.model, parts.source, parts.encoders, cfg.get("base_pred_dir"), class_names)
    scorer = _Scorer(cfg, num_classes, streams)
    videos = {}
    for stream in _progress(streams, bool(cfg.progress)):
        videos[stream.id] = _predict_video(cfg, segmenter, stream, out_dir, fmt, scorer, class_names)
    results = {
        "checkpoint": str(ckpt),
        "output_dir": str(out_dir),
        "output_format": fmt,
        "masklets": OmegaConf.to_container(cfg.masklets, resolve=True),
        "videos": videos,
        "speed": _total_speed(videos),
        **scorer.results(parts.model),
    }
    for path in {Path(cfg.paths.output_dir) / "predict.json", out_dir / "predict.json"}:
        write_json(path, results)
    report(_summary(results, class_names))
    metrics = flat_metrics("predict", results.get("metrics") or {})
    return {
        "metrics": metrics,
        "results": results,
        "run_dir": str(cfg.paths.output_dir),
        "output_dir": str(out_dir),
    }


# ---- inputs ---------------------------------------------------------------------------------------------
def _open_inputs(cfg: DictConfig) -> tuple[list[Any], dict[str, Path], list[str]]:
    """The videos to segment, the input folders output_dir must stay apart from, and the class names."""
    from isam2.data import open_split
    from isam2.data.datasets import class_names_in
    from isam2.data.streams import SplitVideoStream, open_path

    if cfg.get("input") not in (None, ""):
        path = Path(str(cfg.input)).expanduser()
        streams = open_path(path)
        # the class names of data= when its folder names them (VSPW's label_num_dic_final.json), else class_<i>
        names = class_names_in(Path(str(cfg.data.root)).expanduser(), int(cfg.data.num_classes))
        return streams, {"input": path if path.is_dir() else path.parent}, names
    dataset = open_split(cfg.data, cfg.data.split, require_masks=False)
    return [SplitVideoStream(v) for v in dataset.videos], {"data.root": dataset.root}, dataset.class_names


def _progress(streams: list[Any], enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(streams, desc="predict", unit="video", disable=not enabled or len(streams) < 2)


# ---- one video ------------------------------------------------------------------------------------------
def _predict_video(
    cfg: DictConfig, segmenter: Any, stream: Any, out_dir: Path, fmt: str, scorer: _Scorer, names: list[str]
) -> dict[str, Any]:
    """Segment one video, writing each frame's map (and overlay) as it comes; returns its predict.json entry."""
    from tqdm import tqdm

    from isam2.files import BackgroundWriter
    from isam2.segmenter import StreamTimes

    times = StreamTimes()
    pixels = np.zeros(256, np.int64)
    renderer = _renderer(cfg, stream, out_dir, names)
    writes = BackgroundWriter()
    bar = tqdm(
        total=stream.num_frames or None, desc=stream.id, unit="frame", disable=not cfg.progress, leave=False
    )
    scorer.begin(stream)
    try:
        for f in segmenter.segment(stream, return_masklets=bool(cfg.render), times=times):
            pixels += np.bincount(f.semantic.ravel(), minlength=256)
            writes.submit(_write_map, out_dir / stream.id / f"{f.name}.png", f.semantic, fmt)
            if renderer is not None:
                writes.submit(renderer.add, f.name, f.frame, f.semantic, f.masklets)
            scorer.add(f)
            bar.update(1)
        writes.wait()
        if renderer is not None:
            renderer.close()
    except BaseException:
        writes.wait(raise_errors=False)
        if renderer is not None:
            renderer.abort()
        raise
    finally:
        bar.close()
    scorer.end(stream)
    return _video_record(stream, times, pixels, names)


def _renderer(cfg: DictConfig, stream: Any, out_dir: Path, names: list[str]) -> Any:
    if not cfg.render:
        return None
    from isam2.render import VideoRenderer

    return VideoRenderer(out_dir / "render", stream.id, stream.fps, names)


def _write_map(path: Path, semantic: np.ndarray, fmt: str) -> None:
    from isam2.data.labels import train_to_vspw
    from isam2.data.predictions import write_prediction

    write_prediction(path, train_to_vspw(semantic) if fmt == "vspw" else semantic)


def _video_record(stream: Any, times: Any, pixels: np.ndarray, names: list[str]) -> dict[str, Any]:
    total = int(pixels.sum())
    present = {
        names[c] if c < len(names) else f"class_{c}": float(pixels[c] / total)
        for c in np.argsort(-pixels)
        if pixels[c] and c != VOID
    }
    compute = times.total - times.waiting_for_frames
    return {
        "frames": times.frames,
        "masklets_per_frame": times.masklets / times.frames if times.frames else None,
        "classes": present,
        "uncovered": float(pixels[VOID] / total) if total else None,
        "has_gt": bool(stream.has_gt),
        "speed": {
            "fps": times.frames / times.total if times.total > 0 else None,
            "fps_without_decoding": times.frames / compute if compute > 0 else None,
            "seconds": times.total,
            "waiting_for_frames": times.waiting_for_frames,
        },
    }


def _total_speed(videos: dict[str, dict[str, Any]]) -> dict[str, Any]:
    frames = sum(v["frames"] for v in videos.values())
    seconds = sum(v["speed"]["seconds"] for v in videos.values())
    waiting = sum(v["speed"]["waiting_for_frames"] for v in videos.values())
    return {
        "frames": frames,
        "seconds": seconds,
        "fps": frames / seconds if seconds > 0 else None,
        "fps_without_decoding": frames / (seconds - waiting) if seconds > waiting else None,
        "measured": "decoding, SAM2, masklets, head, painting and writing; model loading excluded",
    }


# ---- scoring where there is ground truth ----------------------------------------------------------------
class _Scorer:
    """evaluate's metrics over the videos that have ground truth, streamed frame by frame; said once when
    some or all videos have none."""

    def __init__(self, cfg: DictConfig, num_classes: int, streams: list[Any]):
        self.kwargs = {"num_classes": num_classes, **OmegaConf.to_container(cfg.metrics, resolve=True)}
        self.metrics: dict[str, Any] = {}
        self.labelled = [s.id for s in streams if s.has_gt]
        if not self.labelled:
            log.warning("no video has ground truth: predictions are written, nothing is scored")
        elif len(self.labelled) < len(streams):
            first = next(s.id for s in streams if not s.has_gt)
            log.warning(
                f"{len(streams) - len(self.labelled)} of {len(streams)} videos have no ground truth (first: "
                f"{first!r}): only the {len(self.labelled)} with ground truth are scored"
            )

    def begin(self, stream: Any) -> None:
        self.open = bool(stream.has_gt)
        for metric in self.metrics.values():
            if self.open:
                metric.begin_video()

    def add(self, frame: Any) -> None:
        if not self.open or frame.gt is None:
            return
        import torch

        from isam2.metrics import VideoSegmentationMetrics

        gt = torch.from_numpy(frame.gt)
        for key, pred in frame.methods.items():
            if key not in self.metrics:
                self.metrics[key] = VideoSegmentationMetrics(**self.kwargs)
                self.metrics[key].begin_video()
            self.metrics[key].update_frames(torch.from_numpy(pred), gt)

    def end(self, stream: Any) -> None:
        if self.open:
            for metric in self.metrics.values():
                metric.end_video()
        self.open = False

    def results(self, model: Any) -> dict[str, Any]:
        if not self.metrics:
            return {"metrics": None, "scored_videos": []}
        from isam2.metrics.report import paper_columns

        methods = {model.method_name(k): m.compute() for k, m in self.metrics.items()}
        primary = model.method_name(model.primary_method)
        return {
            "metrics": {**methods[primary], "method": primary},
            "methods": methods,
            "paper": {name: paper_columns(m) for name, m in methods.items()},
            "scored_videos": self.labelled,
        }


def _summary(results: dict[str, Any], names: list[str]) -> str:
    from isam2.metrics import format_table

    speed = results["speed"]
    fps = "-" if speed["fps"] is None else f"{speed['fps']:.2f}"
    bare = "-" if speed["fps_without_decoding"] is None else f"{speed['fps_without_decoding']:.2f}"
    lines = [
        f"{name}: {v['frames']} frames, {v['masklets_per_frame'] or 0:.1f} masklets/frame, "
        f"{len(v['classes'])} classes" + ("" if v["has_gt"] else " (no ground truth)")
        for name, v in results["videos"].items()
    ]
    if results.get("methods"):
        lines.append(format_table(results["methods"], class_names=names))
    lines.append(
        f"speed: {fps} frames/s ({bare} without decoding), {speed['frames']} frames in {speed['seconds']:.1f} s"
    )
    lines.append(f"predictions: {results['output_dir']}")
    return "\n".join(lines)


__all__ = ["OUTPUT_FORMATS", "run"]
