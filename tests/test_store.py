"""MaskletStore: the overlap rule, the on-disk round trip, resume after a kill, and the config-hash refusal."""

from __future__ import annotations

import errno
import json
import os
import pickle
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

import isam2.store.build as store_build
import isam2.store.extraction as extraction
from isam2.data.streams import as_chunks
from isam2.masklets.generator import FrameMasklets
from isam2.masklets.timing import StageClock
from isam2.store.build import ensure_store
from isam2.store.format import ROW_DTYPES, StoreMismatchError
from isam2.store.identity import config_hash, store_folder, store_identity
from isam2.store.reader import MaskletStore
from isam2.store.writer import paint_id_map

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


# ------------------------------------------------------------------------------------- overlap rule


def brute_force_paint(masks: np.ndarray, scores: np.ndarray, first_row: int) -> np.ndarray:
    """Per pixel: among the masks covering it, the one with the largest (score, row) pair."""
    n, h, w = masks.shape
    out = np.full((h, w), -1, np.int64)
    for y in range(h):
        for x in range(w):
            best = None
            for i in range(n):
                if masks[i, y, x] and (best is None or (scores[i], i) >= (scores[best], best)):
                    best = i
            if best is not None:
                out[y, x] = best + first_row
    return out


def test_overlap_rule_by_hand():
    masks = np.zeros((3, 2, 4), bool)
    masks[0, :, 0:3] = True  # score 0.9: wins over mask 1 where they overlap
    masks[1, :, 1:4] = True  # score 0.5
    masks[2, 0, 2:4] = True  # score 0.9 too: tie with mask 0 -> the later row (2) on top
    scores = np.array([0.9, 0.5, 0.9], np.float32)
    expected = np.array([[10, 10, 12, 12], [10, 10, 10, 11]])
    np.testing.assert_array_equal(paint_id_map(masks, scores, first_row=10), expected)
    assert (paint_id_map(np.zeros((0, 2, 4), bool), scores[:0]) == -1).all()


def test_overlap_rule_matches_brute_force():
    rng = np.random.default_rng(1)
    masks = rng.random((7, 6, 8)) < 0.35
    scores = rng.choice(np.array([0.2, 0.5, 0.8], np.float32), size=7)  # many ties
    np.testing.assert_array_equal(paint_id_map(masks, scores, 3), brute_force_paint(masks, scores, 3))


# ----------------------------------------------------------------------------- a fake masklet source


