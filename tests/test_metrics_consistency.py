"""mVC_n: hand-counted windows for each protocol, the skip rules, NaN windows, the official loop, streaming."""

import numpy as np
import pytest
import torch

from isam2.metrics import VC_PROTOCOLS, VideoConsistency
from isam2.metrics.consistency import ConsistencyRuns, video_consistency, window_ends
from tests.test_metrics_video import CHUNK_SIZES, chunk_slices, load_baseline, random_videos


def hand_video():
    """3x4 frames, T=4. GT: all 0, but pixel a=(0,0) becomes 1 at t=2. Pred = GT, but b=(2,3) is 5 at t=1 only."""
    gt = np.zeros((4, 3, 4), np.uint8)
    gt[2:, 0, 0] = 1
    pred = gt.copy()
    pred[1, 2, 3] = 5
    return pred, gt


def vc(pred, gt, lengths, protocol):
    m = VideoConsistency(lengths, protocol)
    m.update(pred, gt)
    return m.compute(), m


def test_vspw_windows_by_hand():
    # n=2, windows [0,1] and [1,2] (T-n = 2; the last window [2,3] is not used):
    #   [0,1]: GT consistent everywhere (12), pred too except b -> 11/12
    #   [1,2]: GT consistent except a (11); pred consistent except a and b -> 10/11
    # n=3, window [0,2] only: GT except a (11), both except a and b -> 10/11
    out, m = vc(*hand_video(), (2, 3), "vspw")
    assert out["mvc2"] == pytest.approx((11 / 12 + 10 / 11) / 2)
    assert out["mvc3"] == pytest.approx(10 / 11)
    assert m.vc_count.tolist() == [2, 1]


def test_paper_windows_by_hand():
    # Eq. 4: T-n+1 windows, per-video mean. n=2 adds [2,3] (all consistent: 1); n=3 adds [1,3] (10/11).
    out, m = vc(*hand_video(), (2, 3), "paper")
    assert out["mvc2"] == pytest.approx((11 / 12 + 10 / 11 + 1) / 3)
    assert out["mvc3"] == pytest.approx(10 / 11)
    assert m.vc_count.tolist() == [1, 1]  # one video


def test_cffm_skips_videos_up_to_16_frames_for_every_n():
    out, m = vc(*hand_video(), (2, 3), "cffm")
    assert out == {"mvc2": None, "mvc3": None} and m.vc_count.tolist() == [0, 0]


@pytest.mark.parametrize(
    ("protocol", "frames", "windows8", "windows16"),
    [
        ("cffm", 16, 0, 0),
        ("cffm", 17, 9, 1),
        ("vspw", 8, 0, 0),
        ("vspw", 9, 1, 0),
        ("vspw", 17, 9, 1),
        ("paper", 7, 0, 0),
        ("paper", 8, 1, 0),
        ("paper", 16, 9, 1),
    ],
)
def test_skip_rules_and_window_counts(protocol, frames, windows8, windows16):
    assert (len(window_ends(frames, 8, protocol)), len(window_ends(frames, 16, protocol))) == (
        windows8,
        windows16,
    )
    gt = np.zeros((frames, 3, 4), np.uint8)
    _, m = vc(gt, gt, (8, 16), protocol)
    expect = [min(windows8, 1), min(windows16, 1)] if protocol == "paper" else [windows8, windows16]
    assert m.vc_count.tolist() == expect


def test_windows_with_no_consistent_gt_pixel_are_dropped():
    gt = np.zeros((4, 3, 4), np.uint8)
    gt[1:] = 1  # every pixel changes at t=1: window [0,1] has an empty denominator
    pred = np.zeros_like(gt)
    pred[2, 0, 0] = 9
    out, m = vc(pred, gt, (2,), "vspw")
    assert m.vc_count.tolist() == [1]  # only [1,2] counts
    assert out["mvc2"] == pytest.approx(11 / 12)


def test_void_counts_as_a_label_and_prediction_need_not_match_gt():
    gt = np.full((3, 3, 4), 255, np.uint8)
    pred = np.full((3, 3, 4), 7, np.uint8)  # wrong, but consistent
    out, _ = vc(pred, gt, (2,), "vspw")
    assert out["mvc2"] == 1.0


@pytest.mark.parametrize("protocol", ["cffm", "vspw", "paper"])
def test_matches_the_official_loop(protocol):
    base = load_baseline()
    rng = np.random.default_rng(3)
    videos = []
    for t in (6, 9, 17, 23):
        gt = np.repeat(rng.integers(0, 3, (1, 5, 6)), t, 0).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.03] = 2
        pred = gt.copy()
        pred[rng.random(gt.shape) < 0.05] = 1
        videos.append((pred, gt))
    m = VideoConsistency((8, 16), protocol)
    for p, g in videos:
        m.update(torch.from_numpy(p), torch.from_numpy(g))
    ref = base.reference_metrics(videos, 124, protocol=protocol)
    out = m.compute()
    for n in (8, 16):
        assert (out[f"mvc{n}"] is None) == (ref[f"mvc{n}"] is None)
        if ref[f"mvc{n}"] is not None:
            assert out[f"mvc{n}"] == pytest.approx(ref[f"mvc{n}"], abs=1e-12)


@pytest.mark.parametrize("protocol", VC_PROTOCOLS)
@pytest.mark.parametrize("lengths", [(8, 16), (2, 3)])
def test_streamed_runs_equal_the_whole_video_exactly(protocol, lengths):
    rng = np.random.default_rng(7)
    for pred, gt in random_videos(seed=6, lengths=(1, 5, 16, 17, 40), size=(12, 16)):
        pred, gt = torch.from_numpy(pred), torch.from_numpy(gt)
        whole = video_consistency(pred, gt, lengths, protocol)
        if len(gt) == 40:  # the comparison is not between empty results
            assert (whole[1] > 0).all() and (whole[0] > 0).all()
        for size in CHUNK_SIZES:
            runs = ConsistencyRuns(lengths, protocol)
            for s in chunk_slices(len(gt), size, rng):
                runs.add(pred[s], gt[s])
            assert runs.num_frames == len(gt)
            total, count = runs.finish()
            assert torch.equal(total, whole[0]) and torch.equal(count, whole[1]), (len(gt), size)


def test_frame_counts_do_not_depend_on_later_frames():
    pred, gt = (torch.from_numpy(x) for x in random_videos(seed=8, lengths=(30,), size=(12, 16))[0])
    full = ConsistencyRuns((2, 8), "paper")
    full.add(pred, gt)
    head = ConsistencyRuns((2, 8), "paper")
    head.add(pred[:11], gt[:11])
    assert torch.equal(head.counts(), full.counts()[..., :11])
    assert full.counts().shape == (2, 2, 30)


def test_runs_refuse_frames_of_another_size_and_finish_empty():
    runs = ConsistencyRuns((2,), "vspw")
    total, count = runs.finish()
    assert total.tolist() == [0.0] and count.tolist() == [0]
    runs.add(torch.zeros((2, 3, 4), dtype=torch.uint8), torch.zeros((2, 3, 4), dtype=torch.uint8))
    with pytest.raises(ValueError, match="shape"):
        runs.add(torch.zeros((1, 4, 3), dtype=torch.uint8), torch.zeros((1, 4, 3), dtype=torch.uint8))
    runs.add(torch.zeros((1, 3, 4), dtype=torch.uint8), torch.zeros((1, 3, 4), dtype=torch.uint8))
    assert runs.finish()[0].tolist() == [1.0]  # T-n = 1 window, [0,1], fully consistent
