"""Prediction PNG I/O and the checks run before scoring: missing, wrong size, unreadable, empty."""

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from isam2.data import DataError
from isam2.data.predictions import check_predictions, prediction_path, read_prediction, write_prediction


def test_round_trip_and_no_temp_files(tmp_path):
    arr = np.array([[0, 5, 255], [123, 1, 2]], np.uint8)
    path = tmp_path / "vid" / "00000001.png"
    write_prediction(path, arr)
    assert (read_prediction(path, (2, 3)) == arr).all()
    assert [p.name for p in path.parent.iterdir()] == ["00000001.png"]


def test_write_rejects_values_beyond_uint8(tmp_path):
    with pytest.raises(ValueError):
        write_prediction(tmp_path / "a.png", np.array([[0, 300]]))


def test_read_wrong_size_names_the_file(tmp_path):
    path = tmp_path / "a.png"
    write_prediction(path, np.zeros((2, 3), np.uint8))
    with pytest.raises(DataError, match=r"a\.png is 2x3 but its ground truth is 4x5"):
        read_prediction(path, (4, 5))


def test_read_unreadable_and_truncated(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError, match="unreadable prediction PNG .*bad.png"):
        read_prediction(bad)
    good = tmp_path / "good.png"
    write_prediction(good, np.random.default_rng(0).integers(0, 255, (64, 64)).astype(np.uint8))
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[:200])
    with pytest.raises(DataError, match="cut.png"):
        read_prediction(cut, (64, 64))


def test_read_rejects_colour_png(tmp_path):
    path = tmp_path / "rgb.png"
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)
    with pytest.raises(DataError, match="not a single-channel"):
        read_prediction(path)


def fake_videos():
    return [
        SimpleNamespace(id="v1", frame_names=["0", "1", "2"], size=(2, 3)),
        SimpleNamespace(id="v2", frame_names=["0"], size=(2, 3)),
    ]


def test_check_predictions_cases(tmp_path):
    videos = fake_videos()
    with pytest.raises(DataError, match="pred_dir not found"):
        check_predictions(tmp_path / "nope", videos)
    (tmp_path / "p").mkdir()
    with pytest.raises(DataError, match="is empty"):
        check_predictions(tmp_path / "p", videos)
    write_prediction(prediction_path(tmp_path / "p", "v1", "0"), np.zeros((2, 3), np.uint8))
    with pytest.raises(
        DataError, match=r"3 of 4 ground-truth frames have no prediction .*v1/1\.png, v1/2\.png, v2/0\.png"
    ):
        check_predictions(tmp_path / "p", videos)
    for v in videos:
        for n in v.frame_names:
            write_prediction(prediction_path(tmp_path / "p", v.id, n), np.zeros((2, 3), np.uint8))
    check_predictions(tmp_path / "p", videos)
    write_prediction(prediction_path(tmp_path / "p", "v2", "0"), np.zeros((3, 3), np.uint8))
    with pytest.raises(DataError, match=r"v2/0\.png is 3x3"):
        check_predictions(tmp_path / "p", videos)


def test_check_predictions_at_another_resolution_counts_them_and_asks_the_dataset(tmp_path):
    videos = fake_videos()
    for v in videos:
        for n in v.frame_names:
            write_prediction(prediction_path(tmp_path / "p", v.id, n), np.zeros((3, 4), np.uint8))
    write_prediction(prediction_path(tmp_path / "p", "v1", "0"), np.zeros((2, 3), np.uint8))
    asked = []

    def hint(pred_size, frame_size):
        asked.append((pred_size, frame_size))
        return "pass data.root=<the right one>"

    with pytest.raises(DataError) as err:
        check_predictions(tmp_path / "p", videos, size_hint=hint)
    message = str(err.value)
    assert message.startswith(f"3 of 4 predictions in {tmp_path / 'p'} are at another resolution")
    assert "v1/1.png is 3x4 but its ground truth is 2x3 (HxW)" in message
    assert message.endswith("pass data.root=<the right one>") and asked == [((3, 4), (2, 3))]
