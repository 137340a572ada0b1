"""The built-in synthetic set: deterministic, VSPW_480p layout, the promised variety of classes and lengths."""

import hashlib
import json
import shutil

import numpy as np
from PIL import Image

from isam2.data.synthetic import SyntheticConfig, ensure_synthetic, generate

SMALL = SyntheticConfig(
    num_train=3, num_val=2, num_test=1, min_frames=12, max_frames=20, height=48, width=64, seed=3
)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = generate(tmp_path / "a", SMALL)
    b = generate(tmp_path / "b", SMALL)
    c = generate(tmp_path / "c", SyntheticConfig(**{**SMALL.__dict__, "seed": 4}))
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


def test_layout_values_and_variety(tmp_path):
    """Checked with plain file reads, independent of isam2's reader."""
    root = generate(
        tmp_path / "syn",
        SyntheticConfig(
            num_train=6, num_val=2, num_test=2, min_frames=14, max_frames=24, height=48, width=64, seed=0
        ),
    )
    lengths, values = [], set()
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        ids = (root / f"{split}.txt").read_text().split()
        assert len(ids) == n
        for vid in ids:
            jpgs = sorted(p.stem for p in (root / "data" / vid / "origin").glob("*.jpg"))
            pngs = sorted(p.stem for p in (root / "data" / vid / "mask").glob("*.png"))
            assert jpgs == pngs and jpgs
            lengths.append(len(jpgs))
            for stem in jpgs:
                frame = np.asarray(Image.open(root / "data" / vid / "origin" / f"{stem}.jpg"))
                mask = np.asarray(Image.open(root / "data" / vid / "mask" / f"{stem}.png"))
                assert frame.shape == (48, 64, 3) and mask.shape == (48, 64) and mask.dtype == np.uint8
                values |= set(np.unique(mask).tolist())
    assert values <= set(range(125)) | {255}
    assert 0 in values and 255 in values  # "others" and void are both present
    assert len(values - {0, 255}) >= 8  # at least 8 real classes
    assert len(set(lengths)) > 1 and max(lengths) > 16
    names = json.loads((root / "label_num_dic_final.json").read_text())
    assert names["others"] == 0 and len(names) >= 9


def test_ensure_generates_once_and_refuses_foreign_folder(tmp_path):
    root = ensure_synthetic(tmp_path / "s", SMALL)
    stamp = (root / "train.txt").stat().st_mtime_ns
    ensure_synthetic(tmp_path / "s", SMALL)
    ensure_synthetic(tmp_path / "s", SyntheticConfig())  # other settings: used as is, never overwritten
    assert (root / "train.txt").stat().st_mtime_ns == stamp
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("user data")
    import pytest

    from isam2.errors import ISAM2Error

    with pytest.raises(ISAM2Error, match="not empty"):
        ensure_synthetic(foreign, SMALL)
    assert (foreign / "keep.txt").read_text() == "user data"


def _hidden_siblings(root):
    return sorted(p.name for p in root.parent.iterdir() if p.name.startswith(f".{root.name}."))


def test_generate_never_deletes_a_folder_it_did_not_make(tmp_path):
    import pytest

    from isam2.errors import ISAM2Error

    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "sub" / "keep.txt").write_text("user data")
    (mine / "label_num_dic_final.json").write_text("{}")
    for folder in (mine, tmp_path / "mine" / "sub" / "keep.txt"):
        before = _digest(mine)
        with pytest.raises(ISAM2Error, match="refusing to") as refused:
            generate(folder, SMALL, force=True)
        assert str(folder) in str(refused.value) and _digest(mine) == before
    assert _hidden_siblings(mine) == []


def test_generate_keeps_its_own_set_and_replaces_it_only_with_force(tmp_path):
    import pytest

    from isam2.data.synthetic import MARKER, synthetic_settings
    from isam2.errors import ISAM2Error

    root = generate(tmp_path / "s", SMALL)
    assert synthetic_settings(root) == SMALL.__dict__
    assert json.loads((root / MARKER).read_text())["made_by"] == "isam2.data.synthetic"
    before, stamp = _digest(root), (root / "train.txt").stat().st_mtime_ns
    generate(root, SMALL)  # the same set: kept as it is
    assert (root / "train.txt").stat().st_mtime_ns == stamp
    other = SyntheticConfig(**{**SMALL.__dict__, "seed": 4})
    with pytest.raises(ISAM2Error, match="force=true"):
        generate(root, other)
    assert _digest(root) == before
    generate(root, other, force=True)
    assert synthetic_settings(root) == other.__dict__
    assert _digest(root) == _digest(generate(tmp_path / "o", other))
    assert _hidden_siblings(root) == []


