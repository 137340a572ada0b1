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


def _track_refine_brute_force(base: np.ndarray, id_maps: np.ndarray, row_track: np.ndarray, window: int):
    """Per-track vote by loops: every (track, window) group takes the majority of all its pixels."""
    out = base.copy()
    groups: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    for t in range(base.shape[0]):
        for row in np.unique(id_maps[t]):
            if row >= 0:
                groups.setdefault((int(row_track[row]), t // window), []).append((t, id_maps[t] == row))
    for members in groups.values():
        votes = np.concatenate([base[t][region] for t, region in members])
        votes = votes[votes != 255]
        if votes.size:
            counts = np.bincount(votes, minlength=256)
            for t, region in members:
                out[t][region] = np.flatnonzero(counts == counts.max())[0]
    return out


def _hand_made_track():
    """One object, track 7, rows 0,1,2 in frames 0,1,2 (4 pixels each); track 9 is row 3 in frame 1.
    The base calls the object 1 in frame 0 and 2 in frames 1 and 2."""
    ids = torch.tensor(
        [
            [[0, 0, 0, 0, -1]],
            [[1, 1, 1, 1, 3]],
            [[2, 2, 2, 2, -1]],
        ]
    )
    base = torch.tensor([[[1, 1, 1, 2, 5]], [[2, 2, 2, 1, 6]], [[2, 2, 1, 1, 5]]], dtype=torch.uint8)
    return base, ids, torch.tensor([7, 7, 7, 9])


def test_track_vote_differs_from_frame_vote_where_a_frame_disagrees():
    base, ids, tracks = _hand_made_track()
    frame = refine(base, ids, vote="frame")
    track = refine(base, ids, vote="track", row_track=tracks, window=32)
    # per frame: frame 0 -> 1 (3 of 4), frame 1 -> 2 (3 of 4), frame 2 -> tie 2:2 -> the smaller class 1
    assert frame[:, 0, :4].tolist() == [[1] * 4, [2] * 4, [1] * 4]
    # per track: class 1 has 3+1+2 = 6 votes, class 2 has 1+3+2 = 6: a tie -> 1 in every frame
    assert track[:, 0, :4].tolist() == [[1] * 4, [1] * 4, [1] * 4]
    assert track[:, 0, 4].tolist() == [5, 6, 5]  # uncovered keep the base; the one-row track 9 votes alone
    for vote, got in (("frame", frame), ("track", track)):
        want = (
            _refine_brute_force(base.numpy(), ids.numpy())
            if vote == "frame"
            else _track_refine_brute_force(base.numpy(), ids.numpy(), tracks.numpy(), 32)
        )
        np.testing.assert_array_equal(got.numpy(), want)


def test_track_vote_equals_frame_vote_for_one_frame_windows_and_one_row_tracks():
    base, ids, tracks = _hand_made_track()
    frame = refine(base, ids)
    assert torch.equal(refine(base, ids, vote="track", row_track=tracks, window=1), frame)
    assert torch.equal(refine(base, ids, vote="track", row_track=torch.arange(4), window=32), frame)


def test_track_vote_matches_brute_force_on_random_tracks():
    rng = np.random.default_rng(5)
    for window in (1, 2, 3):
        t, h, w = 5, 6, 7
        id_maps = rng.integers(-1, 4, size=(t, h, w))
        id_maps += (id_maps >= 0) * 4 * np.arange(t)[:, None, None]  # 4 rows per frame
        row_track = rng.integers(0, 3, size=4 * t)
        base = rng.choice([0, 1, 3, 255], size=(t, h, w)).astype(np.uint8)
        got = refine(
            torch.from_numpy(base), torch.from_numpy(id_maps), "track", torch.from_numpy(row_track), window
        )
        np.testing.assert_array_equal(
            got.numpy(), _track_refine_brute_force(base, id_maps, row_track, window)
        )


def test_refine_video_reads_a_stores_id_maps_and_tracks(tmp_path):
    """A toy store's second video (rows not starting at 0) refined by both votes equals the brute force."""
    from isam2.data.synthetic import noisy_video
    from isam2.segment.refine import refine_video
    from tests.train_helpers import tiny_dataset, toy_store

    dataset = tiny_dataset(tmp_path / "data", "val")
    store = toy_store(tmp_path / "store", dataset)
    video = dataset.videos[1]
    rows = store.rows(video.id)
    assert rows.start > 0
    base = noisy_video(video.load_masks(), np.random.default_rng(0), np.arange(1, 11, dtype=np.uint8))
    ids = store.id_maps(video.id)
    for vote in ("frame", "track"):
        got = refine_video(torch.from_numpy(base), store, video.id, vote, window=2).numpy()
        if vote == "frame":
            want = _refine_brute_force(base, ids)
        else:
            want = _track_refine_brute_force(base, ids, np.asarray(store.track), 2)
        np.testing.assert_array_equal(got, want)
