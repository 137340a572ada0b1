"""`python -m isam2.train`: compose the config, build the stores, fit the masklet head, test, report."""

from __future__ import annotations

from omegaconf import DictConfig

from isam2.cli import hydra_entry


@hydra_entry("train")
def main(cfg: DictConfig) -> None:
    from isam2.model.runner import train

    train(cfg)


if __name__ == "__main__":
    main()
