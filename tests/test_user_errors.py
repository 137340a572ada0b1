"""One way out for user errors, in-process: wrapped errors, files that cannot be read, checkpoints, outputs over inputs."""

from __future__ import annotations

import errno
import pathlib
import shutil
from pathlib import Path

import pytest
import torch

from isam2.errors import ISAM2Error, user_errors_exit


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]


def refused(fn, capsys) -> str:
    """Run `fn` under `user_errors_exit`: it must exit 2 with exactly one `error:` line, which is returned."""
    with pytest.raises(SystemExit) as stop:
        user_errors_exit(fn)()
    assert stop.value.code == 2
    lines = error_lines(capsys)
    assert len(lines) == 1, lines
    return lines[0]


# ------------------------------------------------------------------ user_errors_exit


def test_an_isam2_error_raised_inside_hydra_instantiate_is_one_error_line(tmp_path, capsys):
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    reader = {"_target_": "isam2.data.datasets.VSPW", "root": str(tmp_path / "missing"), "split": "val"}
    with pytest.raises(InstantiationException):  # what Hydra raises: the DataError is its __cause__
        instantiate(reader)
    line = refused(lambda: instantiate(reader), capsys)
    assert line == f"error: dataset root not found: {tmp_path / 'missing'} (set data.root)"


def test_a_file_that_cannot_be_read_is_named(tmp_path, monkeypatch, capsys):
    """A split file without read permission (simulated: the tests run as root, who may read anything)."""
    from isam2.data.datasets import VSPW
    from isam2.data.synthetic import SyntheticConfig, generate

    root = generate(
        tmp_path / "data", SyntheticConfig(num_train=1, num_val=1, num_test=1, height=24, width=32)
    )
    read_text = pathlib.Path.read_text

    def denied(self, *args, **kwargs):
        if self.name == "val.txt":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", denied)
    line = refused(lambda: VSPW(root, "val"), capsys)
    assert line.startswith(f"error: cannot use {root / 'val.txt'}: Permission denied; ")


def test_other_exceptions_keep_their_traceback():
    def bug():
        raise ValueError("a bug, not bad input")

    def no_file():
        raise OSError(errno.EIO, "I/O error")  # names no file: not a user error

    for fn, kind in ((bug, ValueError), (no_file, OSError)):
        with pytest.raises(kind):
            user_errors_exit(fn)()


def test_a_message_of_several_lines_is_printed_as_one(capsys):
    def fail():
        raise ISAM2Error("first part\nsecond part")

    assert refused(fail, capsys) == "error: first part second part"


# ------------------------------------------------------------------ checkpoints: load_weights


