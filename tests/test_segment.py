"""Compose (painting, base fill-in, track voting) and the Eq. 1-2 refiner against hand-made and brute-force cases."""

import numpy as np
import torch

from isam2.segment.compose import paint, track_vote
from isam2.segment.refine import refine


def test_paint_hand_made_id_map():
    id_maps = torch.tensor([[[0, 0, -1], [2, 1, -1]]])
    row_class = torch.tensor([7, 3, 0])
    expected = torch.tensor([[[7, 7, 255], [0, 3, 255]]], dtype=torch.uint8)
    assert torch.equal(paint(row_class, id_maps), expected)


def test_base_fill_touches_only_uncovered_pixels():
    rng = np.random.default_rng(0)
    id_maps = torch.from_numpy(rng.integers(-1, 5, size=(3, 6, 7)))
    row_class = torch.from_numpy(rng.integers(0, 124, size=5))
    base = torch.from_numpy(rng.integers(0, 256, size=(3, 6, 7)).astype(np.uint8))
    plain, filled = paint(row_class, id_maps), paint(row_class, id_maps, fill=base)
    covered = id_maps >= 0
    assert torch.equal(filled[covered], plain[covered])
    assert torch.equal(filled[~covered], base[~covered])
    assert (plain[~covered] == 255).all()


def test_track_vote_gives_one_class_per_track_and_window():
    rng = np.random.default_rng(1)
    n, c = 40, 6
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(n, c))), dim=1)
    tracks = torch.from_numpy(rng.integers(0, 4, size=n))
    frames = torch.from_numpy(rng.integers(0, 12, size=n))
    voted = track_vote(probs, tracks, frames, window=6)
    for t in range(4):
        for w in range(2):
            sel = (tracks == t) & (frames // 6 == w)
            if sel.any():
                assert len(set(voted[sel].argmax(1).tolist())) == 1
                torch.testing.assert_close(voted[sel][0], probs[sel].mean(0))


def _refine_brute_force(base: np.ndarray, id_maps: np.ndarray) -> np.ndarray:
    out = base.copy()
    for t in range(base.shape[0]):
        for row in np.unique(id_maps[t]):
            if row < 0:
                continue
            region = id_maps[t] == row
            votes = base[t][region]
            votes = votes[votes != 255]
            if votes.size:
                counts = np.bincount(votes, minlength=256)
                out[t][region] = np.flatnonzero(counts == counts.max())[0]
    return out


def test_refine_matches_brute_force_eq_1_2_on_random_masks():
    rng = np.random.default_rng(2)
    for _ in range(5):
        t, h, w = 3, 9, 11
        id_maps = rng.integers(-1, 12, size=(t, h, w))
        id_maps += (id_maps >= 0) * 100 * np.arange(t)[:, None, None]  # rows are per-frame masklets
        base = rng.choice([0, 1, 2, 5, 255], size=(t, h, w)).astype(np.uint8)
        base[0][id_maps[0] == 3] = 255  # a masklet with no votes keeps the base
        got = refine(torch.from_numpy(base), torch.from_numpy(id_maps)).numpy()
        np.testing.assert_array_equal(got, _refine_brute_force(base, id_maps))


def test_refine_hand_made_majority_and_tie():
    base = torch.tensor([[[1, 1, 2, 9], [2, 255, 4, 4]]], dtype=torch.uint8)
    ids = torch.tensor([[[0, 0, 0, -1], [0, 0, 1, 1]]])
    # masklet 0: votes 1,1,2,2 -> tie -> smaller class 1; 255 does not vote; masklet 1: 4
    expected = torch.tensor([[[1, 1, 1, 9], [1, 1, 4, 4]]], dtype=torch.uint8)
    assert torch.equal(refine(base, ids), expected)
