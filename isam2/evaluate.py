"""`python -m isam2.evaluate [ckpt_path=...]`: test a trained head exactly as train's test stage does."""

from __future__ import annotations

from omegaconf import DictConfig

from isam2.cli import hydra_entry


@hydra_entry("evaluate")
def main(cfg: DictConfig) -> float | None:
    from isam2.pipelines.evaluate import run
    from isam2.pipelines.report import optimized_value

    return optimized_value(cfg, run(cfg))


if __name__ == "__main__":
    main()
