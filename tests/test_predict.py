"""`python -m isam2.predict` and the `Segmenter` API on the built-in data: unlabelled splits, video files, the VSPW
format, rendering, scoring where GT exists, bounded memory, and every bad input (entry points run in-process)."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from isam2.data.predictions import read_prediction

# Tiny AMG settings that find masklets with random SAM2 weights, and a window short enough for several per video.
MASKLETS = {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0, "points_per_side": 4, "window": 3}
MASKLET_OVERRIDES = [f"masklets.{k}={v}" for k, v in MASKLETS.items()]


def run_entry(module: str, args: list[str], monkeypatch, capsys) -> tuple[int, str]:
    """The real entry point `module.main` (Hydra, the user-error exit) in this process: (exit code, output)."""
    main = importlib.import_module(module).main
    monkeypatch.setattr(sys, "argv", [module, *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def head(dashboard_run) -> dict:
    """The tiny trained head of the dashboard run, its data and checkpoint."""
    metrics = json.loads((dashboard_run / "metrics.json").read_text())
    return {"ckpt": dashboard_run / metrics["checkpoint"], "data": dashboard_run.parent / "data"}


def unlabelled_copy(data: Path, dest: Path) -> Path:
    """The synthetic set with the val split's masks deleted (VSPW's test split ships none)."""
    shutil.copytree(data, dest)
    for video in (dest / "val.txt").read_text().split():
        shutil.rmtree(dest / "data" / video / "mask")
    return dest


def maps_of(folder: Path) -> dict[str, np.ndarray]:
    return {p.stem: read_prediction(p) for p in sorted(folder.glob("*.png"))}


def segmenter(head: dict):
    from isam2 import Segmenter

    return Segmenter.from_checkpoint(head["ckpt"], device="cpu", masklets={"source": "sam2", **MASKLETS})


def test_unlabelled_split_in_vspw_format_with_renders_equals_the_api(head, tmp_path, monkeypatch, capsys):
    import av

    from isam2.data import VSPW
    from isam2.data.labels import vspw_to_train

    root = unlabelled_copy(head["data"], tmp_path / "data")
    out = tmp_path / "out"
    args = [
        f"ckpt_path={head['ckpt']}",
        f"data.root={root}",
        f"output_dir={out}",
        f"hydra.run.dir={tmp_path}/run",
    ]
    code, output = run_entry(
        "isam2.predict", [*args, "output_format=vspw", "render=true", *MASKLET_OVERRIDES], monkeypatch, capsys
    )
    assert code == 0, output[-3000:]
    assert output.count("no video has ground truth") == 1
    record = json.loads((out / "predict.json").read_text())
    assert record["metrics"] is None and record["scored_videos"] == []
    api = segmenter(head)
    for video in VSPW(root, "val", require_masks=False):
        assert video.masks is None
        written = maps_of(out / video.id)
        assert list(written) == video.frame_names
        raw = np.stack(list(written.values()))
        assert set(np.unique(raw)) <= set(range(125))  # VSPW raw ids: 0 = none, 1..124 = classes
        frames = list(api.segment(video.frames[0].parent))  # the frame folder, through the API
        np.testing.assert_array_equal(vspw_to_train(raw), np.stack([f.semantic for f in frames]))
        entry = record["videos"][video.id]
        assert entry["frames"] == len(video) and entry["has_gt"] is False
        assert entry["masklets_per_frame"] == pytest.approx(np.mean([f.num_masklets for f in frames]))
        assert sum(entry["classes"].values()) + entry["uncovered"] == pytest.approx(1.0)
        # the overlays: one PNG per frame, and an .mp4 of as many frames that PyAV reads back
        assert sorted(p.stem for p in (out / "render" / video.id).glob("*.png")) == video.frame_names
        with av.open(str(out / "render" / f"{video.id}.mp4")) as container:
            assert sum(1 for _ in container.decode(video=0)) == len(video)
    assert not list(out.rglob(".*.tmp*"))


def test_an_mp4_gives_the_maps_of_its_decoded_frames_and_the_api_the_cli_maps(
    head, tmp_path, monkeypatch, capsys
):
    """A video file written here with PyAV, and the frames PyAV decodes from it saved as PNGs: the two inputs
    are the same pixels, so predict must write identical maps; the API given the file agrees frame by frame."""
    import av
    from PIL import Image

    from isam2.data import VSPW

    video = VSPW(head["data"], "val")[0]
    inputs = tmp_path / "inputs"
    (inputs / "clip_frames").mkdir(parents=True)
    with av.open(str(inputs / "clip.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width = video.size
        stream.pix_fmt = "yuv420p"
        for frame in video.load_frames():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    with av.open(str(inputs / "clip.mp4")) as container:
        for t, frame in enumerate(container.decode(video=0)):
            Image.fromarray(frame.to_ndarray(format="rgb24")).save(inputs / "clip_frames" / f"{t:05d}.png")
    out = tmp_path / "out"
    args = [
        f"ckpt_path={head['ckpt']}",
        f"input={inputs}",
        f"output_dir={out}",
        f"hydra.run.dir={tmp_path}/run",
    ]
    code, output = run_entry("isam2.predict", [*args, *MASKLET_OVERRIDES], monkeypatch, capsys)
    assert code == 0, output[-3000:]
    from_file, from_frames = maps_of(out / "clip"), maps_of(out / "clip_frames")
    assert list(from_file) == [f"{t:05d}" for t in range(len(video))] == list(from_frames)
    for name in from_file:
        np.testing.assert_array_equal(from_file[name], from_frames[name])
    api = [f.semantic for f in segmenter(head).segment(inputs / "clip.mp4")]
    np.testing.assert_array_equal(np.stack(api), np.stack(list(from_file.values())))
    assert any((m != 255).any() for m in api)  # the masklets were classified: not an all-void comparison


def test_a_labelled_split_is_scored_as_its_written_maps_score(head, tmp_path, monkeypatch, capsys):
    """Streamed scoring inside predict equals scoring the written PNGs whole, for every method of a base."""
    from isam2.data import VSPW
    from isam2.metrics import VideoSegmentationMetrics

    base = head["data"] / "base_predictions"
    out = tmp_path / "out"
    args = [
        f"ckpt_path={head['ckpt']}",
        f"data.root={head['data']}",
        f"output_dir={out}",
        f"hydra.run.dir={tmp_path}",
    ]
    code, output = run_entry(
        "isam2.predict",
        [*args, "segment.fill=base", f"base_pred_dir={base}", *MASKLET_OVERRIDES],
        monkeypatch,
        capsys,
    )
    assert code == 0, output[-3000:]
    record = json.loads((out / "predict.json").read_text())
    assert set(record["methods"]) == {"I-SAM2", "I-SAM2_base", "base", "SAM2-refiner"}
    assert record["metrics"]["method"] == "I-SAM2_base" and "I-SAM2_base" in output  # the table
    whole = VideoSegmentationMetrics(num_classes=124)
    for video in VSPW(head["data"], "val"):
        pred = np.stack(list(maps_of(out / video.id).values()))
        whole.update(torch.from_numpy(pred), torch.from_numpy(video.load_masks()))
    expected = whole.compute()
    for key in ("miou", "fwiou", "mbiou", "per_class_iou", "num_frames"):
        assert record["metrics"][key] == expected[key]


def test_frames_are_segmented_window_by_window(head):
    """Memory does not grow with length: frames are pulled from the input only a few windows ahead of the
    maps handed back (a long video's frames are never all held)."""
    from isam2.data.streams import ArrayStream

    rng = np.random.default_rng(0)
    pulled = []

    def frames():
        for t in range(23):
            pulled.append(t)
            yield rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)

    api = segmenter(head)
    lead = []
    for f in api.segment(ArrayStream(frames(), "long"), return_masklets=True, return_probs=True):
        lead.append(len(pulled) - f.index)
        assert f.probs.shape == (f.num_masklets, 124) and np.allclose(f.probs.sum(1), 1, atol=1e-5)
        assert set(np.unique(f.masklets)) <= {-1, *range(f.num_masklets)}
    assert len(lead) == 23
    assert max(lead) <= 3 * MASKLETS["window"]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, head) -> dict[str, Path]:
    """A folder of broken inputs: not a video, a truncated and an empty .mp4, frames of two sizes, a
    truncated frame, a checkpoint of something else, a head of 10 classes."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("bad")
    paths = {}
    paths["text"] = tmp / "notes.mp4"
    paths["text"].write_text("not a video")
    good = tmp / "good.mp4"
    import av

    with av.open(str(good), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        for t in range(6):
            frame = np.full((48, 64, 3), 20 * t, np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    paths["truncated"] = tmp / "cut.mp4"
    paths["truncated"].write_bytes(good.read_bytes()[:300])
    paths["empty"] = tmp / "empty.mp4"
    paths["empty"].write_bytes(b"")
    paths["sizes"] = tmp / "sizes"
    paths["sizes"].mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(paths["sizes"] / "00000.png")
    Image.fromarray(np.zeros((40, 64, 3), np.uint8)).save(paths["sizes"] / "00001.png")
    paths["unreadable"] = tmp / "unreadable"
    paths["unreadable"].mkdir()
    Image.fromarray(np.zeros((48, 64, 3), np.uint8)).save(paths["unreadable"] / "00000.png")
    data = (paths["unreadable"] / "00000.png").read_bytes()
    (paths["unreadable"] / "00001.png").write_bytes(data[: len(data) // 2])
    paths["not_head"] = tmp / "weights.ckpt"
    torch.save({"model": {"w": torch.zeros(2)}}, paths["not_head"])
    checkpoint = torch.load(head["ckpt"], map_location="cpu", weights_only=True)
    checkpoint["hyper_parameters"]["num_classes"] = 10
    paths["ten_classes"] = tmp / "ten.ckpt"
    torch.save(checkpoint, paths["ten_classes"])
    paths["other_sam2"] = tmp / "sam2_other.pt"
    paths["other_sam2"].write_bytes(b"other weights")
    return paths


@pytest.mark.parametrize(
    "case, overrides, named",
    [
        ("not a video", ["input={text}"], "{text}"),
        ("truncated mp4", ["input={truncated}"], "{truncated}"),
        ("zero frames", ["input={empty}"], "{empty}"),
        ("mixed sizes", ["input={sizes}"], "00001.png"),
        ("unreadable frame", ["input={unreadable}"], "00001.png"),
        ("missing input", ["input={text}.gone"], "input not found"),
        ("output over input", ["input={sizes}", "output_dir={sizes}"], "output_dir="),
        ("output inside input", ["input={sizes}", "output_dir={sizes}/out"], "lies inside"),
        ("not a head", ["ckpt_path={not_head}", "input={sizes}"], "{not_head}"),
        ("other features", ["sam2.checkpoint={other_sam2}", "input={sizes}"], "sam2.checkpoint"),
        ("vspw with 10 classes", ["ckpt_path={ten_classes}", "output_format=vspw", "input={sizes}"], "124"),
        ("bad format", ["output_format=png", "input={sizes}"], "output_format"),
    ],
)
def test_bad_input_is_one_named_error_line(
    head, bad_inputs, tmp_path, monkeypatch, capsys, case, overrides, named
):
    given = {k: str(v) for k, v in bad_inputs.items()}
    args = [o.format(**given) for o in overrides]
    if not any(a.startswith("ckpt_path=") for a in args):
        args.append(f"ckpt_path={head['ckpt']}")
    if not any(a.startswith("output_dir=") for a in args):
        args.append(f"output_dir={tmp_path}/out")
    code, output = run_entry("isam2.predict", [*args, f"hydra.run.dir={tmp_path}/run"], monkeypatch, capsys)
    assert code == 2, output[-3000:]
    assert named.format(**given) in error_line(output)
    assert not list(tmp_path.rglob(".*.tmp*"))  # nothing half-written
    for path in bad_inputs.values():  # inputs untouched
        assert path.exists()


def test_extract_refine_and_train_on_an_unlabelled_split(head, tmp_path, monkeypatch, capsys):
    """extract builds a store without targets, another store than the labelled one of the same frames;
    refine writes refined maps and scores nothing; train refuses the split, naming its first video."""
    from isam2.store.reader import MaskletStore

    root = unlabelled_copy(head["data"], tmp_path / "data")
    sam2_masklets = [
        "sam2.image_size=64",
        "masklets=sam2",
        *MASKLET_OVERRIDES,
        f"paths.store_dir={tmp_path}/stores",
    ]
    common = [f"data.root={root}", *sam2_masklets]
    code, output = run_entry("isam2.extract", [*common, f"hydra.run.dir={tmp_path}/x"], monkeypatch, capsys)
    assert code == 0, output[-3000:]
    store = MaskletStore(json.loads((tmp_path / "x" / "summary.json").read_text())["store"])
    assert store.manifest["targets"] == "none" and store.manifest["identity"]["data"]["targets"] == "none"
    assert (np.asarray(store.label) == 255).all() and len(store) > 0
    labelled = [f"data.root={head['data']}", *sam2_masklets]
    code, output = run_entry("isam2.extract", [*labelled, f"hydra.run.dir={tmp_path}/y"], monkeypatch, capsys)
    assert code == 0, output[-3000:]
    other = MaskletStore(json.loads((tmp_path / "y" / "summary.json").read_text())["store"])
    assert other.path != store.path
    assert other.manifest["targets"] == "all" and (np.asarray(other.label) != 255).any()

    refined = tmp_path / "refined"
    code, output = run_entry(
        "isam2.refine",
        [
            *common,
            f"base_pred_dir={head['data']}/base_predictions",
            f"output_dir={refined}",
            f"hydra.run.dir={tmp_path}/r",
        ],
        monkeypatch,
        capsys,
    )
    assert code == 0, output[-3000:]
    assert "nothing is scored" in output
    for video in (root / "val.txt").read_text().split():
        assert len(list((refined / video).glob("*.png"))) == len(
            list((root / "data" / video / "origin").glob("*.jpg"))
        )
    assert json.loads((refined / "metrics.json").read_text())["refined"] is None

    first = (root / "val.txt").read_text().split()[0]
    code, output = run_entry(
        "isam2.train",
        [*common, "data.train_split=val", "data.test_split=val", f"hydra.run.dir={tmp_path}/t"],
        monkeypatch,
        capsys,
    )
    assert (
        code == 2
        and f"video {first!r}" in error_line(output)
        and "no ground-truth masks" in error_line(output)
    )


def test_evaluate_refuses_a_split_that_mixes_labelled_and_unlabelled_videos(
    head, tmp_path, monkeypatch, capsys
):
    root = tmp_path / "data"
    shutil.copytree(head["data"], root)
    videos = (root / "val.txt").read_text().split()
    shutil.rmtree(root / "data" / videos[1] / "mask")
    args = [
        f"ckpt_path={head['ckpt']}",
        f"data.root={root}",
        f"paths.store_dir={tmp_path}/s",
        "sam2.image_size=64",
    ]
    code, output = run_entry("isam2.evaluate", [*args, f"hydra.run.dir={tmp_path}/e"], monkeypatch, capsys)
    assert code == 2
    line = error_line(output)
    assert "mixes videos with and without ground-truth masks" in line and f"video {videos[1]!r}" in line
