"""`python -m isam2.evaluate ckpt_path=...`: test a trained masklet head exactly as train's test stage does."""

from __future__ import annotations

from omegaconf import DictConfig

from isam2.cli import hydra_entry


@hydra_entry("evaluate")
def main(cfg: DictConfig) -> None:
    from isam2.masklets.runtime import apply_tf32
    from isam2.model.runner import evaluate

    apply_tf32(cfg.get("sam2"))

    evaluate(cfg)


if __name__ == "__main__":
    main()
