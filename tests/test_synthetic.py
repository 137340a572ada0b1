"""The built-in synthetic set: deterministic, VSPW_480p layout, the promised variety of classes and lengths."""

import hashlib
import json

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
