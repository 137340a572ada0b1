"""Label conversions on hand-written arrays (docs/data.md)."""

import numpy as np
import pytest

from isam2.data.labels import LabelError, vipseg_to_train, vspw_to_train


def test_vspw_raw_to_train_ids():
    raw = np.array([[0, 1, 2], [124, 255, 60]], np.uint8)
    expected = np.array([[255, 0, 1], [123, 255, 59]], np.uint8)
    np.testing.assert_array_equal(vspw_to_train(raw), expected)


@pytest.mark.parametrize("bad", [125, 200, 254])
def test_vspw_rejects_values_that_are_neither_class_nor_void(bad):
    with pytest.raises(LabelError, match=str(bad)):
        vspw_to_train(np.array([[1, bad]], np.uint8))


def test_vipseg_stuff_thing_and_void():
    # stuff 3 -> 2; thing 4502 (category 45, instance 2) -> 44; 124 (< 125, so semantic) -> 123;
    # 0 -> void; thing 12401 -> category 124 -> 123; 101 (< 125: a semantic id, not a thing) -> 100
    raw = np.array([[0, 3, 4502], [124, 12401, 101]], np.int32)
    expected = np.array([[255, 2, 44], [123, 123, 100]], np.uint8)
    np.testing.assert_array_equal(vipseg_to_train(raw), expected)


def test_vipseg_rejects_category_beyond_124():
    with pytest.raises(LabelError, match="12500"):
        vipseg_to_train(np.array([[12500]], np.int32))
