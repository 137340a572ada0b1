"""The paper's presets (conf/experiment/paper/): each names its table and row, holds the paper's settings and
sweep values, and runs tiny on the built-in data with random weights; the paper's five columns; no citation of
a document the repository lacks."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from isam2.data.synthetic import ensure_synthetic
from isam2.metrics.report import format_table, mvc_videos, mvc_videos_note, paper_columns
from tests.train_helpers import REPO, TINY_DATA, run_cli

CONF = REPO / "conf"
PAPER = CONF / "experiment" / "paper"
PRESETS = sorted(p.stem for p in PAPER.glob("*.yaml"))
# Sec. 3 and Tables 4-7 of the paper, typed in from the text: the settings and the swept values.
SEC3 = {"window": 32, "points_per_side": 16, "pred_iou_thresh": 0.6, "stability_score_thresh": 0.8}
SEC3["stability_score_offset"] = 0.9
SWEEPS = {
    "table4_window": ("masklets.window", [1, 2, 4, 8, 10, 16, 32]),
    "table5_grid": ("masklets.points_per_side", [8, 16, 32, 64]),
    "table6_iou": ("masklets.pred_iou_thresh", [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]),
    "table7_stability": ("masklets.stability_score_thresh", [0.4, 0.5, 0.6, 0.7, 0.8, 0.9]),
}
ROW_LINE = re.compile(r'^# Table [1-7], rows? "[^"]+"')


def _header(name: str) -> list[str]:
    """The preset's leading comment lines."""
    lines = (PAPER / f"{name}.yaml").read_text().splitlines()
    return [line for line in lines[: next(i for i, s in enumerate(lines) if not s.startswith("#"))]]


def _entry(name: str) -> str:
    """The entry point its command line names (the last `python -m isam2.<x>`), train when it names none."""
    commands = re.findall(r"python -m isam2\.(\w+)", "\n".join(_header(name)))
    return commands[-1] if commands else "train"


def _uses_segformer(name: str) -> bool:
    """Whether the preset, or a preset it extends, sets `encoder: segformer`."""
    defaults = yaml.safe_load((PAPER / f"{name}.yaml").read_text()).get("defaults", [])
    for entry in defaults:
        if entry == {"override /encoder": "segformer"}:
            return True
        if isinstance(entry, str) and entry.startswith("/experiment/paper/"):
            return _uses_segformer(entry.rsplit("/", 1)[1])
    return False


def _experiment(entry: str, name: str) -> str:
    """`experiment=` where the entry's config has an experiment slot, else `+experiment=` (appended)."""
    defaults = yaml.safe_load((CONF / f"{entry}.yaml").read_text()).get("defaults", [])
    has_slot = any(isinstance(d, dict) and "experiment" in d for d in defaults)
    return f"{'' if has_slot else '+'}experiment=paper/{name}"


@functools.cache
def _composed(entry: str, overrides: tuple[str, ...]):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose(entry, overrides=list(overrides), return_hydra_config=True)


def _compose(entry: str, overrides: list[str]):
    return _composed(entry, tuple(overrides))


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_names_its_row_and_composes(name):
    header = _header(name)
    assert header[0] == "# @package _global_"
    assert ROW_LINE.match(header[1]), f"{name}: the first comment line must name its table and row"
    entry = _entry(name)
    overrides = [_experiment(entry, name), "base_pred_dir=/tmp/base", "paths.output_dir=/tmp/x"]
    cfg = _compose(entry, overrides)
    resolved = OmegaConf.to_container(cfg, resolve=False)
    assert resolved["data"]["num_classes"] == 124
    if name.startswith("table") or name.endswith("refiner") or name in ("isam2", "isam2_base"):
        assert cfg.masklets.source == "sam2" and cfg.sam2.image_size == 1024
        assert {k: cfg.masklets[k] for k in SEC3} == SEC3
    if entry == "refine":
        assert cfg.refine.vote == "frame" and cfg.data.split == "val"


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_sweeps_hold_exactly_the_papers_values(name):
    key, values = SWEEPS[name]
    cfg = _compose(
        "refine", [_experiment("refine", name), "base_pred_dir=/tmp/base", "paths.output_dir=/tmp/x"]
    )
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    assert list(params) == [key]
    assert [float(v) for v in str(params[key]).split(",")] == values
    assert cfg.hydra.callbacks.comparison._target_ == "isam2.callbacks.sweep_comparison.PaperComparison"
    assert cfg.hydra.callbacks.comparison.table == f"Table {name[5]}"


def test_table_rows_are_all_present():
    tables = {int(m.group(1)) for n in PRESETS if (m := re.match(r"^# Table (\d)", _header(n)[1]))}
    assert tables >= set(range(1, 8))
    assert {"sam2_refiner", "vipseg_refiner", "isam2", "isam2_base", *SWEEPS} <= set(PRESETS)


