"""Process ranks in one place: who am I, how many are we, which videos are mine, barriers and broadcasts.

torch is imported only where a process group is used, so that logging and the numpy-only store reader can
ask for the rank cheaply (a process that never imported torch.distributed has no process group).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any


def _group() -> Any | None:
    """torch.distributed when a process group is running, else None."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return dist
    return None


def in_process_group() -> bool:
    """Whether a torch.distributed process group is running."""
    return _group() is not None


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size) of the running process group, or (0, 1) outside one."""
    dist = _group()
    if dist is not None:
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def launched_rank() -> int:
    """This process's rank as set by the launcher (Lightning's DDP children, torchrun, SLURM), before any
    process group exists; 0 otherwise."""
    for key in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(key, "0") or "0"
        if value.isdigit() and int(value) != 0:
            return int(value)
    return 0


def current_rank() -> int:
    """The process group's rank when one runs, else the launcher's (0 for a lone process)."""
    dist = _group()
    return dist.get_rank() if dist is not None else launched_rank()


def broadcast_from_zero(value: Any) -> Any:
    """Rank zero's `value` on every rank (the value itself outside a process group)."""
    dist = _group()
    if dist is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier() -> None:
    """Wait for every rank (nothing outside a process group)."""
    dist = _group()
    if dist is not None:
        dist.barrier()


def asks_for_several_processes(trainer_cfg: Mapping[str, Any]) -> bool:
    """Whether a trainer config (`devices`, `num_nodes`) asks for more than one process: several nodes,
    devices > 1, -1 (all), or a list / comma string of several device ids."""
    if int(trainer_cfg.get("num_nodes", 1) or 1) > 1:
        return True
    devices = trainer_cfg.get("devices", 1)
    if isinstance(devices, Sequence) and not isinstance(devices, str):
        return len(devices) > 1
    text = str(devices).strip()
    if "," in text:
        return len([d for d in text.split(",") if d.strip()]) > 1
    return text == "-1" or (text.isdigit() and int(text) > 1)


def launcher_fabric(trainer_cfg: Mapping[str, Any]) -> Any | None:
    """A Lightning Fabric that launches the ranks cfg.trainer asks for, or None for one process."""
    if not asks_for_several_processes(trainer_cfg):
        return None
    from lightning.fabric import Fabric

    fabric = Fabric(
        accelerator=trainer_cfg.get("accelerator", "auto"),
        devices=trainer_cfg.get("devices", 1),
        num_nodes=int(trainer_cfg.get("num_nodes", 1) or 1),
        strategy=trainer_cfg.get("strategy", "auto"),
    )
    return fabric if fabric.world_size > 1 else None


def shard_indices(sizes: Sequence[int], rank: int, world: int) -> list[int]:
    """Indices of the items (videos) for `rank`: greedy balance by size, deterministic, every item exactly once.

    Ranks may get different numbers of items; no item is repeated to even them out.
    """
    loads = [0] * world
    owner = [0] * len(sizes)
    for i in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        r = min(range(world), key=lambda r: (loads[r], r))
        owner[i] = r
        loads[r] += sizes[i]
    return [i for i in range(len(sizes)) if owner[i] == rank]


class VideoShardSampler:
    """A DataLoader sampler of this rank's video indices (in order), whole videos per rank, no padding, so
    metrics are exact under DDP. Rank and world are read when iteration starts, so the sampler can be built
    before the process group exists (as Lightning does)."""

    def __init__(self, sizes: Sequence[int]):
        self.sizes = list(sizes)

    def _mine(self) -> list[int]:
        return shard_indices(self.sizes, *rank_and_world())

    def __iter__(self) -> Iterator[int]:
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())
