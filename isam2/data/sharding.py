"""Whole-video sharding across ranks with no padding and no duplicates, so metrics are exact under DDP."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch.distributed as dist
from torch.utils.data import Sampler


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size) of the running process group, or (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
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


class VideoShardSampler(Sampler[int]):
    """Yields this rank's video indices (in order). Rank and world are read when iteration starts,

    so the sampler can be built before the process group exists (as Lightning does).
    """

    def __init__(self, sizes: Sequence[int]):
        self.sizes = list(sizes)

    def _mine(self) -> list[int]:
        return shard_indices(self.sizes, *rank_and_world())

    def __iter__(self) -> Iterator[int]:
        return iter(self._mine())

    def __len__(self) -> int:
        return len(self._mine())