def test_a_failed_regeneration_keeps_the_earlier_set(tmp_path, monkeypatch):
    import pytest

    from isam2.data import synthetic

    root = generate(tmp_path / "s", SMALL)
    before = _digest(root)
    calls = []

    def failing_video(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_video(*args)

    real_video = synthetic._video
    monkeypatch.setattr(synthetic, "_video", failing_video)
    with pytest.raises(KeyboardInterrupt):
        generate(root, SyntheticConfig(**{**SMALL.__dict__, "seed": 9}), force=True)
    assert _digest(root) == before and _hidden_siblings(root) == []


def test_a_killed_generation_leaves_no_set_at_root(tmp_path):
    """SIGKILL in the middle of a generation (no cleanup runs): nothing at root looks like a set."""
    import subprocess
    import sys

    root = tmp_path / "s"
    code = f"""
import os, signal
from isam2.data import synthetic
real, calls = synthetic._video, []
def dying(*args):
    calls.append(1)
    if len(calls) == 3:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args)
synthetic._video = dying
synthetic.generate({str(root)!r}, synthetic.SyntheticConfig(**{SMALL.__dict__!r}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr
    assert not root.exists()
    assert ensure_synthetic(root, SMALL) == root and (root / "test.txt").is_file()


def test_a_set_made_before_the_marker_is_recognised_by_its_layout(tmp_path):
    """Sets made by earlier versions carry `synthetic.json` (the settings) instead of the marker."""
    import pytest

    from isam2.data.synthetic import MARKER, synthetic_settings
    from isam2.errors import ISAM2Error

    root = generate(tmp_path / "old", SMALL)
    (root / MARKER).unlink()
    (root / "synthetic.json").write_text(json.dumps(SMALL.__dict__, indent=1))
    assert synthetic_settings(root) == SMALL.__dict__
    assert ensure_synthetic(root, SMALL) == root and not (root / MARKER).exists()
    generate(root, SyntheticConfig(**{**SMALL.__dict__, "seed": 4}), force=True)
    assert synthetic_settings(root)["seed"] == 4 and not (root / "synthetic.json").exists()
    # a folder that merely has a synthetic.json of that shape but not this module's layout is not ours
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "synthetic.json").write_text(json.dumps(SMALL.__dict__))
    assert synthetic_settings(foreign) is None
    with pytest.raises(ISAM2Error, match="refusing"):
        generate(foreign, SMALL, force=True)
    assert (foreign / "synthetic.json").is_file()


def _base_maps(root, split):
    """(gt, base) train-id arrays of every video of a split, read with plain file reads."""
    from isam2.data.labels import vspw_to_train

    out = []
    for vid in (root / f"{split}.txt").read_text().split():
        stems = sorted(p.stem for p in (root / "data" / vid / "mask").glob("*.png"))
        gt = np.stack(
            [vspw_to_train(np.asarray(Image.open(root / "data" / vid / "mask" / f"{s}.png"))) for s in stems]
        )
        base = np.stack([np.asarray(Image.open(root / "base_predictions" / vid / f"{s}.png")) for s in stems])
        out.append((gt, base))
    return out


def _miou(pairs):
    p = np.concatenate([b.ravel() for _, b in pairs]).astype(int)
    g = np.concatenate([gt.ravel() for gt, _ in pairs]).astype(int)
    p, g = p[g != 255], g[g != 255]
    return np.mean([np.sum((p == c) & (g == c)) / np.sum((p == c) | (g == c)) for c in np.unique(g)])


def test_base_predictions_cover_every_frame_and_err_like_a_segmentor(tmp_path):
    """Every split, every frame, uint8 train ids, never void; the errors are of the promised kinds: a
    per-class majority vote (the refiner with perfect masklets) gains, some classes are mistaken for their
    fixed partner on whole frames, so a per-frame vote cannot fix everything."""
    from isam2.data.synthetic import confusion_partners

    cfg = SyntheticConfig(
        num_train=4, num_val=4, num_test=4, min_frames=6, max_frames=9, height=48, width=64, seed=1
    )
    root = generate(tmp_path / "syn", cfg)
    pairs = [pair for split in ("train", "val", "test") for pair in _base_maps(root, split)]
    assert len(pairs) == 12
    partners = confusion_partners(cfg.seed)
    whole_frame_confusions = 0
    voted = []
    for gt, base in pairs:
        assert base.dtype == np.uint8 and base.shape == gt.shape and 255 not in base
        assert base.max() < 10  # the set's own classes
        refined = base.copy()
        for t in range(len(gt)):
            for c in np.unique(gt[t][gt[t] != 255]):
                region = gt[t] == c
                refined[t][region] = np.bincount(base[t][region]).argmax()
                whole_frame_confusions += bool(np.all(base[t][region] == partners[c]))
        voted.append((gt, refined))
    assert 0.3 < _miou(pairs) < 0.95
    assert _miou(voted) > _miou(pairs) + 0.05
    assert whole_frame_confusions > 0


def test_base_predictions_are_rebuilt_when_missing_or_stale(tmp_path):
    root = ensure_synthetic(tmp_path / "s", SMALL)
    before = _digest(root)
    shutil.rmtree(root / "base_predictions")  # a set made before base predictions existed
    ensure_synthetic(root, SMALL)
    assert _digest(root) == before
    stamp = root / "base_predictions" / ".isam2-base.json"
    stamp.write_text(json.dumps({"noise": -1, "seed": SMALL.seed}))  # written by an older noise model
    ensure_synthetic(root, SMALL)
    assert _digest(root) == before
    assert not [p for p in root.iterdir() if p.name.startswith(".base_predictions")]  # no temporary left


def test_a_set_with_an_empty_split_gets_base_predictions_for_the_others(tmp_path):
    from isam2.data.synthetic import SyntheticConfig, generate

    cfg = SyntheticConfig(num_train=1, num_val=0, num_test=1, min_frames=2, max_frames=2, height=24, width=32)
    root = generate(tmp_path / "set", cfg)
    videos = [p.name for p in (root / "base_predictions").iterdir() if p.is_dir()]
    assert sorted(videos) == sorted(
        (root / "train.txt").read_text().split() + (root / "test.txt").read_text().split()
    )
