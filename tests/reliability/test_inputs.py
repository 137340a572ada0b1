"""Bad input through the real CLIs: each case stops with one `error:` line naming the culprit and loses nothing."""

from __future__ import annotations

import json
import pathlib
from pathlib import Path

import pytest
import torch

from tests.noisy import write_noisy_base
from tests.reliability.harness import assert_refused, snapshot
from tests.train_helpers import REPO, run_cli, tiny_dataset, tiny_overrides

SMALL_SET = [
    "num_train=1",
    "num_val=1",
    "num_test=1",
    "min_frames=3",
    "max_frames=3",
    "height=24",
    "width=32",
]


def test_synthetic_refuses_a_folder_it_did_not_make(tmp_path):
    folder = tmp_path / "my_data"
    (folder / "videos").mkdir(parents=True)
    (folder / "videos" / "keep.mp4").write_bytes(b"precious")
    (folder / "train.txt").write_text("keep\n")
    assert_refused("isam2.data.synthetic", [f"root={folder}", *SMALL_SET], str(folder), protected=[folder])
    assert_refused("isam2.data.synthetic", [f"root={folder}", "force=true"], str(folder), protected=[folder])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my_data"]


def test_synthetic_regenerates_its_own_set_only_with_force(tmp_path):
    root = tmp_path / "syn"
    run_cli("isam2.data.synthetic", [f"root={root}", *SMALL_SET])
    before = snapshot([root])
    run_cli("isam2.data.synthetic", [f"root={root}", *SMALL_SET])  # the same settings: kept as it is
    assert snapshot([root]) == before
    assert_refused(
        "isam2.data.synthetic", [f"root={root}", *SMALL_SET, "seed=1"], [str(root), "force=true"], [root]
    )
    run_cli("isam2.data.synthetic", [f"root={root}", *SMALL_SET, "seed=1", "force=true"])
    assert snapshot([root]) != before
    assert_refused("isam2.data.synthetic", [f"root={root}", "seed=x"], "seed", [root])
    assert_refused("isam2.data.synthetic", [f"root={root}", "colour=3"], "colour=3", [root])


# ------------------------------------------------------------------ a trained head and its stores, built once


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("inputs")


@pytest.fixture(scope="module")
def head(shared) -> Path:
    """The best checkpoint of a seconds-long `isam2.train` (gt masklets, SAM2 at 64 px, one epoch)."""
    overrides = [
        o for o in tiny_overrides(shared / "train", shared) if not o.startswith("trainer.max_epochs")
    ]
    run_cli("isam2.train", [*overrides, "trainer.max_epochs=1"])
    run = shared / "train" / "run"
    return run / json.loads((run / "metrics.json").read_text())["checkpoint"]


@pytest.fixture(scope="module")
def base_dir(shared, head) -> Path:
    return write_noisy_base(tiny_dataset(shared / "data", "test"), shared / "base", seed=3)


def run_overrides(shared: Path, tmp: Path) -> list[str]:
    """The data, SAM2 and store settings of the `head` run (so evaluate and refine find its test store)."""
    keep = ("data.", "sam2.", "paths.", "hydra.")
    return [o for o in tiny_overrides(tmp, shared) if o.startswith(keep)] + ["data.split=test"]


def refine_args(shared: Path, tmp: Path, base_dir: Path, *more: str) -> list[str]:
    """`isam2.refine` of `base_dir` with the settings of the `head` run's test store, then `more` (replacing
    a setting of the same name)."""
    keys = {m.split("=", 1)[0] for m in more}
    args = [f"base_pred_dir={base_dir}", "data=synthetic", *run_overrides(shared, tmp), "masklets=gt"]
    args += ["masklets.pooling.levels=[2]", f"output_dir={tmp / 'out'}"]
    return [a for a in args if a.split("=", 1)[0] not in keys] + list(more)


def store_folders(shared: Path) -> list[str]:
    return sorted(p.name for p in (shared / "stores").iterdir())


