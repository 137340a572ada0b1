"""`python -m isam2.score pred_dir=<dir> data.root=<root> data.split=val`: score prediction PNGs against a split's GT."""

from __future__ import annotations

import sys

from omegaconf import DictConfig

from isam2.cli import hydra_entry
from isam2.errors import ISAM2Error


@hydra_entry("score")
def main(cfg: DictConfig) -> None:
    from isam2.data.sharding import launched_rank
    from isam2.metrics.scoring import score

    try:
        score(cfg)
    except ISAM2Error:
        if launched_rank() != 0:
            sys.exit(2)  # rank 0 meets the same error and reports it once
        raise


if __name__ == "__main__":
    main()