def test_paper_minimal_has_no_tricks():
    cfg = _compose("train", ["experiment=paper/isam2_minimal", "paths.output_dir=/tmp/x"])
    model = cfg.model
    assert model.head.depth == 0 and model.scheduler is None and model.label_smoothing == 0.0
    assert model.min_purity == 0.0 and model.class_weighting == "none" and not model.purity_weighting


# ---- tiny runs of every preset (the expensive part: three processes, stores shared) ----


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    root = tmp_path_factory.mktemp("paper")
    ensure_synthetic(root / "data", TINY_DATA)  # with its noisy base predictions
    return root


def _tiny(shared: Path) -> list[str]:
    return [
        "data=synthetic",
        f"data.root={shared}/data",
        *(
            f"data.generate.{k}={getattr(TINY_DATA, k)}"
            for k in ("num_train", "num_val", "num_test", "min_frames", "max_frames", "height", "width")
        ),
        "sam2=hiera_t",
        "sam2.image_size=64",
        f"paths.store_dir={shared}/stores",
        "base_pred_dir=${data.base_predictions}",
    ]


def _multirun(entry: str, shared: Path, sweep: str, overrides: list[str]) -> Path:
    sweep_dir = shared / sweep
    run_cli(f"isam2.{entry}", ["--multirun", *overrides, *_tiny(shared), f"hydra.sweep.dir={sweep_dir}"])
    return sweep_dir


@pytest.fixture(scope="module")
def refiner_runs(shared):
    """Every refine preset once, the sweep presets at their defaults, in one multirun: one store serves all."""
    names = [n for n in PRESETS if _entry(n) == "refine"]
    experiment = _experiment("refine", names[0]).split("=")[0]
    choices = ",".join(f"paper/{n}" for n in names)
    return names, _multirun("refine", shared, "refiners", [f"{experiment}={choices}"])


@pytest.fixture(scope="module")
def window_sweep(shared, refiner_runs):
    """Table 4's sweep cut to two windows (32 reuses the refiners' store), comparison table included."""
    values = "1,32"
    sweep = _multirun(
        "refine", shared, "table4", [_experiment("refine", "table4_window"), f"masklets.window={values}"]
    )
    return sweep, values


@pytest.fixture(scope="module")
def train_runs(shared, refiner_runs):
    """Every train preset for one epoch, in two multiruns (their val store is the refiners'): the MiT presets
    with their encoder at 64 px instead of the paper's 480x853 (the frames are 64x96), the others as they are."""
    names = [n for n in PRESETS if _entry(n) == "train"]
    common = [
        "trainer=cpu",
        "trainer.max_epochs=1",
        "datamodule.batch_size=16",
        "logger=csv",
        "callbacks.rich_progress_bar=null",
        "figures=false",
    ]
    mit = [n for n in names if _uses_segformer(n)]
    # ++ because a multirun composes its shared config without the swept experiment, where encoder.segformer
    # does not exist yet.
    groups = {
        "trains": ([n for n in names if n not in mit], []),
        "trains_mit": (mit, ["++encoder.segformer.input_size=64"]),
    }
    sweeps = [
        _multirun(
            "train", shared, sweep, [f"experiment={','.join(f'paper/{n}' for n in group)}", *common, *extra]
        )
        for sweep, (group, extra) in groups.items()
        if group
    ]
    return [n for group, _ in groups.values() for n in group], sweeps


