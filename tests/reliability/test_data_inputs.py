"""Broken datasets through the real CLI: each stops with exit 2 and one line naming the file, keeping earlier stores."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isam2.data.synthetic import SyntheticConfig, generate
from tests.reliability.harness import assert_refused
from tests.train_helpers import run_cli

TINY = SyntheticConfig(num_train=1, num_val=2, num_test=1, min_frames=3, max_frames=3, height=24, width=32)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny dataset and an earlier output: the store of its train split."""
    tmp = tmp_path_factory.mktemp("pristine")
    root = generate(tmp / "synthetic", TINY)
    run_cli(
        "isam2.extract", [*common(root, tmp / "stores"), "data.split=train", f"hydra.run.dir={tmp / 'run'}"]
    )
    return root, tmp / "stores"


def common(root: Path, stores: Path) -> list[str]:
    return [
        f"data.root={root}",
        f"paths.store_dir={stores}",
        "sam2.image_size=64",
        "masklets=gt",
        "progress=false",
    ]


def first_video(root: Path) -> Path:
    return root / "data" / (root / "val.txt").read_text().split()[0]


def frame(root: Path, i: int) -> Path:
    return sorted((first_video(root) / "origin").iterdir())[i]


def mask(root: Path, i: int) -> Path:
    return sorted((first_video(root) / "mask").iterdir())[i]


def _ghost(root: Path) -> str:
    (root / "val.txt").write_text((root / "val.txt").read_text() + "ghost_video\n")
    return "ghost_video"


def _no_frames(root: Path) -> str:
    for p in (first_video(root) / "origin").iterdir():
        p.unlink()
    return first_video(root).name


def _unpaired(root: Path) -> str:
    m = mask(root, 1)
    m.rename(m.with_name("99999999.png"))
    return "99999999"


def _mask_size(root: Path) -> str:
    Image.fromarray(np.zeros((10, 32), np.uint8)).save(mask(root, 2))
    return mask(root, 2).name


def _label_value(root: Path) -> str:
    bad = np.asarray(Image.open(mask(root, 1))).copy()
    bad[0, 0] = 200
    Image.fromarray(bad).save(mask(root, 1))
    return mask(root, 1).name


def _truncated(root: Path) -> str:
    data = frame(root, 1).read_bytes()
    frame(root, 1).write_bytes(data[: len(data) // 3])
    return frame(root, 1).name


def _not_an_image(root: Path) -> str:
    mask(root, 0).write_text("not a png")
    return mask(root, 0).name


def _no_split_file(root: Path) -> str:
    (root / "val.txt").unlink()
    return "val.txt"


BREAKS: dict[str, Callable[[Path], str]] = {
    "listed video absent": _ghost,
    "video without frames": _no_frames,
    "frames and masks unpaired": _unpaired,
    "mask of another size": _mask_size,
    "label value out of range": _label_value,
    "truncated JPEG": _truncated,
    "mask that is not an image": _not_an_image,
    "missing split file": _no_split_file,
}


@pytest.mark.parametrize("case", list(BREAKS))
def test_a_broken_dataset_is_named_and_earlier_stores_survive(pristine, tmp_path, case):
    root = Path(shutil.copytree(pristine[0], tmp_path / "synthetic"))
    stores = Path(shutil.copytree(pristine[1], tmp_path / "stores"))
    culprit = BREAKS[case](root)
    args = [*common(root, stores), "data.split=val", f"hydra.run.dir={tmp_path / 'run'}"]
    assert_refused("isam2.extract", args, culprit, protected=[stores])
    assert len(list(stores.glob("*/manifest.json"))) == 1  # the earlier store is still complete
