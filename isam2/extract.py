"""`python -m isam2.extract`: build (or reopen) the masklet store of `data.split`, print a summary and its path."""

from __future__ import annotations

from omegaconf import DictConfig

from isam2.cli import hydra_entry


@hydra_entry("extract")
def main(cfg: DictConfig) -> float | None:
    from isam2.pipelines.extract import run
    from isam2.pipelines.report import optimized_value

    return optimized_value(cfg, run(cfg))


if __name__ == "__main__":
    main()
