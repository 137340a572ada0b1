"""Reading run folders: the newest run or checkpoint, metrics.json, the saved config and overrides."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from isam2.errors import ISAM2Error
from isam2.logs import get_logger

log = get_logger(__name__)

RUNS_ENV = "ISAM2_RUN_DIR"


# ---- run folders -----------------------------------------------------------------------------------------
def newest_run(log_dir: str | os.PathLike = "outputs") -> Path:
    """$ISAM2_RUN_DIR when set, otherwise the newest folder under `log_dir` holding a metrics.json."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV])
    runs = sorted(Path(log_dir).glob("**/metrics.json"), key=lambda p: p.stat().st_mtime)
    runs = [p.parent for p in runs if p.parent.name != "refined"]
    if not runs:
        raise ISAM2Error(
            f"no run with a metrics.json under {log_dir}; run python -m isam2.train or set {RUNS_ENV}"
        )
    return runs[-1]


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ISAM2Error(f"missing file: {path}") from None
    except (OSError, ValueError) as e:
        raise ISAM2Error(f"unreadable JSON {path}: {e}") from None


def run_methods(metrics: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{method name: metrics} of a metrics.json: train/evaluate's `methods`, refine's {base, refined}, or
    score's single method."""
    if isinstance(metrics.get("methods"), Mapping):
        return dict(metrics["methods"])
    nested = {k: v for k, v in metrics.items() if isinstance(v, Mapping) and "miou" in v}
    return nested or {str(metrics.get("method", "predictions")): dict(metrics)}


def run_config(run_dir: str | os.PathLike) -> Any:
    """The run's resolved config as saved by Hydra (`.hydra/config.yaml`), an OmegaConf DictConfig."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise ISAM2Error(f"missing file: {path} (not a Hydra run folder)")
    return OmegaConf.load(path)


def run_overrides(run_dir: str | os.PathLike) -> list[str]:
    """The command-line overrides of the run (`.hydra/overrides.yaml`), [] when absent."""
    from omegaconf import OmegaConf

    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    return [str(o) for o in OmegaConf.load(path)] if path.is_file() else []


def config_value(run_dir: str | os.PathLike, key: str) -> Any:
    """A dotted key of the run: from its overrides when given there (the swept value as typed), otherwise
    from its saved config (interpolations left unresolved when they need Hydra's runtime)."""
    from omegaconf import OmegaConf

    for override in run_overrides(run_dir):
        name, _, value = override.lstrip("+~").partition("=")
        if name == key:
            return _parse_scalar(value)
    value = OmegaConf.select(
        run_config(run_dir), key, throw_on_missing=False, throw_on_resolution_failure=False
    )
    return OmegaConf.to_container(value) if OmegaConf.is_config(value) else value


def _parse_scalar(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def run_folders(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Run folders from run folders and multirun folders (whose numbered job folders hold the runs), sorted."""
    found: list[Path] = []
    for path in map(Path, paths):
        if (path / "metrics.json").is_file():
            found.append(path)
            continue
        jobs = sorted((p.parent for p in path.glob("*/metrics.json")), key=lambda p: (len(p.name), p.name))
        if not jobs:
            raise ISAM2Error(f"{path} holds no metrics.json, nor job folders with one")
        found.extend(jobs)
    return found


def swept_keys(run_dirs: Iterable[str | os.PathLike]) -> list[str]:
    """The override keys whose values differ between the runs (a sweep's swept keys), in first-seen order."""
    per_run = [
        dict(o.lstrip("+~").partition("=")[::2] for o in run_overrides(r)) for r in run_folders(run_dirs)
    ]
    keys = dict.fromkeys(k for overrides in per_run for k in overrides)
    return [k for k in keys if len({overrides.get(k) for overrides in per_run}) > 1]


def newest_train_checkpoint(log_dir: Path) -> Path:
    """The checkpoint that the newest finished train run under `log_dir`/train tested (its metrics.json's
    "checkpoint": the best one by the selection metric), said in one printed line."""
    runs = sorted((log_dir / "train").glob("**/metrics.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for metrics in runs:
        try:
            recorded = json.loads(metrics.read_text()).get("checkpoint")
        except (OSError, ValueError):
            continue
        if recorded and (metrics.parent / recorded).is_file():
            ckpt = metrics.parent / recorded  # absolute `recorded` stays as it is
            log.info(f"ckpt_path not set: using {ckpt}, the checkpoint of the newest train run")
            return ckpt
    raise ISAM2Error(
        f"ckpt_path is not set and no finished train run with a checkpoint is under {log_dir / 'train'} "
        "(paths.log_dir); set ckpt_path=<run>/checkpoints/<best>.ckpt or run python -m isam2.train first"
    )


def package_versions(names: Iterable[str]) -> dict[str, str]:
    """{package: installed version, or "absent"}: what a run or a store records of the code that made it."""
    from importlib import metadata

    out = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out
