"""Whole-video sharding across ranks with no padding and no duplicates, so metrics are exact under DDP."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch.distributed as dist
from torch.utils.data import Sampler


def rank_and_world() -> tuple[int, int]:
    """(global rank, world size) of the running process group, or (0, 1) outside one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


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
