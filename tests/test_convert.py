"""`python -m isam2.convert`: hand-made VIPSeg panoptic predictions (DVIS layout) -> semantic PNGs, and bad input."""

import json

import numpy as np
import pytest
from PIL import Image

from isam2.convert import main

# Two segments of one video frame: a "thing" (two instances of category 60) and a "stuff" (category 3).
IDS = {"thing_a": 1 + 256 * 2, "thing_b": 7 + 256 * 256 * 1, "stuff": 200}


def _rgb(ids: np.ndarray) -> np.ndarray:
    """Segment ids -> RGB by hand: R = id % 256, G = id // 256 % 256, B = id // 65536."""
    return np.stack([ids % 256, ids // 256 % 256, ids // 65536], axis=-1).astype(np.uint8)


def _write(root, frames: dict[str, np.ndarray], infos: dict[str, list], video="vid_1"):
    (root / "pan_pred" / video).mkdir(parents=True, exist_ok=True)
    for stem, ids in frames.items():
        Image.fromarray(_rgb(ids)).save(root / "pan_pred" / video / f"{stem}.png")
    entry = {
        "video_id": video,
        "annotations": [{"file_name": f"{s}.jpg", "segments_info": infos[s]} for s in frames],
    }
    (root / "pred.json").write_text(json.dumps({"annotations": [entry]}))


def _hand_made(root):
    ids = np.zeros((3, 4), np.int64)
    ids[0, :2] = IDS["thing_a"]
    ids[1, :] = IDS["thing_b"]
    ids[2, 1:] = IDS["stuff"]  # ids[0, 2:] and ids[2, 0] stay 0: unlabelled
    info = [
        {"id": IDS["thing_a"], "category_id": 60, "iscrowd": 0},
        {"id": IDS["thing_b"], "category_id": 60, "iscrowd": 0},
        {"id": IDS["stuff"], "category_id": 3, "iscrowd": 0},
    ]
    _write(
        root,
        {"00000001": ids, "00000002": np.full((3, 4), IDS["stuff"])},
        {"00000001": info, "00000002": info},
    )
    expected = np.array([[60, 60, 255, 255], [60, 60, 60, 60], [255, 3, 3, 3]], np.uint8)
    return expected


def test_converts_ids_categories_and_unlabelled(tmp_path, caplog):
    caplog.set_level("INFO")
    expected = _hand_made(tmp_path / "dvis")
    main([f"input={tmp_path / 'dvis'}", f"output={tmp_path / 'out'}"])
    got = np.asarray(Image.open(tmp_path / "out" / "vid_1" / "00000001.png"))
    assert got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "out" / "vid_1" / "00000002.png")), 3)
    assert "wrote 2 semantic PNGs of 1 videos" in caplog.text
    main([f"input={tmp_path / 'dvis'}", f"output={tmp_path / 'one'}", "category_offset=1"])  # 1-based ids
    np.testing.assert_array_equal(
        np.asarray(Image.open(tmp_path / "one" / "vid_1" / "00000001.png")),
        np.where(expected == 255, 255, expected.astype(int) - 1),
    )


def _error(capsys, argv) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    return lines[0]


def test_bad_files_give_one_error_line(tmp_path, capsys):
    root = tmp_path / "dvis"
    _hand_made(root)
    args = [f"input={root}", f"output={tmp_path / 'out'}"]
    # a category outside VIPSeg's 124 classes
    data = json.loads((root / "pred.json").read_text())
    data["annotations"][0]["annotations"][0]["segments_info"][2]["category_id"] = 124
    (root / "pred.json").write_text(json.dumps(data))
    assert "[124]" in _error(capsys, args)
    # a segment in the PNG that segments_info does not list
    data["annotations"][0]["annotations"][0]["segments_info"].pop(2)
    (root / "pred.json").write_text(json.dumps(data))
    assert str(IDS["stuff"]) in _error(capsys, args) and "segments_info" in _error(capsys, args)
    # a missing PNG, a broken JSON, a grey PNG, an unknown setting
    _hand_made(root)
    (root / "pan_pred" / "vid_1" / "00000002.png").unlink()
    assert "00000002.png" in _error(capsys, args)
    (root / "pred.json").write_text("{not json")
    assert "pred.json" in _error(capsys, args)
    _hand_made(root)
    Image.fromarray(np.zeros((3, 4), np.uint8)).save(root / "pan_pred" / "vid_1" / "00000001.png")
    assert "RGB" in _error(capsys, args)
    assert "colour=" in _error(capsys, [*args, "colour=red"])
    # never over its input
    assert "output" in _error(capsys, [f"input={root}", f"output={root / 'pan_pred'}"])
