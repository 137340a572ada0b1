"""`python -m isam2.score [pred_dir=<dir>]`: score prediction PNGs against a split's ground truth."""

from __future__ import annotations

from omegaconf import DictConfig

from isam2.cli import hydra_entry


@hydra_entry("score")
def main(cfg: DictConfig) -> float | None:
    from isam2.pipelines.report import optimized_value
    from isam2.pipelines.score import run

    return optimized_value(cfg, run(cfg))


if __name__ == "__main__":
    main()
