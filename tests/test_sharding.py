"""Whole-video sharding and the "several processes?" reading of a trainer config."""

import pytest
from omegaconf import OmegaConf

from isam2.distributed import asks_for_several_processes, shard_indices


def test_every_video_goes_to_exactly_one_rank_without_padding():
    sizes = [30, 5, 17, 17, 2, 40, 9]
    for world in (1, 2, 3, 8):
        shards = [shard_indices(sizes, r, world) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(len(sizes)))


@pytest.mark.parametrize(
    ("devices", "nodes", "several"),
    [
        (1, 1, False),
        (2, 1, True),
        (-1, 1, True),
        ("1", 1, False),
        ("0,1", 1, True),
        ([0], 1, False),
        ([0, 1], 1, True),
        ("auto", 1, False),
        (1, 2, True),
    ],
)
def test_asks_for_several_processes(devices, nodes, several):
    cfg = OmegaConf.create({"devices": devices, "num_nodes": nodes})  # lists become ListConfig, as from Hydra
    assert asks_for_several_processes(cfg) is several
