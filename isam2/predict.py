"""`python -m isam2.predict`: segment videos (files, frame folders or a split) with a trained head; writes maps."""

from __future__ import annotations

from omegaconf import DictConfig

from isam2.cli import hydra_entry


@hydra_entry("predict")
def main(cfg: DictConfig) -> float | None:
    from isam2.pipelines.predict import run
    from isam2.pipelines.report import optimized_value

    return optimized_value(cfg, run(cfg))


if __name__ == "__main__":
    main()
