"""Dataset readers on generated data and on hand-made broken trees: one test per bad-input case; VIPSeg in both
the layouts it ships in, built from the synthetic set (tests/vipseg_layouts.py)."""

import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from isam2.data import VSPW, DataError, VIPSeg
from isam2.data.synthetic import SyntheticConfig, generate
from tests.vipseg_layouts import make_vipseg, nearest


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


# ------------------------------------------------------------------ VIPSeg: the two layouts it ships in


@pytest.fixture(scope="module")
def vipseg(synthetic_root, tmp_path_factory):
    """(original VIPSeg root, its VIPSeg_720P root), read-only: copy before breaking."""
    return make_vipseg(synthetic_root, tmp_path_factory.mktemp("vipseg"))


@pytest.fixture
def vipseg_copy(vipseg, tmp_path):
    original = shutil.copytree(vipseg[0], tmp_path / "VIPSeg")
    return original, original / "VIPSeg_720P"


def test_vipseg_original_layout_decodes_panoptic_things(synthetic_root, vipseg):
    ds = VIPSeg(vipseg[0], "val")
    assert ds.layout == "VIPSeg" and ds.split_source == vipseg[0] / "val.txt"
    source = VSPW(synthetic_root, "val")
    assert [v.id for v in ds] == [v.id for v in source]
    raw = np.asarray(Image.open(ds[0].masks[0]))
    assert raw.dtype == np.uint16 and (raw >= 600).any()  # thing pixels: category x 100 + instance
    for v, s in zip(ds, source, strict=True):
        assert v.size == s.size and v.frames[0].parent == vipseg[0] / "imgs" / v.id
        np.testing.assert_array_equal(v.load_masks(), s.load_masks())


def test_vipseg_720p_layout_reads_its_panoptic_gt_json(synthetic_root, vipseg, caplog):
    _, p720 = vipseg
    assert not (p720 / "val.txt").exists()
    with caplog.at_level(logging.INFO, logger="isam2.data.datasets"):
        ds = VIPSeg(p720, "val")
        VIPSeg(p720, "val")  # a second reader of the same folder says nothing new
    assert ds.layout == "VIPSeg_720P" and ds.split_source == p720 / "panoptic_gt_VIPSeg_val.json"
    said = [r.getMessage() for r in caplog.records if "VIPSeg_720P layout" in r.getMessage()]
    assert len(said) == 1 and "images/" in said[0] and "panoptic_gt_VIPSeg_val.json" in said[0]
    source = VSPW(synthetic_root, "val")
    assert [v.id for v in ds] == sorted(v.id for v in source)
    for v, s in zip(ds, sorted(source, key=lambda s: s.id), strict=True):
        assert v.size == (60, 84) and v.frames[0].parent == p720 / "images" / v.id
        np.testing.assert_array_equal(v.load_mask(1), nearest(s.load_mask(1), (60, 84)))
    assert ds.class_names[5] == "car" and ds.class_names[0] == "sky"


def test_vipseg_720p_video_list_order_and_precedence(vipseg_copy):
    _, p720 = vipseg_copy
    coco_path = p720 / "panoptic_gt_VIPSeg_val.json"
    coco = json.loads(coco_path.read_text())
    ids = [v["video_id"] for v in coco["videos"]]
    coco["videos"].reverse()
    coco_path.write_text(json.dumps(coco))
    assert [v.id for v in VIPSeg(p720, "val")] == ids[::-1]  # the JSON's order
    (p720 / "val.txt").write_text(f"{ids[0]}\n")
    ds = VIPSeg(p720, "val")  # a split file in the folder wins
    assert [v.id for v in ds] == ids[:1] and ds.split_source == p720 / "val.txt"
    only = p720.parent / "one.txt"
    only.write_text(f"{ids[1]}\n")
    assert [v.id for v in VIPSeg(p720, "val", split_file=only)] == ids[1:2]  # data.split_file wins over both


