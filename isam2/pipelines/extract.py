"""The extract pipeline: build (or reopen) the masklet store of `data.split`, launching its ranks if asked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from isam2.pipelines.report import report


def run(cfg: DictConfig) -> dict[str, Any]:
    """The store of cfg.data.split under paths.store_dir; with cfg.trainer asking for several devices and no
    process group, the ranks are launched here (Lightning Fabric re-runs the command per rank). Rank zero
    writes store_manifest.json and summary.json into the run directory and prints the summary and
    `store: <path>` last. Returns {"metrics": the summary's numbers, "store": path, "run_dir"} (rank zero;
    other ranks: {"metrics": {}, "store": path})."""
    from isam2.distributed import rank_and_world
    from isam2.files import write_json
    from isam2.store.build import ensure_store
    from isam2.store.extraction import format_summary, summarize

    store = ensure_store(cfg, cfg.data.split, force=bool(cfg.force), progress=bool(cfg.progress), launch=True)
    if rank_and_world()[0] != 0:
        return {"metrics": {}, "store": str(store.path)}
    summary = summarize(store)
    # The run directory keeps what produced the store (backbone metadata, versions, hash) next to Hydra's config.
    run_dir = Path(cfg.paths.output_dir)
    write_json(run_dir / "store_manifest.json", store.manifest)
    write_json(run_dir / "summary.json", {**summary, "store": str(store.path)})
    report(f"{format_summary(summary)}\nstore: {store.path}")
    return {"metrics": dict(summary), "store": str(store.path), "run_dir": str(run_dir)}
