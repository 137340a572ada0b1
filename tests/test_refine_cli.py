"""`python -m isam2.refine` end to end: a noisy base gets better, and the PNGs equal an independent Eq. 1-2; on
VIPSeg (Table 2) in both layouts it ships in, and its wrong-folder cases in-process."""

import json

import numpy as np
import pytest
from PIL import Image

from isam2.data.datasets import VSPW, VIPSeg
from isam2.data.synthetic import SyntheticConfig, generate
from isam2.metrics.results import MethodScores, RefineResults, SpeedRecord, schema_problems
from isam2.store.reader import MaskletStore
from tests.noisy import write_noisy_base
from tests.test_segment import _refine_brute_force
from tests.train_helpers import run_cli
from tests.vipseg_layouts import make_vipseg


@pytest.fixture(scope="module")
def refined(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("refine")
    cfg = SyntheticConfig(
        num_train=1, num_val=2, num_test=1, min_frames=6, max_frames=8, height=48, width=64, seed=5
    )
    root = generate(tmp / "syn", cfg)
    base_dir = write_noisy_base(VSPW(root, "val"), tmp / "base", seed=1)
    _run(tmp, root, base_dir)
    return tmp, root, base_dir


def _run(tmp, root, base_dir, *extra, check=True):
    overrides = [f"base_pred_dir={base_dir}", "data=synthetic", f"data.root={root}", "data.split=val"]
    overrides += ["masklets=gt", "sam2.image_size=128", f"output_dir={tmp / 'out'}", f"paths.root_dir={tmp}"]
    return run_cli("isam2.refine", [*overrides, f"hydra.run.dir={tmp / 'run'}", *extra], check=check)


def test_refiner_improves_a_noisy_base(refined):
    tmp, root, _ = refined
    m = json.loads((tmp / "out" / "metrics.json").read_text())
    assert schema_problems(m, RefineResults) == [] and schema_problems(m["speed"], SpeedRecord) == []
    assert schema_problems(m["base"], MethodScores) == [] == schema_problems(m["refined"], MethodScores)
    assert m["refined"]["miou"] > m["base"]["miou"]
    assert m["refined"]["mbiou"] > m["base"]["mbiou"]
    (store_path,) = [p.parent for p in (tmp / "stores").rglob("manifest.json")]
    from tests.test_train import masklets_per_frame_brute_force

    speed = m["speed"]  # timings are not asserted, only what they are measured over
    assert {"fps", "seconds", "measured"} <= set(speed) and speed["frames"] == VSPW(root, "val").num_frames
    assert speed["masklets_per_frame"] == pytest.approx(
        masklets_per_frame_brute_force(MaskletStore(store_path))
    )


def test_refined_pngs_equal_independent_eq_1_2(refined):
    tmp, root, base_dir = refined
    (store_path,) = [p.parent for p in (tmp / "stores").rglob("manifest.json")]
    store = MaskletStore(store_path)
    for video in VSPW(root, "val"):
        names = video.frame_names
        base = np.stack([np.asarray(Image.open(base_dir / video.id / f"{n}.png")) for n in names])
        ids = np.stack([store.id_map(video.id, t) for t in range(len(names))])
        got = np.stack([np.asarray(Image.open(tmp / "out" / video.id / f"{n}.png")) for n in names])
        np.testing.assert_array_equal(got, _refine_brute_force(base, ids))


def test_missing_base_prediction_is_named(refined, tmp_path):
    _, root, base_dir = refined
    broken = tmp_path / "base"
    import shutil

    shutil.copytree(base_dir, broken)
    victim = sorted(broken.rglob("*.png"))[3]
    victim.unlink()
    run = _run(tmp_path, root, broken, check=False)
    assert run.returncode == 2
    assert f"{victim.parent.name}/{victim.name}" in run.stderr and "1 of" in run.stderr


# ------------------------------------------------------------------ VIPSeg (Table 2): both layouts it ships in


@pytest.fixture(scope="module")
def vipseg_data(tmp_path_factory):
    """Both VIPSeg layouts of a 2-video val split (one cut to 12 frames, so the default mVC protocol skips
    it), and a noisy base at each layout's resolution."""
    tmp = tmp_path_factory.mktemp("vipseg")
    cfg = SyntheticConfig(
        num_train=1, num_val=2, num_test=1, min_frames=17, max_frames=18, height=32, width=48, seed=5
    )
    synthetic = generate(tmp / "syn", cfg)
    short = VSPW(synthetic, "val")[0].id
    original, p720 = make_vipseg(synthetic, tmp, keep={short: 12})
    bases = {
        root: write_noisy_base(VIPSeg(root, "val"), tmp / f"base_{root.name}", seed=1)
        for root in (original, p720)
    }
    return tmp, synthetic, original, p720, bases


@pytest.fixture(scope="module")
def vipseg_runs(vipseg_data):
    """`python -m isam2.refine data=vipseg` on each layout (the only two CLI runs of this section)."""
    tmp, _, original, p720, bases = vipseg_data
    runs = {}
    for root in (original, p720):
        work = tmp / f"run_{root.name}"
        overrides = ["data=vipseg", f"data.root={root}", f"base_pred_dir={bases[root]}", "masklets=gt"]
        overrides += ["sam2.image_size=128", f"output_dir={work / 'out'}", f"paths.root_dir={work}"]
        # real processes: the layout is announced once per process, and this test process opened it already
        refine = run_cli("isam2.refine", [*overrides, f"hydra.run.dir={work / 'run'}"], spawn=True)
        runs[root.name] = (work, refine)
    return runs


@pytest.mark.parametrize(
    ("layout", "frames", "size", "split_list"),
    [
        ("VIPSeg", "imgs", (32, 48), "val.txt"),
        ("VIPSeg_720P", "images", (48, 72), "panoptic_gt_VIPSeg_val.json"),
    ],
)
def test_refine_reads_vipseg_as_it_ships(vipseg_data, vipseg_runs, layout, frames, size, split_list):
    _, _, original, p720, _ = vipseg_data
    root = original if layout == "VIPSeg" else p720
    work, run = vipseg_runs[layout]
    said = (
        f"data.root={root}: {layout} layout ({frames}/, panomasks/); videos of val from {root / split_list}"
    )
    assert (run.stdout + run.stderr).count(said) == 1  # once, though refine and the store both open the split
    m = json.loads((work / "out" / "metrics.json").read_text())
    assert m["dataset"] == {
        "name": "vipseg",
        "split": "val",
        "root": str(root),
        "layout": layout,
        "split_list": str(root / split_list),
    }
    assert m["refined"]["miou"] > m["base"]["miou"]
    for video in VIPSeg(root, "val"):
        pngs = sorted((work / "out" / video.id).glob("*.png"))
        assert [p.stem for p in pngs] == video.frame_names
        assert np.asarray(Image.open(pngs[-1])).shape == size
    # the default protocol (cffm) skips the 12-frame video for both lengths: the protocol line says so
    skipped = {"counted": 1, "of": 2, "skipped_up_to": 16}
    assert m["mvc_videos"] == {"mvc8": skipped, "mvc16": skipped}
    protocol = [line for line in run.stdout.splitlines() if line.startswith("protocol: ")]
    assert len(protocol) == 1 and protocol[0].endswith(
        "; mVC8 and mVC16 over 1 of 2 videos: 1 has <= 16 frames"
    )


def _compose(entry: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    from tests.train_helpers import REPO

    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose(entry, overrides=overrides)


def _refine_cfg(tmp_path, root, base_dir):
    overrides = ["data=vipseg", f"data.root={root}", f"base_pred_dir={base_dir}", "masklets=gt"]
    overrides += [
        f"output_dir={tmp_path / 'out'}",
        f"paths.root_dir={tmp_path}",
        f"paths.output_dir={tmp_path / 'run'}",
    ]
    return _compose("refine", overrides)


def test_vipseg_predictions_at_another_resolution_name_the_folder_to_use(vipseg_data, tmp_path, capsys):
    """DVIS-style 720p predictions against the original frames, and the reverse: one `error:` line, exit 2."""
    from isam2.pipelines import refine, score
    from tests.test_user_errors import refused

    _, _, original, p720, bases = vipseg_data
    line = refused(lambda: refine.run(_refine_cfg(tmp_path, original, bases[p720])), capsys)
    assert "are at another resolution than their frames" in line
    assert "is 48x72 but its ground truth is 32x48 (HxW)" in line and line.endswith(f"pass data.root={p720}")
    line = refused(lambda: refine.run(_refine_cfg(tmp_path, p720, bases[original])), capsys)
    assert "is 32x48 but its ground truth is 48x72 (HxW)" in line and line.endswith(
        f"pass data.root={original}"
    )
    cfg = _compose(
        "score",
        ["data=vipseg", f"data.root={original}", f"pred_dir={bases[p720]}", f"paths.output_dir={tmp_path}"],
    )
    line = refused(lambda: score.run(cfg), capsys)
    assert "is 48x72 but its ground truth is 32x48 (HxW)" in line and line.endswith(f"pass data.root={p720}")


def test_refine_on_a_folder_of_neither_vipseg_layout(vipseg_data, tmp_path, capsys):
    from isam2.pipelines import refine
    from tests.test_user_errors import refused

    _, synthetic, _, p720, bases = vipseg_data
    line = refused(lambda: refine.run(_refine_cfg(tmp_path, synthetic, bases[p720])), capsys)
    assert line.startswith(f"error: data.root={synthetic} is not a VIPSeg folder: looked for imgs/")
    assert "images/" in line and "panoptic_gt_VIPSeg_<split>.json" in line
