"""VideoSegmentationMetrics: the numpy reference, sharded states, dtypes, devices, window-by-window streaming."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from isam2.errors import ISAM2Error
from isam2.metrics import VideoSegmentationMetrics, format_table

KEYS = ("miou", "fwiou", "mbiou", "mvc8", "mvc16")


def load_baseline():
    """The benchmark's plain-numpy implementation of docs/metrics.md (official loops), as the reference."""
    spec = importlib.util.spec_from_file_location(
        "bench_score", Path(__file__).parents[1] / "benchmarks" / "score.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def random_videos(seed=0, lengths=(5, 12, 17, 21), size=(10, 13), c=124):
    rng = np.random.default_rng(seed)
    videos = []
    for t in lengths:
        base = rng.integers(0, 5, (1, size[0] // 2 + 1, size[1] // 2 + 1))
        gt = np.repeat(np.repeat(base, 2, 1), 2, 2)[:, : size[0], : size[1]].repeat(t, 0).astype(np.uint8)
        gt[rng.random(gt.shape) < 0.02] = 255
        gt[rng.random(gt.shape) < 0.02] = 3
        pred = gt.copy()
        noise = rng.random(gt.shape)
        pred[noise < 0.05] = rng.integers(0, 6, (noise < 0.05).sum())
        pred[noise > 0.98] = 255
        pred[(noise > 0.97) & (noise <= 0.98)] = 200  # out of range
        videos.append((pred, gt))
    return videos


def assert_close(out, ref, tol=1e-12):
    for k in KEYS:
        assert (out[k] is None) == (ref[k] is None), k
        if ref[k] is not None:
            assert out[k] == pytest.approx(ref[k], abs=tol), k
    assert [v is None for v in out["per_class_iou"]] == [v is None for v in ref["per_class_iou"]]
    assert np.allclose(
        [v or 0 for v in out["per_class_iou"]], [v or 0 for v in ref["per_class_iou"]], atol=tol
    )


@pytest.mark.parametrize(("classes", "protocol"), [("gt", "cffm"), ("union", "vspw"), ("gt", "paper")])
def test_matches_numpy_reference(classes, protocol):
    videos = random_videos()
    m = VideoSegmentationMetrics(miou_classes=classes, vc_protocol=protocol)
    for p, g in videos:
        m.update(p, g)
    out = m.compute()
    assert_close(out, load_baseline().reference_metrics(videos, 124, classes, protocol))
    assert out["num_frames"] == sum(len(g) for _, g in videos) and out["num_videos"] == 4
    assert out["num_invalid_pred"] == sum(int((p == 200).sum()) for p, _ in videos)
    assert out["protocol"] == {
        "miou_classes": classes,
        "vc_protocol": protocol,
        "vc_lengths": [8, 16],
        "boundary_width": 5,
    }


def test_sharded_states_sum_to_the_single_process_result():
    videos = random_videos(seed=1)
    whole, left, right = (VideoSegmentationMetrics() for _ in range(3))
    for i, (p, g) in enumerate(videos):
        whole.update(p, g)
        (left if i % 2 else right).update(p, g)
    left.merge_state(right)  # what the DDP sum-reduction does
    a, b = whole.compute(), left.compute()
    for k in KEYS:
        assert a[k] == pytest.approx(b[k], abs=1e-12)


def test_integer_dtypes_give_the_same_numbers():
    videos = random_videos(seed=2, lengths=(18,))
    results = []
    for dtype in (np.uint8, np.int32, np.int64, np.uint16):
        m = VideoSegmentationMetrics()
        m.update(videos[0][0].astype(dtype), torch.from_numpy(videos[0][1].astype(dtype)))
        results.append(m.compute())
    assert all(r == results[0] for r in results[1:])


def test_reset_clears_state():
    m = VideoSegmentationMetrics()
    p, g = random_videos(lengths=(17,))[0]
    m.update(p, g)
    m.reset()
    out = m.compute()
    assert out["num_frames"] == 0 and all(out[k] is None for k in KEYS)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu():
    videos = random_videos(seed=4)
    cpu, gpu = VideoSegmentationMetrics(), VideoSegmentationMetrics().to("cuda")
    for p, g in videos:
        cpu.update(p, g)
        gpu.update(torch.from_numpy(p).cuda(), torch.from_numpy(g).cuda())
    a, b = cpu.compute(), gpu.compute()
    for k in KEYS:
        assert a[k] == pytest.approx(b[k], abs=1e-12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_streamed_video_equals_the_whole_video():
    rng = np.random.default_rng(12)
    whole, streamed = VideoSegmentationMetrics().to("cuda"), VideoSegmentationMetrics().to("cuda")
    for p, g in random_videos(seed=13, lengths=(17, 40), size=(12, 16)):
        whole.update(p, g)
        stream(streamed, torch.from_numpy(p).cuda(), torch.from_numpy(g).cuda(), None, rng)
    assert streamed.compute() == whole.compute()


def test_format_table_percent_one_decimal():
    row = {
        "miou": 0.41234,
        "fwiou": 0.5,
        "mbiou": None,
        "mvc8": 0.9,
        "mvc16": 0.87654,
        "per_class_iou": [0.5, None],
    }
    text = format_table({"ours": row}, ["wall", "sky"])
    lines = text.splitlines()
    assert lines[0].split() == ["Method", "mIoU", "WIoU", "mBIoU", "mVC8", "mVC16"]
    assert lines[2].split() == ["ours", "41.2", "50.0", "-", "90.0", "87.7"]
    assert "0 wall" in text and "sky" not in text  # classes without any IoU are left out


def chunk_slices(num_frames, size, rng):
    """Consecutive slices covering the frames: all of `size` frames (the last shorter), or of random sizes."""
    out, start = [], 0
    while start < num_frames:
        step = size if size is not None else int(rng.integers(1, 8))
        out.append(slice(start, min(start + step, num_frames)))
        start += step
    return out


CHUNK_SIZES = (1, 3, 7, None, 1000)  # None: random sizes 1..7; 1000: the whole video in one chunk


def stream(metric, pred, gt, size, rng):
    """One video into `metric` window by window (chunk_slices sizes); single frames go in as [H, W]."""
    metric.begin_video()
    for s in chunk_slices(len(gt), size, rng):
        if s.stop - s.start == 1:
            metric.update_frames(pred[s.start], gt[s.start])
        else:
            metric.update_frames(pred[s], gt[s])
    metric.end_video()


@pytest.mark.parametrize("protocol", ["cffm", "vspw", "paper"])
@pytest.mark.parametrize("lengths", [(8, 16), (2, 3)])
def test_streamed_video_equals_the_whole_video_exactly(protocol, lengths):
    rng = np.random.default_rng(9)
    for pred, gt in random_videos(seed=5, lengths=(1, 9, 16, 17, 40), size=(12, 16)):
        whole = VideoSegmentationMetrics(vc_protocol=protocol, vc_lengths=lengths)
        whole.update(pred, gt)
        ref = whole.compute()
        for size in CHUNK_SIZES:
            m = VideoSegmentationMetrics(vc_protocol=protocol, vc_lengths=lengths)
            stream(m, pred, gt, size, rng)
            assert m.compute() == ref, (len(gt), size)  # every key, floats compared exactly
        if len(gt) == 40:
            assert all(ref[k] is not None for k in ("miou", "mbiou", f"mvc{lengths[0]}", f"mvc{lengths[1]}"))


def test_videos_streamed_one_after_another_equal_whole_updates():
    rng = np.random.default_rng(10)
    videos = random_videos(seed=11, lengths=(17, 23, 5), size=(12, 16))
    whole, streamed = VideoSegmentationMetrics(), VideoSegmentationMetrics()
    for i, (p, g) in enumerate(videos):
        whole.update(p, g)
        stream(streamed, torch.from_numpy(p), g, None, rng)
        assert streamed.compute() == whole.compute()  # compute() between videos: no stale cache
        assert streamed.update_count == whole.update_count == i + 1
    assert streamed.compute()["num_videos"] == 3


def test_streaming_misuse_raises_a_clear_error():
    p, g = random_videos(lengths=(4,), size=(12, 16))[0]
    m = VideoSegmentationMetrics()
    with pytest.raises(ISAM2Error, match="begin_video"):
        m.update_frames(p, g)
    with pytest.raises(ISAM2Error, match="begin_video"):
        m.end_video()
    m.update(p, g)
    m.compute()  # cached: an open video must still be refused below
    m.begin_video()
    m.update_frames(p[:2], g[:2])
    with pytest.raises(ISAM2Error, match="end_video"):
        m.compute()
    with pytest.raises(ISAM2Error, match="end_video"):
        m.begin_video()
    with pytest.raises(ISAM2Error, match="end_video"):
        m.update(p, g)  # a whole video while one is open
    with pytest.raises(ValueError, match="shape"):
        m.update_frames(p[2:, :6], g[2:, :6])  # refused before anything is counted
    m.update_frames(p[2:], g[2:])  # the open video survived the refusals
    m.end_video()
    twice = VideoSegmentationMetrics()
    twice.update(p, g)
    twice.update(p, g)
    assert m.compute() == twice.compute()
    m.begin_video()
    with pytest.raises(ISAM2Error, match="no frames"):
        m.end_video()
    m.begin_video()  # the empty video was closed
    m.update_frames(p, g)
    m.reset()  # clears the open video too
    with pytest.raises(ISAM2Error, match="begin_video"):
        m.update_frames(p, g)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert m.compute()["num_videos"] == 0
    with pytest.raises(ValueError, match="differs"):
        m.update(p, g[:, :5])  # a refused whole video leaves none open
    m.update(p, g)
    assert m.compute()["num_videos"] == 1


def test_compute_matches_the_metrics_json_schema_and_the_checker_catches_drift():
    from isam2.metrics.results import MethodScores, schema_problems

    metrics = VideoSegmentationMetrics(num_classes=124, vc_lengths=(8, 16, 32))
    for pred, gt in random_videos(lengths=(5, 40)):
        metrics.update(pred, gt)
    scores = metrics.compute()
    assert schema_problems(scores, MethodScores) == []  # mvc32 too: any configured length is declared
    assert schema_problems({k: v for k, v in scores.items() if k != "miou"}, MethodScores) == [
        "missing key 'miou'"
    ]
    assert schema_problems({**scores, "mIoU": 0.5}, MethodScores) == ["undeclared key 'mIoU'"]
