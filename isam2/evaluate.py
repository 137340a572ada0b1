"""`python -m isam2.evaluate ckpt_path=...`: test a trained masklet head exactly as train's test stage does."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from isam2.errors import user_errors_exit


@hydra.main(version_base="1.3", config_path="../conf", config_name="evaluate")
@user_errors_exit
def main(cfg: DictConfig) -> None:
    from isam2.masklets.runtime import apply_tf32
    from isam2.model.runner import evaluate

    apply_tf32(cfg.get("sam2"))

    evaluate(cfg)


if __name__ == "__main__":
    main()