def _job_metrics(sweep_dir: Path) -> list[dict]:
    jobs = sorted((p for p in sweep_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    return [json.loads((job / "metrics.json").read_text()) for job in jobs]


def test_refiner_presets_run_tiny(refiner_runs):
    names, sweep_dir = refiner_runs
    metrics = _job_metrics(sweep_dir)
    assert len(metrics) == len(names)
    for m in metrics:
        methods = m.get("methods", m)
        assert {"base"} <= set(methods) and methods["base"]["num_videos"] == TINY_DATA.num_val


def test_train_presets_run_tiny(train_runs):
    names, sweep_dirs = train_runs
    metrics = [m for sweep_dir in sweep_dirs for m in _job_metrics(sweep_dir)]
    assert len(metrics) == len(names)
    for m in metrics:
        assert "I-SAM2" in json.dumps(m)


def test_a_sweep_writes_one_comparison_table(window_sweep):
    sweep_dir, values = window_sweep
    comparison = json.loads((sweep_dir / "comparison.json").read_text())
    assert comparison["table"] == "Table 4" and comparison["swept"] == ["masklets.window"]
    assert [row["masklets.window"] for row in comparison["rows"]] == values.split(",")
    for row, metrics in zip(comparison["rows"], _job_metrics(sweep_dir), strict=True):
        refined = metrics.get("methods", metrics)
        refined = refined.get("SAM2-refiner") or refined["refined"]
        # brute force: the job's own fractions, in percent, to one decimal
        assert row["columns"]["mIoU"] == pytest.approx(round(100 * refined["miou"], 1), abs=1e-9)
        assert row["columns"]["mBIoU"] == pytest.approx(round(100 * refined["mbiou"], 1), abs=1e-9)
    text = (sweep_dir / "comparison.md").read_text()
    assert "| masklets.window | mIoU | WIoU | mBIoU | mVC8 | mVC16 |" in text
    assert "| 1 |" in text and "| 32 |" in text and "| base |" in text
    assert "Protocol: mIoU over classes present in GT" in text


# ---- the paper's five columns ----


def test_paper_columns_percent_one_decimal_and_protocol():
    protocol = {"miou_classes": "gt", "vc_protocol": "cffm", "vc_lengths": [8, 16], "boundary_width": 5}
    result = {"miou": 0.40312, "fwiou": 0.6108, "mbiou": 0.29349, "mvc8": 0.894, "mvc16": None}
    result["protocol"] = protocol
    got = paper_columns(result)
    assert got["columns"] == {"mIoU": 40.3, "WIoU": 61.1, "mBIoU": 29.3, "mVC8": 89.4, "mVC16": None}
    assert "present in GT" in got["protocol"] and "CFFM" in got["protocol"] and "5x5" in got["protocol"]
    other = paper_columns(result, {**protocol, "vc_protocol": "paper", "miou_classes": "union"})
    assert "Eq. 4 is printed" in other["protocol"] and "mmseg" in other["protocol"]
    table = format_table({"SAM2-CFFM": result})
    assert table.splitlines()[2].split() == ["SAM2-CFFM", "40.3", "61.1", "29.3", "89.4", "-"]
    assert table.splitlines()[-1] == f"protocol: {got['protocol']}"


def _scored(frames: int, n: int, protocol: str) -> bool:
    """Whether a protocol scores any window of a video, as docs/metrics.md states it."""
    return {"cffm": frames > 16 and frames - n >= 1, "vspw": frames > n, "paper": frames >= n}[protocol]


@pytest.mark.parametrize("protocol", ["cffm", "vspw", "paper"])
def test_mvc_videos_counts_what_each_protocol_skips(protocol):
    frames = [3, 7, 8, 9, 15, 16, 17, 18, 24, 40]
    got = mvc_videos(frames, [8, 16], protocol)
    for n in (8, 16):
        counted = [t for t in frames if _scored(t, n, protocol)]
        skipped = [t for t in frames if not _scored(t, n, protocol)]
        assert got[f"mvc{n}"] == {"counted": len(counted), "of": len(frames), "skipped_up_to": max(skipped)}
        assert max(skipped) < min(counted)  # "skipped: <= k frames" describes them exactly
    assert mvc_videos([40, 50], [8, 16], protocol)["mvc16"]["counted"] == 2


def test_mvc_videos_note_in_the_protocol_line():
    cffm = mvc_videos([10, 20, 30], [8, 16], "cffm")
    assert mvc_videos_note(cffm) == "mVC8 and mVC16 over 2 of 3 videos: 1 has <= 16 frames"
    vspw = mvc_videos([5, 10, 12, 30], [8, 16], "vspw")
    assert mvc_videos_note(vspw) == (
        "mVC8 over 3 of 4 videos: 1 has <= 8 frames; mVC16 over 1 of 4 videos: 3 have <= 16 frames"
    )
    assert mvc_videos_note(mvc_videos([20, 30], [8, 16], "cffm")) is None  # nothing skipped: no note
    result = {"miou": 0.5, "protocol": {"miou_classes": "gt", "vc_protocol": "cffm", "boundary_width": 5}}
    last = format_table({"a": result, "b": result}, protocol_note=mvc_videos_note(cffm)).splitlines()[-1]
    assert last.startswith("protocol: mIoU over classes present in GT")
    assert last.endswith("; mVC8 and mVC16 over 2 of 3 videos: 1 has <= 16 frames")


# ---- citations ----

PROJECT_FILES = [
    p
    for top in ("isam2", "conf", "tests", "docs", "scripts", "benchmarks", "notebooks")
    for p in (REPO / top).rglob("*")
    if p.is_file() and p.suffix in {".py", ".md", ".yaml", ".yml", ".sh", ".ipynb", ".toml", ".txt"}
] + [REPO / n for n in ("README.md", "Makefile", "pyproject.toml", "Dockerfile") if (REPO / n).is_file()]


def test_no_file_cites_a_document_the_repository_lacks():
    documents = {p.name for p in PROJECT_FILES if p.suffix == ".md"}
    documents |= {"comparison.md"}  # written by every sweep (isam2/pipelines/compare.py)
    missing = []
    for path in PROJECT_FILES:
        if path == Path(__file__).resolve():
            continue  # this test holds the patterns it looks for
        text = path.read_text(errors="replace")
        for cited in re.findall(r"[\w./-]*\w\.md\b", text):
            if "://" not in cited and Path(cited).name not in documents:
                missing.append(f"{path.relative_to(REPO)}: {cited}")
        # notes that live beside the repository, not in it (a cited .md among them fails the check above)
        for outside in re.findall(r"(?:\.\./|/work/)shared/[\w./-]*", text):
            missing.append(f"{path.relative_to(REPO)}: {outside}")
    assert not missing, "cited documents the repository does not have:\n" + "\n".join(missing)
