"""`python -m isam2.evaluate ckpt_path=...`: test a trained masklet head exactly as train's test stage does."""

from __future__ import annotations

from omegaconf import DictConfig

from isam2.cli import hydra_entry


@hydra_entry("evaluate")
def main(cfg: DictConfig) -> None:
    from isam2.model.runner import evaluate

    evaluate(cfg)


if __name__ == "__main__":
    main()
