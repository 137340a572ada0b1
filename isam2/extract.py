"""`python -m isam2.extract`: build (or reopen) the masklet store of `data.split`, print a summary and its path."""

from __future__ import annotations

from omegaconf import DictConfig

from isam2.cli import hydra_entry


@hydra_entry("extract")
def main(cfg: DictConfig) -> None:
    from pathlib import Path

    from hydra.core.hydra_config import HydraConfig

    from isam2.data.sharding import rank_and_world
    from isam2.files import write_json
    from isam2.masklets.extraction import ensure_store, format_summary, summarize

    store = ensure_store(cfg, cfg.data.split, force=bool(cfg.force), progress=bool(cfg.progress), launch=True)
    if rank_and_world()[0] != 0:
        return
    summary = summarize(store)
    # The run directory keeps what produced the store (backbone metadata, versions, hash) next to Hydra's config.
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    write_json(run_dir / "store_manifest.json", store.manifest)
    write_json(run_dir / "summary.json", {**summary, "store": str(store.path)})
    print(format_summary(summary))
    print(f"store: {store.path}", flush=True)


if __name__ == "__main__":
    main()