def test_data_split_file_lists_data_split_only(vipseg_copy):
    from omegaconf import OmegaConf

    from isam2.data import open_split
    from isam2.errors import user_error

    original, p720 = vipseg_copy
    ids = (original / "val.txt").read_text().split()
    (original / "mine.txt").write_text(f"{ids[1]}\n")
    (p720 / "panoptic_gt_VIPSeg_train.json").write_text(json.dumps({"videos": [{"video_id": ids[0]}]}))
    cfg = OmegaConf.create(
        {"root": str(p720), "split": "val", "split_file": str(original / "mine.txt"), "generate": None}
    )
    cfg.reader = {"_target_": "isam2.data.datasets.VIPSeg"}
    assert [v.id for v in open_split(cfg)] == ids[1:2]
    assert [v.id for v in open_split(cfg, "train")] == ids[:1]  # another split reads the layout's own list
    cfg.split_file = str(original / "absent.txt")
    with pytest.raises(Exception) as err:  # Hydra's instantiate wraps it; the CLI finds it (user_error)
        open_split(cfg)
    assert str(user_error(err.value)).startswith(f"data.split_file not found: {original / 'absent.txt'}")


def test_vipseg_720p_without_a_video_list_names_what_was_looked_for(vipseg_copy):
    original, p720 = vipseg_copy
    (p720 / "panoptic_gt_VIPSeg_val.json").unlink()
    with pytest.raises(DataError) as err:
        VIPSeg(p720, "val")
    message = str(err.value)
    assert str(p720 / "val.txt") in message and str(p720 / "panoptic_gt_VIPSeg_val.json") in message
    assert f"data.split_file={original / 'val.txt'}" in message  # the original folder's list, when beside it


@pytest.mark.parametrize(
    "content",
    ["{not json", json.dumps({"annotations": []}), json.dumps({"videos": [{"id": "v"}]})],
    ids=["invalid", "no-videos", "no-video_id"],
)
def test_vipseg_720p_json_that_is_not_a_video_list(vipseg_copy, content):
    _, p720 = vipseg_copy
    (p720 / "panoptic_gt_VIPSeg_val.json").write_text(content)
    with pytest.raises(
        DataError, match=r"panoptic_gt_VIPSeg_val\.json (is not valid JSON|has no \"videos\")"
    ):
        VIPSeg(p720, "val")


def test_vipseg_json_video_id_cannot_lead_outside(vipseg_copy):
    _, p720 = vipseg_copy
    (p720 / "panoptic_gt_VIPSeg_val.json").write_text(json.dumps({"videos": [{"video_id": "../x"}]}))
    with pytest.raises(DataError, match=r"lists '\.\./x', which leads outside"):
        VIPSeg(p720, "val")


def test_a_folder_of_neither_vipseg_layout(synthetic_root, vipseg_copy):
    with pytest.raises(DataError) as err:
        VIPSeg(synthetic_root, "val")  # a VSPW folder
    message = str(err.value)
    assert f"data.root={synthetic_root} is not a VIPSeg folder" in message
    assert "imgs/" in message and "images/" in message and "panoptic_gt_VIPSeg_<split>.json" in message
    original, p720 = vipseg_copy
    shutil.rmtree(p720 / "panomasks")
    with pytest.raises(
        DataError, match=r"VIPSeg_720P folder .* has no panomasks/.*panomasksRGB/ is not read"
    ):
        VIPSeg(p720, "val")
    assert len(VIPSeg(p720, "val", require_masks=False)[0].frames) > 0  # frames alone, when no GT is needed
    shutil.copytree(p720 / "images", original / "images")
    with pytest.raises(DataError, match="holds both imgs/ .* and images/"):
        VIPSeg(original, "val")


def test_an_imgs_link_to_images_is_still_the_720p_layout(vipseg_copy):
    """The old workaround (a symlink imgs -> images in VIPSeg_720P) reads the 720p frames, named as such."""
    _, p720 = vipseg_copy
    (p720 / "imgs").symlink_to(p720 / "images")
    ds = VIPSeg(p720, "val")
    assert ds.layout == "VIPSeg_720P" and ds[0].size == (60, 84)
