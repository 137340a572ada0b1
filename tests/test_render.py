"""isam2.render: rendered frames against brute force (blend, void, outlines, legend) and the videos it writes."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from isam2 import render
from isam2.constants import VOID
from isam2.viz import OUTLINE_COLOUR, class_colours, outline_mask

NAMES = ["sky", "grass", "road", "wall", "car", "person"]


def scene(h: int, w: int, seed: int = 0, t: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A smooth frame (codecs compress it well), a blocky semantic map with void, and an id map with -1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    frame = np.stack([(4 * xx + 3 * t) % 256, (5 * yy) % 256, (2 * (xx + yy)) % 256], -1).astype(np.uint8)
    semantic = np.full((h, w), VOID, np.uint8)
    semantic[h // 3 :, : w // 2] = 1
    semantic[: h // 2, w // 2 :] = 3
    semantic[2 * h // 3 :, 2 * w // 3 :] = 4
    id_map = np.full((h, w), -1, np.int64)
    id_map[h // 3 :, : w // 2] = 0
    id_map[2 * h // 3 :, 2 * w // 3 :] = 1 + int(rng.integers(0, 3))
    return frame, semantic, id_map


def outside_legend(semantic: np.ndarray, names=NAMES) -> np.ndarray:
    """[H,W] bool: the pixels the legend box leaves alone."""
    h, w = semantic.shape
    x0, y0, x1, y1 = render.legend_layout(render.legend_entries(semantic, names), h, w).box
    keep = np.ones((h, w), bool)
    keep[y0:y1, x0:x1] = False
    return keep


# ---- legend entries and layout ---------------------------------------------------------------------------
def test_legend_entries_match_a_brute_force_count():
    rng = np.random.default_rng(1)
    semantic = rng.choice([0, 2, 2, 5, 7, 7, 7, VOID], size=(23, 17)).astype(np.uint8)
    values, counts = np.unique(semantic, return_counts=True)
    expected = sorted(
        ((int(v), int(n)) for v, n in zip(values, counts) if v != VOID), key=lambda p: (-p[1], p[0])
    )
    entries = render.legend_entries(semantic, NAMES)
    assert [e.class_id for e in entries] == [c for c, _ in expected]
    assert [e.share for e in entries] == pytest.approx([n / semantic.size for _, n in expected])
    assert [e.name for e in entries] == [NAMES[c] if c < len(NAMES) else f"class_{c}" for c, _ in expected]
    assert render.legend_entries(np.full((4, 4), VOID, np.uint8), NAMES) == []


def test_legend_entries_refuse_negative_labels():
    with pytest.raises(ValueError, match="negative"):
        render.legend_entries(np.array([[0, -1]]), NAMES)


def test_legend_lists_at_most_twelve_classes_then_the_rest_as_more():
    semantic = np.repeat(np.arange(15, dtype=np.uint8), 8).reshape(10, 12)
    layout = render.legend_layout(render.legend_entries(semantic, None), 480, 640)
    assert len(layout.swatches) == render.LEGEND_MAX_ENTRIES
    assert len(layout.texts) == render.LEGEND_MAX_ENTRIES + 1
    assert layout.texts[-1][1] == "+3 more"


def solid_blocks(image: np.ndarray, colour: np.ndarray, size: int) -> bool:
    """Whether some size x size block of `image` is all `colour` (a swatch; text and shade never are)."""
    hit = np.all(image == colour, axis=-1).astype(np.int64)
    if hit.shape[0] < size or hit.shape[1] < size:
        return False
    sums = np.lib.stride_tricks.sliding_window_view(hit, (size, size)).sum((-1, -2))
    return bool((sums == size * size).any())


def test_legend_draws_a_swatch_of_exactly_the_classes_present():
    frame, semantic, id_map = scene(120, 160)
    image = render.render_frame(frame, semantic, id_map, NAMES)
    layout = render.legend_layout(render.legend_entries(semantic, NAMES), 120, 160)
    x0, y0, x1, y1 = layout.box
    colours = class_colours(256)
    present = {1, 3, 4}
    assert [c for c, _ in layout.swatches] == [e.class_id for e in render.legend_entries(semantic, NAMES)]
    for class_id, (sx0, sy0, sx1, sy1) in layout.swatches:
        assert (image[sy0:sy1, sx0:sx1] == colours[class_id]).all()
    legend = image[y0:y1, x0:x1]
    side = layout.font_size // 2
    for class_id in range(20):  # the first 20 colours (tab20) are all distinct
        assert solid_blocks(legend, colours[class_id], side) == (class_id in present), class_id
    # the names are drawn: the box holds white-ish text pixels besides the shade and the swatches
    assert (legend.min(-1) > 200).sum() > 10


def test_legend_box_shades_the_frame_and_stays_in_its_corner():
    frame = np.full((90, 120, 3), 200, np.uint8)
    semantic = np.full((90, 120), VOID, np.uint8)
    semantic[60:, 80:] = 2
    image = render.render_frame(frame, semantic, None, NAMES)
    x0, y0, x1, y1 = render.legend_layout(render.legend_entries(semantic, NAMES), 90, 120).box
    assert (x0, y0) == (0, 0) and x1 < 120 and y1 < 90
    box = image[y0:y1, x0:x1]
    assert (box == round(200 * render.LEGEND_SHADE)).all(-1).mean() > 0.5  # mostly shade
    assert (image[y1:, :60] == 200).all() and (image[:60, x1:80] == 200).all()


# ---- the rendered frame outside the legend -----------------------------------------------------------------
@pytest.mark.parametrize("alpha", [0.5, 0.3])
def test_rendered_pixels_are_frame_blend_or_outline(alpha):
    frame, semantic, id_map = scene(96, 128, seed=2)
    rng = np.random.default_rng(3)
    frame = rng.integers(0, 256, frame.shape, dtype=np.uint8)  # every pixel different: no lucky matches
    image = render.render_frame(frame, semantic, id_map, NAMES, alpha=alpha)
    assert image.shape == frame.shape and image.dtype == np.uint8
    outline = outline_mask(id_map)
    free = outside_legend(semantic)
    colours = class_colours(256)
    checked = {"void": 0, "class": 0, "outline": 0}
    for y, x in zip(*np.nonzero(free)):
        got = image[y, x].tolist()
        if outline[y, x]:
            assert got == OUTLINE_COLOUR.tolist()
            checked["outline"] += 1
        elif semantic[y, x] == VOID:
            assert got == frame[y, x].tolist()
            checked["void"] += 1
        else:
            colour = colours[semantic[y, x]]
            want = [round((1 - alpha) * float(f) + alpha * float(c)) for f, c in zip(frame[y, x], colour)]
            assert got == want, (y, x)
            checked["class"] += 1
    assert min(checked.values()) > 50


def test_render_without_id_map_draws_no_outline():
    frame, semantic, id_map = scene(64, 80)
    plain = render.render_frame(frame, semantic, None, NAMES)
    outlined = render.render_frame(frame, semantic, id_map, NAMES)
    free = outside_legend(semantic)
    differ = (plain != outlined).any(-1) & free
    assert differ.any() and np.array_equal(differ, outline_mask(id_map) & free)


@pytest.mark.parametrize("size", [(32, 48), (5, 7), (1, 1), (720, 1280)])
def test_render_any_frame_size(size):
    frame, semantic, id_map = scene(*size)
    image = render.render_frame(frame, semantic, id_map, None)
    assert image.shape == (*size, 3) and image.dtype == np.uint8


def test_size_mismatch_raises():
    frame, semantic, id_map = scene(30, 40)
    with pytest.raises(ValueError, match="semantic map"):
        render.render_frame(frame, semantic[:-1], id_map, NAMES)
    with pytest.raises(ValueError, match="id map"):
        render.render_frame(frame, semantic, id_map[:, :-1], NAMES)
    with pytest.raises(ValueError, match="frame"):
        render.render_frame(frame[..., 0], semantic, id_map, NAMES)


# ---- videos ------------------------------------------------------------------------------------------------
def test_even_size_pads_one_black_row_and_column():
    image = np.full((3, 5, 3), 9, np.uint8)
    padded = render.even_size(image)
    assert padded.shape == (4, 6, 3)
    assert (padded[:3, :5] == 9).all() and (padded[3] == 0).all() and (padded[:, 5] == 0).all()
    assert render.even_size(padded) is padded


def test_frame_rate_is_exact():
    assert render.frame_rate(29.97) == Fraction(30000, 1001)
    assert render.frame_rate(23.976) == Fraction(24000, 1001)
    assert render.frame_rate(25) == 25 and render.frame_rate(12.5) == Fraction(25, 2)


def decode(path: Path) -> tuple[list[np.ndarray], Fraction, str]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        return frames, stream.average_rate, stream.codec_context.pix_fmt


def render_video(out: Path, size: tuple[int, int], **kwargs) -> tuple[Path | None, list[np.ndarray]]:
    rendered = []
    with render.VideoRenderer(out, "vid", 29.97, NAMES, **kwargs) as renderer:
        for t in range(12):
            frame, semantic, id_map = scene(*size, seed=t, t=t)
            renderer.add(f"{t:05d}", frame, semantic, id_map)
            rendered.append(render.render_frame(frame, semantic, id_map, NAMES))
    return renderer.close(), rendered


@pytest.mark.parametrize("size", [(30, 46), (31, 45)])
def test_video_renderer_writes_pngs_and_a_playable_mp4(tmp_path, size):
    path, rendered = render_video(tmp_path, size)
    assert path == tmp_path / "vid.mp4" and path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vid", "vid.mp4"]  # no temporary file left
    assert sorted(p.name for p in (tmp_path / "vid").iterdir()) == [f"{t:05d}.png" for t in range(12)]
    for t, want in enumerate(rendered):
        assert np.array_equal(np.asarray(Image.open(tmp_path / "vid" / f"{t:05d}.png")), want)
    frames, rate, pix_fmt = decode(path)
    even = (size[0] + size[0] % 2, size[1] + size[1] % 2, 3)
    assert len(frames) == 12 and all(f.shape == even for f in frames)
    assert rate == Fraction(30000, 1001) and pix_fmt == "yuv420p"
    for got, want in zip(frames, rendered):
        diff = np.abs(got[: size[0], : size[1]].astype(np.int64) - want)
        assert diff.mean() < 12


def test_mpeg4_when_ffmpeg_lacks_libx264(tmp_path, monkeypatch):
    monkeypatch.setattr(render, "video_codec", lambda: "mpeg4")
    path, rendered = render_video(tmp_path, (31, 45))
    frames, _, _ = decode(path)
    assert len(frames) == 12 and frames[0].shape == (32, 46, 3)
    assert np.mean([np.abs(g[:31, :45].astype(np.int64) - w).mean() for g, w in zip(frames, rendered)]) < 12


def test_an_error_in_the_block_leaves_no_video(tmp_path):
    with pytest.raises(RuntimeError, match="boom"):
        with render.VideoRenderer(tmp_path, "vid", 25, NAMES) as renderer:
            for t in range(3):
                renderer.add(f"{t:05d}", *scene(30, 46, t=t))
            raise RuntimeError("boom")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vid"]  # the PNGs written, no .mp4, no temporary
    assert renderer.close() is None


def test_frames_only_or_video_only(tmp_path):
    frames_dir, video_dir = tmp_path / "frames", tmp_path / "video"
    with render.VideoRenderer(frames_dir, "vid", 25, NAMES, write_video=False) as renderer:
        renderer.add("a", *scene(30, 46))
    assert renderer.close() is None and sorted(p.name for p in frames_dir.iterdir()) == ["vid"]
    path, _ = render_video(video_dir, (30, 46), write_frames=False)
    assert path is not None and sorted(p.name for p in video_dir.iterdir()) == ["vid.mp4"]


def test_no_frames_no_video(tmp_path):
    with render.VideoRenderer(tmp_path / "out", "vid", 25, NAMES) as renderer:
        pass
    assert renderer.close() is None and not (tmp_path / "out").exists()


def test_a_frame_of_another_size_is_refused(tmp_path):
    with pytest.raises(ValueError, match="differs from its first frame"):
        with render.VideoRenderer(tmp_path, "vid", 25, NAMES, write_frames=False) as renderer:
            renderer.add("a", *scene(30, 46))
            renderer.add("b", *scene(32, 46))
    assert list(tmp_path.iterdir()) == []
