"""What a run leaves: metadata, metrics.json and the results table (printed and in <run>/<task>.log), speed records."""

from __future__ import annotations

import logging
import platform
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from isam2.errors import ConfigError
from isam2.metrics.results import SelectionRecord, SpeedRecord, TestResults
from isam2.pipelines.trainer import known_warnings_silenced
from isam2.runs import package_versions

TABLE_KEYS = ("miou", "fwiou", "mbiou", "mvc8", "mvc16")  # the paper's columns, in its order

log = logging.getLogger("isam2")


# ---- what a run writes ------------------------------------------------------------------------------------
def run_metadata(cfg: DictConfig, stores: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """What produced a run: SAM2 checkpoint hash (or "random"), _C availability and versions (from the
    store manifests), the stores, this process's package versions, and `extra`."""

    first = next(iter(stores.values()))
    return {
        "backbone": first.manifest.get("backbone"),
        "store_versions": first.manifest.get("versions"),
        "stores": {role: str(store.path) for role, store in stores.items()},
        "seed": int(cfg.seed),
        "versions": {
            "python": platform.python_version(),
            **package_versions(("isam2", "torch", "lightning", "sam2", "torchmetrics", "hydra-core")),
        },
        "argv": sys.argv,
        **extra,
    }


def report(text: str) -> None:
    """Print `text` (the results table, a summary) and write it into the task's log file (<run>/<task>.log,
    Hydra's file handler) too, once in each place."""
    print(text, flush=True)
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, text, None, None)
    for logger in (log, logging.getLogger()):
        for handler in logger.handlers:
            if isinstance(handler, logging.FileHandler):
                handler.handle(record)


def coverage_lines(methods: dict[str, dict[str, Any]]) -> str:
    """Masklet coverage of the GT pixels and each method's accuracy inside versus outside the masklets."""

    def pct(v: Any) -> str:
        return "-" if v is None else f"{100 * v:.1f}"

    first = next(iter(methods.values()))
    lines = [
        f"masklets cover {pct(first.get('coverage'))}% of the valid GT pixels; pixel accuracy inside / outside:"
    ]
    lines += [
        f"  {name}: {pct(m.get('acc_inside'))}% / {pct(m.get('acc_outside'))}%" for name, m in methods.items()
    ]
    return "\n".join(lines)


def flat_metrics(prefix: str, results: Mapping[str, Any]) -> dict[str, float | None]:
    """`{prefix/miou: ..., ...}`: the table's columns of a metrics dict, as a pipeline's `metrics`."""
    return {f"{prefix}/{k}": results.get(k) for k in TABLE_KEYS}


def optimized_value(cfg: DictConfig, result: Mapping[str, Any]) -> float | None:
    """The value of `cfg.optimized_metric` among a pipeline's `result["metrics"]` (what main returns to Hydra,
    e.g. to the Optuna sweeper); None when the key is null."""
    name = cfg.get("optimized_metric")
    if name is None:
        return None
    metrics = result.get("metrics") or {}
    if name not in metrics:
        raise ConfigError(
            f"optimized_metric={name} is not a metric of this task; one of: {', '.join(metrics)}"
        )
    value = metrics[name]
    return None if value is None else float(value)


# ---- speed ------------------------------------------------------------------------------------------------
class Stopwatch:
    """Wall seconds of a `with` block (`seconds`)."""

    def __enter__(self) -> Stopwatch:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def speed_record(frames: int, seconds: float, masklets: int, measured: str) -> SpeedRecord:
    """metrics.json "speed": frames per second over `measured` (what the clock covered) and masklets per frame
    of the store the frames came from."""
    return {
        "fps": frames / seconds if seconds > 0 else None,
        "frames": int(frames),
        "seconds": float(seconds),
        "masklets_per_frame": masklets / frames if frames else None,
        "measured": measured,
    }


def speed_line(speed: Mapping[str, Any]) -> str:
    fps = "-" if speed["fps"] is None else f"{speed['fps']:.2f}"
    per_frame = "-" if speed["masklets_per_frame"] is None else f"{speed['masklets_per_frame']:.1f}"
    return (
        f"speed: {fps} frames/s ({speed['frames']} frames in {speed['seconds']:.1f} s, {speed['measured']}); "
        f"{per_frame} masklets/frame"
    )


# ---- the test stage of train and evaluate -----------------------------------------------------------------
def test_and_report(
    cfg: DictConfig,
    trainer: Any,
    model: Any,
    datamodule: Any,
    stores: dict[str, Any],
    class_names: list[str],
    *,
    checkpoint: str | None,
    trained: bool,
    ckpt_path: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    timed: bool = False,
    selection: SelectionRecord | None = None,
    note: str | None = None,
    feature_mismatch: list[str] | None = None,
) -> TestResults:
    """Train's test stage, shared by evaluate: paint and score the test split (DDP-exact; the trainer's
    PredictionWriter writes the PNGs), then on rank zero metrics.json (`TestResults`), metadata.json and the
    paper-style table. `ckpt_path` is the checkpoint Lightning restores (None: the model as it is),
    `checkpoint` the one metrics.json names. With `timed`, metrics.json has "speed" over the test loop (store
    building excluded). Returns the metrics.json dict (on every rank)."""
    from isam2.metrics import format_table
    from isam2.metrics.report import paper_columns

    out_dir = Path(cfg.paths.output_dir)
    with known_warnings_silenced(), Stopwatch() as clock:
        trainer.test(model, datamodule=datamodule, ckpt_path=ckpt_path, verbose=False, weights_only=True)
    if checkpoint and Path(checkpoint).resolve().is_relative_to(run := out_dir.resolve()):
        # relative inside the run: two runs of one config write identical metrics.json
        checkpoint = str(Path(checkpoint).resolve().relative_to(run))
    tested = model.test_results
    results: TestResults = {
        **tested,
        "paper": {name: paper_columns(method) for name, method in tested["methods"].items()},
        "checkpoint": checkpoint,
        "trained": trained,
    }
    if selection is not None:
        results["selection"] = selection
    if note:
        results["note"] = note
    if feature_mismatch:
        results["feature_mismatch"] = feature_mismatch
    if timed:
        store = stores["test"]
        frames = sum(store.num_frames(v) for v in store.videos())
        measured = "test loop: head, painting, scoring, PNG writing; store building excluded"
        results["speed"] = speed_record(frames, clock.seconds, len(store), measured)
    if trainer.global_rank == 0:
        from isam2.files import write_json

        write_json(out_dir / "metadata.json", run_metadata(cfg, stores, **(metadata or {})))
        write_json(out_dir / "metrics.json", results)
        lines = [
            format_table(results["methods"], class_names=class_names),
            coverage_lines(results["methods"]),
        ]
        if timed:
            lines.append(speed_line(results["speed"]))
        report("\n".join([*lines, f"run directory: {out_dir}"]))
        from isam2.callbacks.wandb_media import log_run_artifacts

        log_run_artifacts(trainer.loggers, checkpoint and out_dir / checkpoint, out_dir / "metrics.json")
    return results