class Payload:
    """Unpickling this creates `path`: a checkpoint holding it must be refused, never loaded."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.path),))


def payload_checkpoint(folder: Path, state: dict) -> tuple[Path, Path]:
    """A checkpoint of `state` plus a Payload; returns (checkpoint, the file its unpickling would create)."""
    folder.mkdir(parents=True, exist_ok=True)
    marker = folder / "payload_ran"
    torch.save({**state, "extra": Payload(marker)}, folder / "payload.ckpt")
    return folder / "payload.ckpt", marker


# ------------------------------------------------------------------ a head evaluated on another feature space


def compose(config: str, overrides: list[str], output_dir: Path):
    """The config an entry point composes (in-process: no `hydra.*` overrides), writing to `output_dir`."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    keep = [o for o in overrides if not o.startswith("hydra.")]
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return hydra_compose(config, overrides=[*keep, f"paths.output_dir={output_dir}"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("sam2.image_size=128", "sam2.image_size"),
        ("sam2=hiera_s", "sam2.variant"),  # the same 256-dim features: only the identity tells them apart
        ("masklets.pooling.levels=[0]", "masklets.pooling.levels"),
        ("masklets=sam2", "masklets.source"),
        ("sam2.checkpoint=CKPT", "sam2.checkpoint"),
    ],
)
def test_evaluate_refuses_a_head_trained_on_other_features(shared, head, tmp_path, override, key):
    from isam2.errors import ISAM2Error
    from isam2.pipelines.evaluate import run as evaluate

    if override == "sam2.checkpoint=CKPT":  # a file of another SAM2 checkpoint: refused by its sha256 alone
        (tmp_path / "other_sam2.pt").write_bytes(b"another SAM2 checkpoint")
        override = f"sam2.checkpoint={tmp_path / 'other_sam2.pt'}"
    before = store_folders(shared)
    cfg = compose("evaluate", [*run_overrides(shared, tmp_path), f"ckpt_path={head}", override], tmp_path)
    with pytest.raises(ISAM2Error) as refused:
        evaluate(cfg)
    for part in (str(head), f"{key}:", "(head)", "(this run)", "allow_feature_mismatch=true"):
        assert part in str(refused.value)
    assert store_folders(shared) == before  # refused before any store was built


def test_evaluate_cli_refuses_a_head_trained_at_another_image_size(shared, head, tmp_path):
    assert_refused(
        "isam2.evaluate",
        [*run_overrides(shared, tmp_path), f"ckpt_path={head}", "sam2.image_size=128"],
        [str(head), "sam2.image_size: 64 (head) vs 128 (this run)", "allow_feature_mismatch=true"],
        protected=[shared / "stores", head],
    )