class Payload:
    """Unpickling this creates `path`."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


@pytest.mark.parametrize("damage", ["truncated", "empty", "text", "legacy pickle", "a folder", "denied"])
def test_a_damaged_or_unreadable_checkpoint_is_named(tmp_path, monkeypatch, damage):
    from isam2.files import load_weights

    path = tmp_path / "head.ckpt"
    torch.save({"state_dict": {"w": torch.ones(64)}}, path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("not a checkpoint\n" * 8)
    elif damage == "legacy pickle":
        path.write_bytes(b"\x80\x02garbage")
    elif damage == "a folder":  # cannot be opened as a file
        path.unlink()
        path.mkdir()
    else:  # no read permission (simulated: the tests run as root)
        monkeypatch.setattr(torch, "load", lambda f, **kw: _deny(f))
    with pytest.raises(ISAM2Error, match=f"^ckpt_path={path} ") as refusal:
        load_weights(path, "ckpt_path")
    expected = "is not a file" if damage == "a folder" else "cannot be read as a checkpoint"
    assert expected in str(refusal.value) and "\n" not in str(refusal.value)


def _deny(path: Path):
    raise PermissionError(errno.EACCES, "Permission denied", str(path))


def test_a_checkpoint_with_a_pickled_payload_is_refused_without_running_it(tmp_path):
    from isam2.files import load_weights

    ran = tmp_path / "payload_ran"
    torch.save({"state_dict": {}, "extra": Payload(ran)}, tmp_path / "payload.ckpt")
    with pytest.raises(ISAM2Error, match="holds pickled objects, not only weights") as refusal:
        load_weights(tmp_path / "payload.ckpt", "sam2.checkpoint")
    assert str(refusal.value).startswith(f"sam2.checkpoint={tmp_path / 'payload.ckpt'} ")
    assert not ran.exists()


# ------------------------------------------------------------------ outputs apart from inputs


def test_an_output_folder_is_refused_over_any_input(tmp_path):
    from isam2.errors import ConfigError
    from isam2.files import check_output_apart

    base, data = tmp_path / "base", tmp_path / "data"
    base.mkdir()
    (tmp_path / "link").symlink_to(base)
    inputs = {"base_pred_dir": base, "data.root": data}
    for out, relation, name in [
        (base, "is", "base_pred_dir"),
        (tmp_path / "link", "is", "base_pred_dir"),  # the same folder through a symlink
        (base / "refined", "lies inside", "base_pred_dir"),
        (data / "a" / "b", "lies inside", "data.root"),
        (tmp_path, "holds", "base_pred_dir"),
    ]:
        with pytest.raises(ConfigError) as refusal:
            check_output_apart(out, "output_dir", inputs)
        assert str(refusal.value).startswith(f"output_dir={out.resolve()} {relation} the input {name} ")
    check_output_apart(tmp_path / "refined", "output_dir", inputs)  # apart: accepted


# ------------------------------------------------------------------ damaged store files


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    from tests.train_helpers import tiny_dataset, toy_store

    tmp = tmp_path_factory.mktemp("store")
    return toy_store(tmp / "store", tiny_dataset(tmp / "data", "val")).path


@pytest.mark.parametrize(
    "damage",
    [
        "idmaps truncated",
        "idmaps garbage",
        "idmaps member",
        "idmaps a folder",
        "manifest garbage",
        "manifest a list",
        "features truncated",
        "features empty",
    ],
)
def test_a_damaged_store_file_is_named(store, tmp_path, damage):
    from isam2.store.reader import MaskletStore

    copy = Path(shutil.copytree(store, tmp_path / store.name))
    video = MaskletStore(copy).videos()[0]
    part, how = damage.split(" ", 1)
    bad = {"idmaps": copy / "idmaps" / f"{video}.npz"}.get(
        part, copy / f"{part}.{'json' if part == 'manifest' else 'npy'}"
    )
    data = bad.read_bytes()
    if how == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        bad.write_bytes(b"\x89\xff\xfe" + bytes(range(256)))
    elif how == "member":  # the archive's directory intact, a compressed member's bytes changed
        middle = len(data) // 3
        bad.write_bytes(
            data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 16]) + data[middle + 16 :]
        )
    elif how == "a folder":  # cannot be opened (stands in for a file without read permission)
        bad.unlink()
        bad.mkdir()
    elif how == "a list":
        bad.write_text("[1, 2]")
    else:
        bad.write_bytes(b"")
    with pytest.raises(ISAM2Error, match=str(bad)) as refusal:
        MaskletStore(copy).id_maps(video)
    assert "\n" not in str(refusal.value)


# ------------------------------------------------------------------ the feature identity of a head


def test_check_features_compares_every_setting_and_warns_when_allowed(caplog):
    from isam2.model.module import check_features

    head = {"sam2": {"variant": "hiera_t", "image_size": 64}, "masklets": {"pooling": {"levels": [2]}}}
    run = {"sam2": {"variant": "hiera_s", "image_size": 64}, "masklets": {"pooling": {"levels": [2]}}}
    assert check_features(head, head, "checkpoint c", allow=False) == []
    with pytest.raises(ISAM2Error, match=r"sam2.variant: 'hiera_t' \(head\) vs 'hiera_s' \(this run\)"):
        check_features(head, run, "checkpoint c", allow=False)
    assert check_features(head, run, "checkpoint c", allow=True) == [
        "sam2.variant: 'hiera_t' (head) vs 'hiera_s' (this run)"
    ]
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert "checkpoint c was trained on other features" in warned[-1].getMessage()
    assert check_features(None, run, "checkpoint c", allow=False) == []  # saved before identities existed
    assert "records no feature identity" in caplog.records[-1].getMessage()
