"""The comparison table of a multirun sweep (Tables 4-7): one row per swept value, the paper's five columns.

Registered in a sweep preset's `hydra.callbacks`; at the end of the multirun it reads every job's metrics.json
and `.hydra/overrides.yaml` under the sweep folder and writes `<sweep dir>/comparison.md` and `comparison.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from isam2.errors import ISAM2Error
from isam2.files import atomic_file, write_json
from isam2.logs import get_logger
from isam2.metrics.report import PAPER_COLUMNS, paper_columns
from isam2.runs import read_json, run_methods, run_overrides

log = get_logger(__name__)

# The method names a metrics.json may give the refiner's and the base's results (refine writes both).
REFINED_NAMES = ("SAM2-refiner", "refined")
BASE_NAMES = ("base",)


def _pick(methods: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any] | None:
    return next((methods[n] for n in names if isinstance(methods.get(n), dict)), None)


def _swept_values(job_dir: Path, swept: list[str]) -> dict[str, str]:
    """The job's value of every swept key, from the overrides Hydra recorded for it."""
    values = {}
    for item in run_overrides(job_dir):
        key, _, value = item.partition("=")
        if key.lstrip("+~") in swept:
            values[key.lstrip("+~")] = value
    return values


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """Job folders in job order (Hydra names them by job number)."""
    jobs = [p for p in sweep_dir.iterdir() if p.is_dir() and (p / ".hydra").is_dir()]
    return sorted(jobs, key=lambda p: (not p.name.isdigit(), int(p.name) if p.name.isdigit() else 0, p.name))


def collect(
    sweep_dir: str | Path, swept: list[str], method: tuple[str, ...] = REFINED_NAMES
) -> dict[str, Any]:
    """{"swept": [...], "rows": [{<key>: value, "job": name, "columns": {...} | None}], "base": {...} | None,
    "protocol": "..."}: a job without a readable metrics.json gets columns None (it failed or is running)."""
    sweep_dir = Path(sweep_dir)
    rows, base, protocols = [], None, set()
    for job in _job_dirs(sweep_dir):
        row: dict[str, Any] = {**_swept_values(job, swept), "job": job.name, "columns": None}
        try:
            methods = run_methods(read_json(job / "metrics.json"))
        except ISAM2Error:
            methods = {}
        result = _pick(methods, method)
        if result is not None:
            paper = paper_columns(result)
            row["columns"] = paper["columns"]
            protocols.add(paper["protocol"])
        base_result = _pick(methods, BASE_NAMES)
        if base is None and base_result is not None:
            base = paper_columns(base_result)["columns"]  # the same base predictions in every job
        rows.append(row)
    return {"swept": list(swept), "rows": rows, "base": base, "protocol": "; ".join(sorted(protocols))}


def markdown(table: str, comparison: dict[str, Any]) -> str:
    """The comparison as a Markdown table: swept value(s), then mIoU, WIoU, mBIoU, mVC8, mVC16 in percent."""
    swept, titles = comparison["swept"], [title for title, _ in PAPER_COLUMNS]
    fmt = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [f"# {table}", "", "| " + " | ".join([*swept, *titles]) + " |", "|" + "---|" * (len(swept) + 5)]
    for row in comparison["rows"]:
        cells = [str(row.get(k, "?")) for k in swept]
        columns = row["columns"]
        cells += [fmt(columns[t]) for t in titles] if columns else ["failed"] + [""] * 4
        lines.append("| " + " | ".join(cells) + " |")
    if comparison["base"] is not None:
        lines.append(
            "| "
            + " | ".join(["base", *[""] * (len(swept) - 1), *map(fmt, comparison["base"].values())])
            + " |"
        )
    lines += ["", f"Protocol: {comparison['protocol'] or 'not recorded'}.", ""]
    return "\n".join(lines)


def write_comparison(sweep_dir: str | Path, table: str, swept: list[str]) -> dict[str, Any]:
    """Write `<sweep_dir>/comparison.json` and `comparison.md`; returns the comparison."""
    sweep_dir = Path(sweep_dir)
    comparison = {"table": table, **collect(sweep_dir, swept)}
    write_json(sweep_dir / "comparison.json", comparison)
    with atomic_file(sweep_dir / "comparison.md") as f:
        f.write(markdown(table, comparison).encode())
    return comparison


class PaperComparison(Callback):
    """Hydra callback: at the end of a multirun, the comparison table of its jobs (`write_comparison`)."""

    def __init__(self, table: str) -> None:
        self.table = table

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        from hydra.core.override_parser.overrides_parser import OverridesParser

        params = config.hydra.sweeper.get("params") or {}
        on_command_line = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        swept = list(params) + [
            o.key_or_group for o in on_command_line if o.is_sweep_override() and o.key_or_group not in params
        ]
        comparison = write_comparison(sweep_dir, self.table, swept)
        log.info(f"{self.table}: {len(comparison['rows'])} runs compared in {sweep_dir / 'comparison.md'}")
