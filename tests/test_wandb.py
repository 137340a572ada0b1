"""An offline wandb training run, read back from its run file: config, name/tags/group, table, images, summary, artifacts."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import pytest

WANDB_OVERRIDES = [
    "logger=wandb",
    "+tags=[tiny,test]",
]
HEADER = b":W&B" + struct.pack("<HB", 0xBEE1, 0)  # wandb's transaction log: magic, key 0xBEE1, version 0
BLOCK = 32 * 1024  # the LevelDB log format: 32 KiB blocks of records, 7-byte record headers
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_wandb_records(path: Path) -> list[Any]:
    """Every protobuf `Record` of an offline run file (`run-<id>.wandb`). wandb >= 0.18 writes it from its Go
    core and has no Python reader any more; its layout is LevelDB's log format behind a 7-byte header."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[: len(HEADER)] == HEADER, f"{path} is not a wandb run file"
    records, pending, pos = [], b"", len(HEADER)
    while pos + 7 <= len(data):
        room = BLOCK - pos % BLOCK
        if room < 7:  # a block's tail too short for a header is padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 0 and length == 0:  # zero padding at the end of a block
            pos += BLOCK - pos % BLOCK if pos % BLOCK else 0
            continue
        pending = payload if kind in (FULL, FIRST) else pending + payload
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def run_contents(run_dir: Path) -> dict[str, Any]:
    """What the offline run file holds: run settings, config, logged keys, summary, artifacts."""
    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1, f"expected one offline run under {run_dir}/wandb, found {files}"
    contents: dict[str, Any] = {"config": {}, "history": {}, "summary": {}, "artifacts": [], "files": []}
    for record in read_wandb_records(files[0]):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run = record.run
            contents["run"] = {
                "name": run.display_name,
                "group": run.run_group,
                "job_type": run.job_type,
                "tags": list(run.tags),
                "project": run.project,
            }
            contents["config"].update({u.key: json.loads(u.value_json) for u in run.config.update})
        elif kind == "config":
            contents["config"].update({u.key: json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            for item in record.history.item:
                _put(contents["history"], item, json.loads(item.value_json))
        elif kind == "summary":
            for item in record.summary.update:
                _put(contents["summary"], item, json.loads(item.value_json))
        elif kind == "artifact":
            contents["artifacts"].append(
                {
                    "name": record.artifact.name,
                    "type": record.artifact.type,
                    "files": [m.path for m in record.artifact.manifest.contents],
                }
            )
        elif kind == "files":
            contents["files"].extend(f.path for f in record.files.files)
    return contents


def _put(tree: dict[str, Any], item: Any, value: Any) -> None:
    """A history or summary item into `tree`: media arrive as one item per field under a nested key
    (e.g. ["test/confusion_matrix", "_type"]), which becomes tree["test/confusion_matrix"]["_type"]."""
    keys = [item.key] if item.key else list(item.nested_key)
    for key in keys[:-1]:
        tree = tree.setdefault(key, {})
    tree[keys[-1]] = value


@pytest.fixture(scope="module")
def wandb_run(dashboard_run: Path) -> tuple[Path, dict[str, Any]]:
    return dashboard_run, run_contents(dashboard_run)


def test_offline_run_holds_the_full_resolved_config(wandb_run):
    run_dir, contents = wandb_run
    config = contents["config"]
    saved = _saved_config(run_dir)
    for group in ("data", "sam2", "masklets", "trainer", "model", "metrics", "datamodule", "segment"):
        assert config.get(group) == saved[group], group
    assert config["data"]["root"] == saved["data"]["root"] and config["tags"] == ["tiny", "test"]


def test_offline_run_is_named_tagged_and_grouped(wandb_run):
    run_dir, contents = wandb_run
    run = contents["run"]
    saved = _saved_config(run_dir)
    assert run["job_type"] == "train" and run["group"] == saved["data"]["name"] == "synthetic"
    assert sorted(run["tags"]) == ["test", "tiny"]
    # the overrides that say what the run does, not where its files are
    assert run["name"].startswith("train-synthetic[") and "trainer.max_epochs=3" in run["name"]
    assert "data.root" not in run["name"] and "paths.store_dir" not in run["name"]


def test_run_names_keep_what_a_job_does():
    from isam2.callbacks.wandb_media import run_name

    overrides = ["data.root=/d", "+tags=[a]", "model.optimizer.lr=0.01", "seed=2", "paths.store_dir=/s"]
    assert run_name("train-vspw", overrides) == "train-vspw[model.optimizer.lr=0.01,seed=2]"
    assert run_name("train-vspw", ["hydra.run.dir=/r"]) == "train-vspw"


def test_offline_run_holds_the_table_figures_and_summary(wandb_run):
    run_dir, contents = wandb_run
    history, summary = contents["history"], contents["summary"]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    table = history["test/per_class_iou_table"]
    assert table["_type"] == "table-file" and table["ncols"] == 3
    # one row per class with an IoU in metrics.json: its id, its NAME and that IoU
    offline = next((run_dir / "wandb").glob("offline-run-*"))
    rows = json.loads((offline / "files" / table["path"]).read_text())["data"]
    names = json.loads((run_dir.parent / "data" / "label_num_dic_final.json").read_text())
    by_id = {raw - 1: name for name, raw in names.items()}
    expected = [
        [i, by_id.get(i, f"class_{i}"), v] for i, v in enumerate(metrics["per_class_iou"]) if v is not None
    ]
    assert [r[:2] for r in rows] == [e[:2] for e in expected] and "grass" in {r[1] for r in rows}
    assert [r[2] for r in rows] == pytest.approx([e[2] for e in expected])
    for key in ("test/confusion_matrix", "test/per_class_iou"):
        assert history[key]["_type"] == "image-file", key
    assert history["test/overlays"]["_type"] == "images/separated" and history["test/overlays"]["count"] == 8
    assert summary["final/miou"] == pytest.approx(metrics["miou"])
    assert summary["final/I-SAM2/miou"] == pytest.approx(metrics["methods"]["I-SAM2"]["miou"])
    best = summary["best/selection/miou"]
    assert 0.0 <= best <= 1.0 and summary["best/checkpoint"].endswith(Path(metrics["checkpoint"]).name)
    assert f"miou{best:.4f}" in metrics["checkpoint"]  # the monitored score the checkpoint is named after


def test_offline_run_holds_the_artifacts(wandb_run):
    run_dir, contents = wandb_run
    by_type = {a["type"]: a for a in contents["artifacts"]}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert by_type["model"]["files"] == [Path(metrics["checkpoint"]).name]
    assert by_type["metrics"]["files"] == ["metrics.json"]


def test_figures_are_saved_without_wandb_too(wandb_run):
    from PIL import Image

    run_dir, _ = wandb_run
    figures = sorted(p.name for p in (run_dir / "figures").glob("*.png"))
    assert "confusion_matrix.png" in figures and "per_class_iou.png" in figures
    overlays = [f for f in figures if f.startswith("overlay_")]
    assert len(overlays) == 8 and {f.rsplit("_", 1)[-1] for f in overlays} == {"prediction.png", "truth.png"}
    for name in figures:
        with Image.open(run_dir / "figures" / name) as im:
            assert im.width > 100 and im.height > 100


def _saved_config(run_dir: Path) -> dict[str, Any]:
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(run_dir / ".hydra" / "config.yaml")
    cfg.paths.output_dir = str(run_dir)  # ${hydra:runtime.output_dir} needs Hydra's runtime
    del cfg["logger"]  # its name holds ${hydra:job.override_dirname}, also Hydra's runtime
    return OmegaConf.to_container(cfg, resolve=True)


def _painted_videos(seed: int = 0) -> list[Any]:
    import numpy as np
    import torch

    from isam2.model.batches import PaintedVideo

    rng = np.random.default_rng(seed)
    videos = []
    for v in range(3):
        gt = torch.from_numpy(rng.choice([0, 1, 2, 255], size=(3, 8, 12)).astype(np.uint8))
        pred = torch.from_numpy(rng.choice([0, 1, 2, 255], size=(3, 8, 12)).astype(np.uint8))
        ids = torch.from_numpy(rng.integers(-1, 3, size=(3, 8, 12)))
        names = [f"{t:05d}" for t in range(3)]
        videos.append(PaintedVideo(f"v{v}", names, gt, ids, {"isam2": pred}, "isam2"))
    return videos


def _run_callback(videos: list[Any], output_dir: Path) -> Any:
    from types import SimpleNamespace

    import torch

    from isam2.callbacks.wandb_media import WandbMedia

    trainer = SimpleNamespace(
        global_rank=0, loggers=[], checkpoint_callbacks=[], default_root_dir=str(output_dir)
    )
    module = SimpleNamespace(hparams=SimpleNamespace(num_classes=3), device=torch.device("cpu"))
    callback = WandbMedia(num_overlays=2, class_names=["sky", "grass", "road"])
    callback.on_test_epoch_start(trainer, module)
    for i, video in enumerate(videos):
        callback.on_test_batch_end(trainer, module, video, {}, i)
    callback.on_test_end(trainer, module)
    return callback


def test_media_callback_without_wandb_writes_figures_of_a_fixed_sample(tmp_path):
    """No WandbLogger: PNGs only. The confusion sums every video; the overlay frames are the same whatever
    order the videos come in."""
    import numpy as np

    from isam2.callbacks.wandb_media import frame_key

    videos = _painted_videos()
    forward = _run_callback(videos, tmp_path / "a")
    backward = _run_callback(videos[::-1], tmp_path / "b")
    expected = np.zeros((3, 4), np.int64)
    for video in videos:
        for p, g in zip(video.predictions["isam2"].numpy().ravel(), video.gt.numpy().ravel()):
            if g != 255:
                expected[g, p if p < 3 else 3] += 1
    assert np.array_equal(forward.confusion.compute().numpy(), expected)
    keys = sorted((frame_key(0, v.video, f), v.video, f) for v in videos for f in v.frame_names)[:2]
    chosen = [f"overlay_{video}_{frame}_prediction" for _, video, frame in keys]
    assert [n for n in forward.figures if n.endswith("_prediction")] == chosen
    assert list(forward.figures) == list(backward.figures)
    assert all(path.is_file() for path in forward.figures.values())
    assert sorted(p.name for p in (tmp_path / "a" / "figures").iterdir()) == sorted(
        f"{n}.png" for n in forward.figures
    )


def test_finish_wandb_ends_the_active_run(monkeypatch):
    """Each job of a sweep gets a run of its own only if the previous job's run is finished (a stand-in wandb
    module: a real offline run costs ~10 s of service start-up; the dashboard run covers the real one)."""
    import sys
    from types import SimpleNamespace

    from isam2.callbacks.wandb_media import finish_wandb

    finished = []
    fake = SimpleNamespace(run=object(), finish=lambda: (finished.append(True), setattr(fake, "run", None)))
    monkeypatch.setitem(sys.modules, "wandb", fake)
    finish_wandb()
    assert finished == [True] and fake.run is None
    finish_wandb()  # no active run: nothing to finish
    assert finished == [True]
    monkeypatch.delitem(sys.modules, "wandb")
    finish_wandb()  # wandb never imported: nothing to do, and no import of it
    assert "wandb" not in sys.modules
