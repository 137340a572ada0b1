"""`python -m isam2.train`: compose the config, fit and test the masklet head, return `optimized_metric`."""

from __future__ import annotations

from omegaconf import DictConfig

from isam2.cli import hydra_entry


@hydra_entry("train")
def main(cfg: DictConfig) -> float | None:
    from isam2.pipelines.report import optimized_value
    from isam2.pipelines.train import run

    return optimized_value(cfg, run(cfg))


if __name__ == "__main__":
    main()
