"""Dataset readers on generated data and on hand-made broken trees: one test per bad-input case."""

import shutil

import numpy as np
import pytest
from PIL import Image

from isam2.data import VSPW, DataError, VIPSeg
from isam2.data.synthetic import SyntheticConfig, generate


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory):
    cfg = SyntheticConfig(
        num_train=2, num_val=2, num_test=1, min_frames=10, max_frames=14, height=40, width=56, seed=1
    )
    return generate(tmp_path_factory.mktemp("syn") / "VSPW_480p", cfg)


@pytest.fixture
def tree(synthetic_root, tmp_path):
    """A private copy to break."""
    return shutil.copytree(synthetic_root, tmp_path / "VSPW_480p")


def test_reads_generated_vspw_tree(synthetic_root):
    ds = VSPW(synthetic_root, "val")
    assert [v.id for v in ds] == (synthetic_root / "val.txt").read_text().split()
    v = ds[0]
    assert v.frame_names == sorted(v.frame_names)
    frame, mask = v.load_frame(0), v.load_mask(0)
    assert frame.shape == (40, 56, 3) and frame.dtype == np.uint8
    raw = np.asarray(Image.open(v.masks[0]))
    expected = np.where((raw == 0) | (raw == 255), 255, raw.astype(int) - 1)
    np.testing.assert_array_equal(mask, expected)
    assert ds.class_names[0] == "sky" and len(ds.class_names) == 124
    assert ds.num_frames == sum(len(v) for v in ds)


def test_frames_sort_in_temporal_not_lexical_order(tmp_path):
    root = tmp_path / "VSPW"
    for sub in ("origin", "mask"):
        (root / "data" / "v" / sub).mkdir(parents=True)
    for t in (2, 10, 1):
        Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(root / "data" / "v" / "origin" / f"{t}.jpg")
        Image.fromarray(np.full((4, 4), 3, np.uint8)).save(root / "data" / "v" / "mask" / f"{t}.png")
    (root / "val.txt").write_text("v\n")
    assert VSPW(root, "val")[0].frame_names == ["1", "2", "10"]


def test_missing_split_file(tree):
    with pytest.raises(DataError, match=r"split file not found: .*nosuch\.txt"):
        VSPW(tree, "nosuch")


def test_listed_video_absent(tree):
    (tree / "val.txt").write_text((tree / "val.txt").read_text() + "ghost_video\n")
    with pytest.raises(DataError, match="ghost_video.*missing"):
        VSPW(tree, "val")


def test_video_without_frames(tree):
    vid = (tree / "val.txt").read_text().split()[0]
    for p in (tree / "data" / vid / "origin").iterdir():
        p.unlink()
    with pytest.raises(DataError, match=f"{vid}.*no .jpg frames"):
        VSPW(tree, "val")


def test_frames_and_masks_do_not_pair(tree):
    vid = (tree / "val.txt").read_text().split()[0]
    mask = sorted((tree / "data" / vid / "mask").iterdir())[3]
    mask.rename(mask.with_name("99999999.png"))
    with pytest.raises(DataError, match=rf"do not pair up.*{mask.stem}.*99999999"):
        VSPW(tree, "val")


def test_mask_size_differs_from_frame(tree):
    ds_video = VSPW(tree, "val")[0]
    Image.fromarray(np.zeros((20, 56), np.uint8)).save(ds_video.masks[2])
    with pytest.raises(DataError, match=rf"{ds_video.masks[2].name}.*20x56.*40x56"):
        ds_video.load_mask(2)


def test_mask_value_neither_class_nor_void(tree):
    v = VSPW(tree, "val")[0]
    bad = np.asarray(Image.open(v.masks[1])).copy()
    bad[0, 0] = 200
    Image.fromarray(bad).save(v.masks[1])
    with pytest.raises(DataError, match=rf"{v.masks[1].name}.*200"):
        v.load_mask(1)


def test_truncated_image(tree):
    v = VSPW(tree, "val")[0]
    data = v.frames[1].read_bytes()
    v.frames[1].write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=rf"truncated.*{v.frames[1].name}|{v.frames[1].name}.*truncated"):
        v.load_frame(1)


def test_unreadable_image(tree):
    v = VSPW(tree, "val")[0]
    v.masks[0].write_text("not a png")
    with pytest.raises(DataError, match=v.masks[0].name):
        v.load_mask(0)


def test_missing_root(tmp_path):
    with pytest.raises(DataError, match="dataset root not found"):
        VSPW(tmp_path / "nowhere", "val")


def test_vipseg_layout_and_panoptic_ids(tmp_path):
    root = tmp_path / "VIPSeg"
    (root / "imgs" / "clip").mkdir(parents=True)
    (root / "panomasks" / "clip").mkdir(parents=True)
    pano = np.array([[0, 3], [4502, 124]], np.uint16)
    for name in ("00001", "00002"):
        Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(root / "imgs" / "clip" / f"{name}.jpg")
        Image.fromarray(pano).save(root / "panomasks" / "clip" / f"{name}.png")
    (root / "val.txt").write_text("clip\n")
    v = VIPSeg(root, "val")[0]
    assert len(v) == 2 and v.size == (2, 2)
    np.testing.assert_array_equal(v.load_mask(1), np.array([[255, 2], [44, 123]], np.uint8))


def test_a_wrong_first_frame_is_named_too(tree):
    """The video's size comes from its first frame: when that one is wrong, the message must name it."""
    v = VSPW(tree, "val")[0]
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(v.frames[0])
    video = VSPW(tree, "val")[0]
    with pytest.raises(DataError) as err:
        video.load_frames()
    message = str(err.value)
    assert str(v.frames[0]) in message and str(v.frames[1]) in message and "20x30" in message
