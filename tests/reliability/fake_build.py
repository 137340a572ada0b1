"""`python -m tests.reliability.fake_build <tmp> <store_dir> [overrides]`: one process (or rank) building a store with the fake source.

It builds the val store of tests/test_store.py's tiny config (`make_cfg(tmp, store_dir, *overrides)`) with
its fake masklet source (no SAM2), under the fault that the environment describes (tests/reliability/faults.py).
ISAM2_FAKE_FRAME_SECONDS slows the source down (a sleep per frame), so that a kill after a random delay can
land anywhere in the build. With WORLD_SIZE > 1 (and RANK, MASTER_ADDR, MASTER_PORT) it first joins a gloo
process group. Prints `building` when the build starts and `store: <path>` when it is done; an ISAM2Error
prints `error: <message>` and exits 2, as the entry points do.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import isam2.store.build as store_build
from isam2.errors import user_errors_exit
from isam2.logs import console_logging
from tests.reliability.faults import install_from_env
from tests.test_store import FakeSource, fake_build, make_cfg


class SlowSource(FakeSource):
    def __init__(self, seconds_per_frame: float) -> None:
        super().__init__()
        self.seconds_per_frame = seconds_per_frame

    def video(self, frames, gt=None):
        for fm in super().video(frames, gt):
            time.sleep(self.seconds_per_frame)
            yield fm


@user_errors_exit
def main() -> None:
    tmp, store_dir, *overrides = sys.argv[1:]
    install_from_env()
    # as a command line without Hydra: isam2's messages on stderr
    console_logging()
    seconds = float(os.environ.get("ISAM2_FAKE_FRAME_SECONDS", "0"))
    store_build._build_backbone_and_source = fake_build(SlowSource(seconds))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")  # env://: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT
    cfg = make_cfg(Path(tmp), store_dir, *overrides)
    print("building", flush=True)
    store = store_build.ensure_store(cfg, "val", progress=False)
    print(f"store: {store.path}", flush=True)


if __name__ == "__main__":
    main()