def test_allow_feature_mismatch_evaluates_with_a_warning(shared, head, tmp_path):
    overrides = [o for o in run_overrides(shared, tmp_path) if not o.startswith("paths.store_dir=")]
    overrides += [f"paths.store_dir={tmp_path / 'stores'}", f"ckpt_path={head}", "sam2.image_size=128"]
    proc = run_cli("isam2.evaluate", [*overrides, "allow_feature_mismatch=true"])
    assert (
        any("WARNING" in line and "other features" in line for line in proc.stdout.splitlines())
        and "sam2.image_size: 64 (head) vs 128 (this run)" in proc.stdout
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["feature_mismatch"] == ["sam2.image_size: 64 (head) vs 128 (this run)"]
    assert metrics["trained"] is True


def test_the_head_checkpoint_records_the_feature_identity_of_its_training_store(shared, head):
    from isam2.store.reader import MaskletStore

    hparams = torch.load(head, map_location="cpu", weights_only=True)["hyper_parameters"]
    (train_store,) = [p for p in (shared / "stores").glob("synthetic-train-*")]
    manifest = MaskletStore(train_store).manifest["identity"]
    assert hparams["feature_identity"] == {"sam2": manifest["sam2"], "masklets": manifest["masklets"]}
    assert hparams["feature_identity"]["sam2"]["image_size"] == 64


# ------------------------------------------------------------------ refine never writes over its inputs


@pytest.mark.parametrize("where", ["base", "store"])  # inside and above: tests/test_user_errors.py
def test_refine_refuses_an_output_folder_over_an_input(shared, base_dir, tmp_path, where):
    (store,) = (shared / "stores").glob("synthetic-test-*")
    out = named = base_dir if where == "base" else store
    assert_refused(
        "isam2.refine",
        refine_args(shared, tmp_path, base_dir, f"output_dir={out}"),
        [f"output_dir={out.resolve()}", str(named.resolve())],
        protected=[base_dir, shared / "data", shared / "stores"],
    )


# ------------------------------------------------------------------ one way out for every user error


@pytest.mark.parametrize(
    "override, culprit",
    [
        ("model=nonexistent", "model/nonexistent"),  # Hydra: no such group option
        ("trainer.max_epoch=3", "trainer.max_epoch"),  # Hydra: no such key
        ("trainer.max_epochs=[", "trainer.max_epochs=["),  # Hydra: bad override syntax
        ("trainer.max_epochs=abc", "trainer.max_epochs"),  # the wrong type: checked before any work
        ("datamodule.batch_size=1.5", "datamodule.batch_size"),
    ],
)
def test_a_bad_override_is_one_error_line_before_any_work(tmp_path, override, culprit):
    args = [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}", override]
    assert_refused("isam2.train", args, culprit, protected=[tmp_path])
    assert not (tmp_path / "data").exists() and not (tmp_path / "stores").exists()


def test_a_required_setting_left_unset_is_named(tmp_path):
    assert_refused(
        "isam2.evaluate", [f"hydra.run.dir={tmp_path / 'run'}"], "ckpt_path=", protected=[tmp_path]
    )


def test_an_unwritable_run_directory_is_named(tmp_path):
    """A run directory Hydra cannot create (under a file: stands in for a folder without write permission,
    which root, running the tests, always has)."""
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file")
    args = [f"paths.root_dir={tmp_path}", f"hydra.run.dir={blocker / 'run'}"]
    assert_refused("isam2.train", args, str(blocker), protected=[tmp_path])


# ------------------------------------------------------------------ damaged, unreadable and pickled files


def test_evaluate_names_a_damaged_checkpoint(shared, head, tmp_path):
    """A truncated checkpoint (other damage, unreadable files: tests/test_user_errors.py)."""
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(head.read_bytes()[: head.stat().st_size // 2])
    before = store_folders(shared)
    assert_refused(
        "isam2.evaluate",
        [*run_overrides(shared, tmp_path), f"ckpt_path={bad}"],
        f"ckpt_path={bad}",
        protected=[shared / "stores"],
    )
    assert store_folders(shared) == before


def test_a_checkpoint_with_a_pickled_payload_is_refused_not_run(shared, head, tmp_path):
    state = torch.load(head, map_location="cpu", weights_only=True)
    ckpt, ran = payload_checkpoint(tmp_path / "head", state)
    assert_refused(
        "isam2.evaluate",
        [*run_overrides(shared, tmp_path / "evaluate"), f"ckpt_path={ckpt}"],
        [f"ckpt_path={ckpt}", "pickled objects"],
        protected=[shared / "stores"],
    )
    from isam2.errors import ISAM2Error
    from isam2.pipelines.train import run as train

    overrides = [o for o in tiny_overrides(tmp_path / "train", shared) if not o.startswith("logger=")]
    with pytest.raises(ISAM2Error, match="pickled objects"):  # resuming from it
        train(compose("train", [*overrides, "logger=none", f"ckpt_path={ckpt}"], tmp_path / "train"))
    assert not ran.exists()


def test_a_sam2_checkpoint_with_a_pickled_payload_is_refused_inside_hydra_instantiate(tmp_path):
    """SAM2Backbone is built by hydra.utils.instantiate, which wraps its ISAM2Error: still one error line."""
    ckpt, ran = payload_checkpoint(tmp_path / "sam2", {"model": {}})
    args = [f"paths.root_dir={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}", "sam2.image_size=64"]
    args += ["masklets=gt", "progress=false", "data.split=test", f"sam2.checkpoint={ckpt}"]
    args += [f"data.generate.{k}" for k in SMALL_SET]
    assert_refused("isam2.extract", args, [f"sam2.checkpoint={ckpt}", "pickled objects"])
    assert not ran.exists()


def test_a_damaged_store_file_is_named(shared, base_dir, tmp_path):
    """Truncated id maps of a finished store (other damage: tests/test_user_errors.py)."""
    import shutil

    (source,) = (shared / "stores").glob("synthetic-test-*")
    store = Path(shutil.copytree(source, tmp_path / "stores" / source.name))
    bad = sorted((store / "idmaps").glob("*.npz"))[0]
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    args = refine_args(shared, tmp_path, base_dir, f"paths.store_dir={tmp_path / 'stores'}")
    assert_refused("isam2.refine", args, str(bad), protected=[base_dir, shared / "data"])


def test_an_output_folder_that_cannot_be_made_is_named(shared, base_dir, tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("a file")  # stands in for a folder without write permission (tests run as root)
    args = refine_args(shared, tmp_path, base_dir, f"output_dir={blocker / 'out'}")
    assert_refused(
        "isam2.refine", args, str(blocker), protected=[base_dir, shared / "data", shared / "stores"]
    )
