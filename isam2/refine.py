"""`python -m isam2.refine`: the SAM2 refiner (Eq. 1-2) over a folder of base predictions, scored before and after."""

from __future__ import annotations

from omegaconf import DictConfig

from isam2.cli import hydra_entry


@hydra_entry("refine")
def main(cfg: DictConfig) -> float | None:
    from isam2.pipelines.refine import run
    from isam2.pipelines.report import optimized_value

    return optimized_value(cfg, run(cfg))


if __name__ == "__main__":
    main()