def fake_frame_masklets(frame: np.ndarray, gt: np.ndarray | None) -> FrameMasklets:
    """One masklet per GT class present, plus a left-half masklet overlapping them; features = mean colour."""
    h, w = frame.shape[:2]
    classes = [c for c in np.unique(gt) if c != 255] if gt is not None else []
    masks = [gt == c for c in classes]
    half = np.zeros((h, w), bool)
    half[:, : w // 2] = True
    masks.append(half)
    masks.append(np.zeros((h, w), bool))  # an empty masklet: the store drops it
    masks = np.stack(masks)
    n = len(masks)
    scores = np.linspace(0.9, 0.5, n).astype(np.float32)
    features = np.stack([frame[m].mean(0) if m.any() else np.zeros(3) for m in masks]).astype(np.float32)
    return FrameMasklets(
        masks=torch.from_numpy(masks),
        scores=torch.from_numpy(scores),
        tracks=torch.arange(n),
        features=torch.from_numpy(features),
    )


class FakeSource:
    """A masklet source as the store sees one: a video arrives as chunks of `frames_per_batch` frames."""

    frames_per_batch = chunk_size = 4

    def __init__(self) -> None:
        self.videos_done = 0
        self.clock = StageClock()

    def video(self, frames, gt=None):
        self.videos_done += 1
        for chunk, chunk_gt in as_chunks(frames, gt):
            for t in range(len(chunk)):
                yield fake_frame_masklets(chunk[t], None if chunk_gt is None else chunk_gt[t])


def fake_build(source: FakeSource):
    """A stand-in for `store_build._build_backbone_and_source`: records a fake backbone, returns `source`."""

    def build(cfg, path):
        store_build.write_json(
            path / "backbone.json", {"metadata": {"checkpoint": "random"}, "feature_dim": 3}
        )
        return None, source

    return build


@pytest.fixture
def fake_source(monkeypatch):
    source = FakeSource()
    monkeypatch.setattr(store_build, "_build_backbone_and_source", fake_build(source))
    return source


def make_cfg(tmp_path: Path, store_dir: str = "stores", *overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(
            "extract",
            overrides=[
                f"paths.root_dir={tmp_path}",
                f"paths.store_dir={tmp_path / store_dir}",
                "data.generate.num_train=1",
                "data.generate.num_val=3",
                "data.generate.num_test=1",
                "data.generate.height=24",
                "data.generate.width=32",
                "data.generate.min_frames=3",
                "data.generate.max_frames=5",
                "masklets=gt",
                *overrides,
            ],
        )


def assert_same_store(a: MaskletStore, b: MaskletStore) -> None:
    assert a.videos() == b.videos() and len(a) == len(b)
    for key in ROW_DTYPES:
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    for vid in a.videos():
        np.testing.assert_array_equal(a.id_maps(vid), b.id_maps(vid))


# ----------------------------------------------------------------------------------------- the store


def test_store_round_trip(tmp_path, fake_source):
    cfg = make_cfg(tmp_path)
    store = ensure_store(cfg, "val")
    from isam2.data import open_split

    dataset = open_split(cfg.data, "val")
    assert store.videos() == [v.id for v in dataset.videos]
    assert store.path == store_folder(cfg.paths.store_dir, store_identity(cfg, "val"))
    assert store.dim == 3 and store.features.shape == (len(store), 3)
    assert isinstance(store.features, np.memmap)
    for key, dtype in ROW_DTYPES.items():
        assert getattr(store, key).dtype == dtype
    assert (store.area > 0).all()  # the empty masklet was dropped
    for vi, video in enumerate(dataset.videos):
        rows = store.rows(video.id)
        assert (store.video[rows] == vi).all()
        assert store.num_frames(video.id) == len(video) and store.frame_size(video.id) == video.size
        frames, gts = video.load_frames(), video.load_masks()
        assert np.all(np.diff(store.frame[rows]) >= 0)
        for t in range(len(video)):
            fm = fake_frame_masklets(frames[t], gts[t])
            keep = fm.masks.any(axis=(1, 2))
            frame_rows = np.nonzero(store.frame[rows] == t)[0] + rows.start
            assert len(frame_rows) == keep.sum()
            # Independent expectations: areas, features, and the id map painted by brute force.
            np.testing.assert_array_equal(store.area[frame_rows], fm.masks[keep].sum(axis=(1, 2)))
            np.testing.assert_allclose(store.features[frame_rows], fm.features[keep], rtol=1e-3, atol=1e-2)
            expected_map = brute_force_paint(fm.masks[keep], fm.scores[keep], int(frame_rows[0]))
            np.testing.assert_array_equal(store.id_map(video.id, t), expected_map)
            # Each class masklet is pure; the left-half one has the majority class of that half.
            n_class = keep.sum() - 1
            assert (store.purity[frame_rows[:n_class]] == 1).all()
            left = gts[t][:, : gts[t].shape[1] // 2]
            counts = np.bincount(left[left != 255], minlength=255)
            assert store.label[frame_rows[-1]] == counts.argmax()
            assert store.valid[frame_rows[-1]] == counts.sum()
        np.testing.assert_array_equal(store.id_maps(video.id)[1], store.id_map(video.id, 1))
    # Pickling reopens by path rather than copying the arrays.
    assert len(pickle.dumps(store)) < 1000
    assert_same_store(pickle.loads(pickle.dumps(store)), store)
    # A second call opens the finished store without extracting again.
    before = fake_source.videos_done
    ensure_store(cfg, "val")
    assert fake_source.videos_done == before


def test_resume_after_a_kill_equals_an_uninterrupted_build(tmp_path, fake_source, monkeypatch):
    whole = ensure_store(make_cfg(tmp_path, "whole"), "val")
    cfg = make_cfg(tmp_path, "killed")
    real_write = extraction.write_video_shard
    calls = []

    def killed_during_second_shard(path, video_id, shard):
        calls.append(video_id)
        if len(calls) == 2:
            (path / "videos" / f".{video_id}.npz.tmp999").write_bytes(b"half a shard")
            raise KeyboardInterrupt
        real_write(path, video_id, shard)

    monkeypatch.setattr(extraction, "write_video_shard", killed_during_second_shard)
    with pytest.raises(KeyboardInterrupt):
        ensure_store(cfg, "val")
    path = store_folder(cfg.paths.store_dir, store_identity(cfg, "val"))
    assert not (path / "manifest.json").exists()
    assert store_build.done_videos(path) == {calls[0]}
    monkeypatch.setattr(extraction, "write_video_shard", real_write)
    before = fake_source.videos_done
    resumed = ensure_store(cfg, "val")
    assert fake_source.videos_done - before == len(whole.videos()) - 1  # the finished video is not redone
    assert_same_store(resumed, whole)
    assert not list(path.rglob(".*.tmp*")) and not (path / "videos").exists()


def test_a_store_from_another_config_is_refused_then_rebuilt_with_force(tmp_path, fake_source):
    cfg_a = make_cfg(tmp_path)
    cfg_b = make_cfg(tmp_path, "stores", "masklets.min_area=5")
    hash_a = config_hash(store_identity(cfg_a, "val"))
    hash_b = config_hash(store_identity(cfg_b, "val"))
    assert hash_a != hash_b
    store_a = ensure_store(cfg_a, "val")
    # A folder copied/renamed under the other config's name must not be trusted.
    folder_b = store_folder(cfg_b.paths.store_dir, store_identity(cfg_b, "val"))
    shutil.copytree(store_a.path, folder_b)
    with pytest.raises(StoreMismatchError) as err:
        ensure_store(cfg_b, "val")
    message = str(err.value)
    assert hash_a in message and hash_b in message and str(folder_b) in message
    with pytest.raises(StoreMismatchError):
        MaskletStore(folder_b, expected_hash=hash_b)
    rebuilt = ensure_store(cfg_b, "val", force=True)
    assert rebuilt.manifest["config_hash"] == hash_b and rebuilt.path == folder_b
    assert_same_store(rebuilt, store_a)  # the fake source ignores min_area, so the content is the same


def test_missing_store_and_unknown_video_raise(tmp_path, fake_source):
    from isam2.errors import ISAM2Error

    with pytest.raises(ISAM2Error, match="manifest.json missing"):
        MaskletStore(tmp_path / "nowhere")
    store = ensure_store(make_cfg(tmp_path), "val")
    with pytest.raises(ISAM2Error, match="not in the masklet store"):
        store.rows("no_such_video")
    with pytest.raises(ISAM2Error, match="out of range"):
        store.id_map(store.videos()[0], 99)


def test_speed_settings_leave_the_identity_but_stay_in_the_manifest(tmp_path, fake_source):
    base = config_hash(store_identity(make_cfg(tmp_path), "val"))
    speed_only = [
        "masklets.frames_per_batch=2",
        "+masklets.points_per_batch=256",
        "+masklets.objects_per_batch=4",
        "+masklets.offload_state_to_cpu=true",
        "+masklets.amg=sam2",
        "+masklets.propagation=per_object",
        "masklets.window=7",  # the gt source has no keyframes
        "sam2.device=cpu",
        "sam2.tf32=false",
    ]
    for override in speed_only:
        assert config_hash(store_identity(make_cfg(tmp_path, "stores", override), "val")) == base, override
    for override in ("masklets.min_area=5", "sam2.image_size=512", "masklets.pooling.levels=[0,1]"):
        assert config_hash(store_identity(make_cfg(tmp_path, "stores", override), "val")) != base, override
    # with the sam2 source, the window decides the keyframes: it is identity there
    sam2_a = make_cfg(tmp_path, "stores", "masklets=sam2")
    sam2_b = make_cfg(tmp_path, "stores", "masklets=sam2", "masklets.window=7")
    sam2_c = make_cfg(
        tmp_path, "stores", "masklets=sam2", "masklets.propagation=per_object", "masklets.amg=sam2"
    )
    hashes = [config_hash(store_identity(c, "val")) for c in (sam2_a, sam2_b, sam2_c)]
    assert hashes[0] != hashes[1] and hashes[0] == hashes[2]
    store = ensure_store(make_cfg(tmp_path, "stores", "masklets.frames_per_batch=3"), "val")
    assert store.manifest["masklets"]["frames_per_batch"] == 3  # recorded, though not identity


def test_checkpoint_sha256_is_cached_by_path_size_and_mtime(tmp_path, monkeypatch):
    import hashlib
    import os

    from isam2 import files

    monkeypatch.setenv("ISAM2_CACHE_DIR", str(tmp_path / "cache"))
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights v1")
    digest = hashlib.sha256(b"weights v1").hexdigest()
    assert files.cached_sha256(ckpt) == digest
    assert (tmp_path / "cache" / "sha256.json").is_file()
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda p, *a, **k: opened.append(str(p)) or real_open(p, *a, **k))
    assert files.cached_sha256(ckpt) == digest  # from the cache: the file is not read again
    assert str(ckpt) not in opened
    monkeypatch.undo()
    monkeypatch.setenv("ISAM2_CACHE_DIR", str(tmp_path / "cache"))
    ckpt.write_bytes(b"weights v2, longer")  # another size (and mtime): hashed again
    assert files.cached_sha256(ckpt) == hashlib.sha256(b"weights v2, longer").hexdigest()
    st = ckpt.stat()
    ckpt.write_bytes(b"weights v3, longer")  # the same size, another mtime
    os.utime(ckpt, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert files.cached_sha256(ckpt) == hashlib.sha256(b"weights v3, longer").hexdigest()


def test_a_decode_error_in_the_prefetch_thread_stops_with_the_file_named(tmp_path, fake_source):
    from isam2.data import DataError, open_split

    cfg = make_cfg(tmp_path)
    videos = open_split(cfg.data, "val").videos
    broken = videos[2].frames[1]
    broken.write_bytes(broken.read_bytes()[:40])  # truncated JPEG: decoded while video 1 is extracted
    with pytest.raises(DataError, match=str(broken)):
        ensure_store(cfg, "val")
    path = store_folder(cfg.paths.store_dir, store_identity(cfg, "val"))
    assert store_build.done_videos(path) == {videos[0].id, videos[1].id}  # earlier shards were written
    assert not (path / "manifest.json").exists()


@pytest.mark.parametrize("kind", ["enospc", "edquot", "eacces", "erofs"])
def test_a_failed_write_names_the_file_and_keeps_the_earlier_one(tmp_path, monkeypatch, kind):
    from isam2 import files
    from isam2.errors import ISAM2Error
    from tests.reliability.faults import faulty_opener

    target = tmp_path / "out" / "data.json"
    files.write_json(target, {"earlier": True})
    monkeypatch.setattr(files, "_open_for_write", faulty_opener(kind, str(target)))
    with pytest.raises(ISAM2Error) as err, files.atomic_file(target) as f:
        f.write(b"x" * 1000)  # fails partway: 64 bytes reach the temporary file
    assert str(target) in str(err.value)
    assert files.DISK_ERRORS[getattr(errno, kind.upper())] in str(err.value)
    assert json.loads(target.read_text()) == {"earlier": True}
    assert [p.name for p in target.parent.iterdir()] == ["data.json"]  # no temporary file left


@pytest.mark.parametrize("bad_id", ["../../etc/x", "/etc/passwd", "a/b", ".."])
def test_a_manifest_from_elsewhere_cannot_lead_outside_the_store(tmp_path, fake_source, bad_id):
    from isam2.errors import ISAM2Error

    store = ensure_store(make_cfg(tmp_path), "val")
    manifest = json.loads((store.path / "manifest.json").read_text())
    manifest["videos"][0]["id"] = bad_id
    (store.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ISAM2Error) as err:
        MaskletStore(store.path)
    assert str(store.path / "manifest.json") in str(err.value) and repr(bad_id) in str(err.value)


class PoisonedSource(FakeSource):
    """The fake source, with one value of frame 1 of the second video replaced (a feature or a score)."""

    def __init__(self, array: str, value: float) -> None:
        super().__init__()
        self.array, self.value = array, value

    def video(self, frames, gt=None):
        for t, fm in enumerate(super().video(frames, gt)):
            if self.videos_done == 2 and t == 1:
                getattr(fm, self.array)[0] = self.value
            yield fm


@pytest.mark.parametrize(
    "array, value",
    [("features", float("nan")), ("features", float("inf")), ("features", 1e6), ("scores", float("nan"))],
)
def test_extraction_refuses_a_non_finite_row_naming_the_video_and_frame(tmp_path, monkeypatch, array, value):
    from isam2.data import open_split
    from isam2.errors import ISAM2Error

    source = PoisonedSource(array, value)  # 1e6 is finite in fp32 and infinite in the store's fp16
    monkeypatch.setattr(store_build, "_build_backbone_and_source", fake_build(source))
    cfg = make_cfg(tmp_path)
    videos = [v.id for v in open_split(cfg.data, "val").videos]
    with pytest.raises(ISAM2Error, match=rf"video '{videos[1]}' frame 1: masklet \w+ not finite"):
        ensure_store(cfg, "val")
    path = store_folder(cfg.paths.store_dir, store_identity(cfg, "val"))
    assert store_build.done_videos(path) == {videos[0]}  # nothing of the poisoned video was written


def write_two_row_store(path: Path, features: np.ndarray) -> MaskletStore:
    """A one-video, one-frame store of two masklets, written with the store's own writer."""
    from isam2.store.writer import VideoShard, finalize_store, prepare_folder, write_video_shard

    prepare_folder(path, {"toy": "two rows"}, force=True)
    rows = {
        "features": features.astype(np.float16),
        "frame": np.zeros(2, np.int32),
        "track": np.arange(2),
        "area": np.ones(2),
        "score": np.ones(2, np.float32),
        "label": np.zeros(2, np.uint8),
        "purity": np.ones(2, np.float32),
        "valid": np.ones(2),
    }
    write_video_shard(path, "v", VideoShard(rows=rows, id_maps=[np.array([[0, 1]])]))
    finalize_store(path, ["v"], {"config_hash": "toy"}, features.shape[1])
    return MaskletStore(path)


def test_a_store_written_with_a_non_finite_row_is_refused_on_open(tmp_path):
    from isam2.errors import ISAM2Error

    store = write_two_row_store(tmp_path / "finite", np.ones((2, 3)))
    assert store.manifest["videos"][0]["finite"] is True
    with pytest.raises(ISAM2Error, match=r"manifest.json: video 'v' has non-finite"):
        write_two_row_store(tmp_path / "nan", np.array([[1, 2, 3], [4, np.nan, 6]]))


def test_a_non_finite_row_written_into_a_store_afterwards_raises_on_read_naming_the_file(tmp_path):
    from isam2.datamodules.stores import StoreDataModule, VideoBatches
    from isam2.errors import ISAM2Error
    from tests.train_helpers import tiny_dataset, toy_store

    dataset = tiny_dataset(tmp_path / "data", "val")
    store = toy_store(tmp_path / "store", dataset)
    features = np.load(store.path / "features.npy", mmap_mode="r+")
    features[5, 2] = np.nan  # a bad disk, or a hand edit, after the store was finished
    features.flush()
    del features
    store = MaskletStore(store.path)  # opening stays cheap: it does not read the rows
    message = rf"{store.path / 'features.npy'}: row 5 is not finite"
    module = StoreDataModule({"train": store}, {"train": dataset}, device_resident=False)
    with pytest.raises(ISAM2Error, match=message):
        module.training_statistics()
    with pytest.raises(ISAM2Error, match=message):
        next(iter(module.train_dataloader()))
    with pytest.raises(ISAM2Error, match=message):
        VideoBatches(store, dataset)[0]


@pytest.mark.parametrize("shard", ["videos", "idmaps"])
def test_a_shard_failing_its_checksum_is_extracted_again(tmp_path, fake_source, monkeypatch, caplog, shard):
    whole = ensure_store(make_cfg(tmp_path, "whole"), "val")
    cfg = make_cfg(tmp_path, "broken")
    real_write = extraction.write_video_shard

    def stop_before_the_third(path, video_id, shard_):
        if len(store_build.done_videos(path)) == 2:
            raise KeyboardInterrupt
        real_write(path, video_id, shard_)

    monkeypatch.setattr(extraction, "write_video_shard", stop_before_the_third)
    with pytest.raises(KeyboardInterrupt):
        ensure_store(cfg, "val")
    monkeypatch.setattr(extraction, "write_video_shard", real_write)
    path = store_folder(cfg.paths.store_dir, store_identity(cfg, "val"))
    first = whole.videos()[0]
    file = path / shard / f"{first}.npz"
    file.write_bytes(file.read_bytes()[:-10])  # truncated (a crash on a disk that lied, a bad disk)
    before = fake_source.videos_done
    resumed = ensure_store(cfg, "val")
    assert fake_source.videos_done - before == 2  # the truncated video and the one never written
    assert f"video '{first}' is extracted again: {file} does not match its sha256" in caplog.text
    assert_same_store(resumed, whole)


def test_a_lock_of_a_gone_process_is_removed_and_a_live_or_foreign_one_refuses(tmp_path, fake_source, caplog):
    import subprocess
    import sys

    from isam2.errors import ISAM2Error
    from isam2.store.coordination import HOST, LOCK_NAME

    cfg = make_cfg(tmp_path)
    lock = store_folder(cfg.paths.store_dir, store_identity(cfg, "val")) / LOCK_NAME
    lock.parent.mkdir(parents=True)
    for holder, message in (
        ({"host": HOST, "pid": 1, "since": "then"}, f"held by pid 1 on {HOST} since then"),  # alive
        ({"host": "elsewhere", "pid": 1, "since": "then"}, "held by pid 1 on elsewhere since then"),
    ):
        lock.write_text(json.dumps(holder))
        with pytest.raises(ISAM2Error, match=f"{re.escape(str(lock))}, {message}"):
            ensure_store(cfg, "val")
        assert json.loads(lock.read_text()) == holder  # not ours to remove
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    reused = {"host": HOST, "pid": os.getpid(), "start": "0"}  # this pid, but a process started earlier
    for holder in ({"host": HOST, "pid": gone.pid}, reused):
        lock.write_text(json.dumps(holder))
        ensure_store(cfg, "val", force=True)
        assert f"removed the stale lock {lock} of pid {holder['pid']}" in caplog.text
        assert not lock.exists()  # released after the build


def write_heartbeat(path: Path, rank: int, **beat) -> None:
    from isam2.store.coordination import heartbeat_file

    heartbeat_file(path, rank).parent.mkdir(parents=True, exist_ok=True)
    heartbeat_file(path, rank).write_text(json.dumps({"rank": rank, **beat}))


def test_a_waiting_rank_stops_naming_a_failed_silent_or_gone_peer_and_at_its_deadline(tmp_path):
    import subprocess
    import sys

    from isam2.errors import ISAM2Error
    from isam2.store.coordination import HOST, PeerWatch, this_process, wait_until

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()

    def wait(fresh: bool = True, dead_after: float = 3600, wait_seconds: float = 3600) -> None:
        wait_until(lambda: False, PeerWatch(tmp_path, [1], dead_after, fresh), wait_seconds, "the shards")

    write_heartbeat(tmp_path, 1, host=HOST, pid=gone.pid, beat=3)
    with pytest.raises(
        ISAM2Error, match=rf"rank 1 stopped .*its process \(pid {gone.pid} on {HOST}\) is gone"
    ):
        wait()
    write_heartbeat(tmp_path, 1, host="elsewhere", pid=gone.pid, beat=3)  # another host: only silence tells
    with pytest.raises(ISAM2Error, match=r"rank 1 stopped .*rank1.json has not changed for 0.2 s"):
        wait(dead_after=0.2)
    write_heartbeat(tmp_path, 1, host=HOST, pid=gone.pid, beat=3, error="OSError: no more room")
    with pytest.raises(ISAM2Error, match=r"extraction failed on rank 1 .*: OSError: no more room"):
        wait()
    (tmp_path / "ranks" / "rank1.json").unlink()
    with pytest.raises(ISAM2Error, match=r"rank 1 stopped .*it wrote no heartbeat"):
        wait(dead_after=0.2)
    write_heartbeat(tmp_path, 1, **this_process(), beat=0)  # alive: only the deadline ends the wait
    with pytest.raises(
        ISAM2Error, match=r"gave up after waiting 0.2 s for the shards \(store_build.wait_seconds\)"
    ):
        wait(wait_seconds=0.2)
    # Without a process group, a heartbeat may be an earlier build's: its gone process is not trusted ...
    write_heartbeat(tmp_path, 1, host=HOST, pid=gone.pid, beat=3)
    watch = PeerWatch(tmp_path, [1], 3600, fresh=False)
    watch.check()
    write_heartbeat(tmp_path, 1, host=HOST, pid=gone.pid, beat=4)  # ... until it changes in this build
    with pytest.raises(ISAM2Error, match=r"rank 1 stopped .*is gone"):
        watch.check()


def test_a_rank_launched_without_a_group_waits_for_rank_0(tmp_path, fake_source, monkeypatch):
    from isam2.errors import ISAM2Error
    from isam2.store.coordination import HOST

    cfg = make_cfg(
        tmp_path, "stores", "store_build.heartbeat_seconds=0.1", "store_build.dead_after_seconds=0.3"
    )
    path = store_folder(cfg.paths.store_dir, store_identity(cfg, "val"))
    monkeypatch.setenv("RANK", "1")  # e.g. torchrun's second process, before train starts its Trainer
    write_heartbeat(path, 0, host=HOST, pid=os.getpid(), beat=7)  # a rank 0 that stopped beating
    with pytest.raises(
        ISAM2Error, match=r"rank 0 stopped while the masklet store .* has not changed for 0.3 s"
    ):
        ensure_store(cfg, "val")
    assert fake_source.videos_done == 0  # rank 1 never builds on its own
    monkeypatch.setenv("RANK", "0")
    built = ensure_store(cfg, "val")
    monkeypatch.setenv("RANK", "1")
    assert_same_store(ensure_store(cfg, "val"), built)  # a finished store: opened at once


def test_only_the_extract_entry_point_launches_ranks(tmp_path, fake_source, monkeypatch):
    from lightning.fabric import Fabric

    launched = []
    monkeypatch.setattr(Fabric, "launch", lambda self, *a, **k: launched.append(self.world_size))
    cfg = make_cfg(tmp_path, "stores", "trainer.accelerator=cpu", "trainer.devices=2")
    # train, evaluate and refine (store.ensure_store): a missing store is built here, in one process
    store = ensure_store(cfg, "val")
    assert launched == [] and fake_source.videos_done == len(store.videos())
    # python -m isam2.extract (launch=True) launches the ranks cfg.trainer asks for
    store_build.ensure_store(cfg, "val", force=True, launch=True)
    assert launched == [2]


def test_bad_store_build_settings_and_an_unwritable_lock_are_named(tmp_path, monkeypatch):
    from isam2.errors import ConfigError, ISAM2Error
    from isam2.store import coordination

    for bad in ({"lock_wait_seconds": -1}, {"lock_wait": 5}, {"heartbeat_seconds": 400}):
        with pytest.raises(ConfigError, match=r"store_build\.(lock_wait|heartbeat)"):
            coordination.BuildSettings.from_cfg({"store_build": bad})
    real_open = os.open

    def read_only(path, *args, **kwargs):
        if str(path).endswith(coordination.LOCK_NAME):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(coordination.os, "open", read_only)
    with pytest.raises(ISAM2Error, match=r"cannot write .*build.lock: the file system is read-only"):
        coordination.BuildLock(tmp_path / "store").acquire(0)


@pytest.mark.parametrize("damage", ["dim", "num_rows", "videos", "videos[0].stop", "videos[1].id"])
def test_a_manifest_without_a_key_is_named_not_a_key_error(tmp_path, fake_source, damage):
    from isam2.errors import ISAM2Error

    store = ensure_store(make_cfg(tmp_path), "val")
    manifest = json.loads((store.path / "manifest.json").read_text())
    key, _, sub = damage.partition(".")
    if sub:
        del manifest["videos"][int(key[len("videos[") : -1])][sub]
    else:
        del manifest[key]
    (store.path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ISAM2Error, match=rf"manifest.json has no .*'{(sub or key)}'.*force=true"):
        MaskletStore(store.path)


def test_the_summary_of_an_empty_store_prints_no_nan():
    from isam2.store.extraction import format_summary

    empty = {"videos": 2, "frames": 7, "masklets": 0, "masklets_per_frame": 0.0, "coverage": 0.0}
    text = format_summary({**empty, "purity": float("nan")})
    assert "nan" not in text.lower() and "purity: n/a" in text
    assert "purity: 87.5%" in format_summary({**empty, "purity": 0.875})


# ------------------------------------------------------------------------------- several encoders

MODULE_ENCODER = (
    "encoder.module.input_size=[24,32]",
    "encoder.module.module.kernel_size=8",
    "encoder.module.strides=[8]",
    "encoder.module.device=cpu",
)


def test_adding_an_encoder_reuses_the_masklets_and_concatenates_in_order(tmp_path, fake_source):
    from isam2.errors import ISAM2Error
    from isam2.model.module import check_features

    plain = ensure_store(make_cfg(tmp_path), "val")
    assert fake_source.videos_done == 3
    assert set(plain.feature_identity) == {
        "sam2",
        "masklets",
    }  # the default keeps the identity of sam2 stores
    both = ensure_store(make_cfg(tmp_path, "stores", "encoder=[module,sam2]", *MODULE_ENCODER), "val")
    assert fake_source.videos_done == 3  # no masklet source ran again: only the encoder pass
    assert both.path == plain.path and both.dim == 3 + plain.dim and len(both) == len(plain)
    np.testing.assert_array_equal(both.features[:, 3:], plain.features)
    assert [e["name"] for e in both.feature_identity["encoders"]] == ["module", "sam2"]
    swapped = ensure_store(make_cfg(tmp_path, "stores", "encoder=[sam2,module]", *MODULE_ENCODER), "val")
    np.testing.assert_array_equal(swapped.features[:, : plain.dim], plain.features)
    np.testing.assert_array_equal(swapped.features[:, plain.dim :], both.features[:, :3])
    assert pickle.loads(pickle.dumps(swapped)).dim == swapped.dim
    # a head trained on one set of vectors refuses another
    with pytest.raises(ISAM2Error, match="encoders"):
        check_features(both.feature_identity, swapped.feature_identity, "checkpoint x", allow=False)
    with pytest.raises(ISAM2Error, match="encoders"):
        check_features(both.feature_identity, plain.feature_identity, "checkpoint x", allow=False)
