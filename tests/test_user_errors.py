"""One way out for user errors, in-process: wrapped errors, files that cannot be read, checkpoints, outputs over inputs."""

from __future__ import annotations

import pytest

from isam2.errors import ISAM2Error

# ------------------------------------------------------------------ the feature identity of a head


def test_check_features_compares_every_setting_and_warns_when_allowed(capsys):
    from isam2.model.module import check_features

    head = {"sam2": {"variant": "hiera_t", "image_size": 64}, "masklets": {"pooling": {"levels": [2]}}}
    run = {"sam2": {"variant": "hiera_s", "image_size": 64}, "masklets": {"pooling": {"levels": [2]}}}
    assert check_features(head, head, "checkpoint c", allow=False) == []
    with pytest.raises(ISAM2Error, match=r"sam2.variant: 'hiera_t' \(head\) vs 'hiera_s' \(this run\)"):
        check_features(head, run, "checkpoint c", allow=False)
    assert check_features(head, run, "checkpoint c", allow=True) == [
        "sam2.variant: 'hiera_t' (head) vs 'hiera_s' (this run)"
    ]
    assert "warning: checkpoint c was trained on other features" in capsys.readouterr().out
    assert check_features(None, run, "checkpoint c", allow=False) == []  # saved before identities existed
    assert "records no feature identity" in capsys.readouterr().out
