"""Colour overlays of predicted semantic maps: rendered frames, their PNGs, one streamed .mp4 per video."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont, features

from isam2.constants import VOID
from isam2.files import atomic_file
from isam2.viz import OUTLINE_COLOUR, class_colours, class_name, outline_mask, overlay_image

LEGEND_MAX_ENTRIES = 12  # more rows than this hide the frame; the rest is summed up as "+k more"
# the legend box darkens the frame under it to this share, so white text reads on any scene
LEGEND_SHADE = 0.35
TEXT_COLOUR = (255, 255, 255)


class LegendEntry(NamedTuple):
    """One class present in a frame: its id, its name and its share of the frame's pixels."""

    class_id: int
    name: str
    share: float


@dataclass(frozen=True)
class LegendLayout:
    """Where the legend goes, in pixels of the frame (may reach past it: drawing clips).

    box: (x0, y0, x1, y1) of the shaded box, swatches: (class id, (x0, y0, x1, y1)) per swatch,
    texts: ((x, y), text) per line; end coordinates are exclusive."""

    box: tuple[int, int, int, int]
    swatches: list[tuple[int, tuple[int, int, int, int]]]
    texts: list[tuple[tuple[int, int], str]]
    font_size: int


def legend_entries(
    semantic: np.ndarray, class_names: Sequence[str] | None, void: int = VOID
) -> list[LegendEntry]:
    """The classes present in `semantic` (void left out), largest pixel share first (ties: lower id first)."""
    labels = np.asarray(semantic).ravel()
    if labels.size and labels.min() < 0:
        raise ValueError(f"semantic map holds negative labels ({labels.min()}); classes are ids >= 0")
    # bincount, not np.unique: a full-HD frame is counted in milliseconds, not a sort of 2M pixels
    counts = np.bincount(labels[labels != void].astype(np.intp), minlength=0)
    present = np.flatnonzero(counts)
    order = present[np.argsort(-counts[present], kind="stable")]
    total = max(labels.size, 1)
    return [LegendEntry(int(c), class_name(class_names, int(c)), counts[c] / total) for c in order]


def legend_font_size(height: int, width: int) -> int:
    """The legend's font size in pixels: readable on a small frame, in proportion on a large one."""
    return max(10, min(height, width) // 45)


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # Pillow's bundled Aileron scales with FreeType; without FreeType only the fixed bitmap font exists
    return ImageFont.load_default(size) if features.check("freetype2") else ImageFont.load_default()


def legend_layout(entries: Sequence[LegendEntry], height: int, width: int) -> LegendLayout:
    """The legend of `entries` in the top-left corner of a [height, width] frame: a swatch and the class name
    per line, at most LEGEND_MAX_ENTRIES classes and then a "+k more" line without a swatch."""
    size = legend_font_size(height, width)
    font = _font(size)
    pad, gap, row = max(2, size // 3), max(3, size // 2), size + max(2, size // 3)
    shown = list(entries[:LEGEND_MAX_ENTRIES])
    lines = [(e.class_id, e.name) for e in shown]
    if len(entries) > len(shown):
        lines.append((None, f"+{len(entries) - len(shown)} more"))
    if not lines:
        return LegendLayout((0, 0, 0, 0), [], [], size)
    text_x = pad + size + gap
    swatches, texts, right = [], [], text_x
    for i, (class_id, text) in enumerate(lines):
        top = pad + i * row
        _, upper, end, lower = font.getbbox(text)
        # centre the glyphs' ink on the line, whatever the font's ascent
        texts.append(((text_x, top + (size - (lower - upper)) // 2 - upper), text))
        right = max(right, text_x + int(np.ceil(end)))
        if class_id is not None:
            swatches.append((class_id, (pad, top, pad + size, top + size)))
    box = (0, 0, right + pad, 2 * pad + len(lines) * row - (row - size))
    return LegendLayout(box, swatches, texts, size)


def draw_legend(image: np.ndarray, entries: Sequence[LegendEntry]) -> np.ndarray:
    """A copy of the [H, W, 3] uint8 image with the legend of `entries` (`legend_layout`) drawn on it."""
    layout = legend_layout(entries, image.shape[0], image.shape[1])
    out = image.copy()
    x0, y0, x1, y1 = layout.box
    region = out[y0:y1, x0:x1]  # numpy slicing clips the box to the frame
    region[:] = np.round(region * LEGEND_SHADE).astype(np.uint8)
    colours = class_colours(256)
    for class_id, (sx0, sy0, sx1, sy1) in layout.swatches:
        out[sy0:sy1, sx0:sx1] = colours[class_id]  # solid, exact colours: the overlay's own
    if layout.texts:
        canvas = Image.fromarray(out)
        draw = ImageDraw.Draw(canvas)
        font = _font(layout.font_size)
        for position, text in layout.texts:
            draw.text(position, text, fill=TEXT_COLOUR, font=font)
        out = np.asarray(canvas).copy()
    return out


def _check_sizes(frame: np.ndarray, semantic: np.ndarray, id_map: np.ndarray | None) -> None:
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be [H, W, 3] uint8, got {frame.shape} {frame.dtype}")
    for name, other in (("semantic map", semantic), ("id map", id_map)):
        if other is not None and np.shape(other) != frame.shape[:2]:
            raise ValueError(f"{name} shape {np.shape(other)} differs from the frame's {frame.shape[:2]}")


def render_frame(
    frame: np.ndarray,
    semantic: np.ndarray,
    id_map: np.ndarray | None,
    class_names: Sequence[str] | None,
    alpha: float = 0.5,
) -> np.ndarray:
    """[H, W, 3] uint8: the frame with each class's colour blended in (void pixels show the frame as it is),
    the masklet borders of `id_map` (-1 = no masklet; None: none drawn) in OUTLINE_COLOUR on top, and a
    legend of the classes present in this frame, largest first, in the top-left corner."""
    frame, semantic = np.asarray(frame), np.asarray(semantic)
    _check_sizes(frame, semantic, id_map)
    image = overlay_image(frame, semantic, alpha, VOID)
    if id_map is not None:
        image[outline_mask(id_map)] = OUTLINE_COLOUR
    return draw_legend(image, legend_entries(semantic, class_names))


def even_size(image: np.ndarray) -> np.ndarray:
    """The image padded by one black row and/or column where its height or width is odd (yuv420p halves the
    chroma resolution, so the encoder needs even sizes; padding keeps every rendered pixel as it is)."""
    h, w = image.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return image
    return np.pad(image, ((0, h % 2), (0, w % 2), (0, 0)))


def frame_rate(fps: float) -> Fraction:
    """`fps` as an exact fraction: the NTSC rates (29.97, 23.976, 59.94) as n*1000/1001, so timestamps do not
    drift over a long video; other rates as the nearest fraction with a denominator up to 1001."""
    ntsc = round(fps * 1.001)
    if ntsc > 0 and abs(fps * 1.001 - ntsc) < 1e-3 and abs(fps - ntsc) > 1e-3:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1001)


def video_codec() -> str:
    """H.264 (libx264) where this FFmpeg build has it, else MPEG-4 part 2: both play in ordinary players."""
    import av

    return "libx264" if "libx264" in av.codecs_available else "mpeg4"


class _Aborted(Exception):
    """Thrown into `atomic_file` to make it drop the temporary video instead of renaming it."""


class VideoRenderer:
    """One video's rendered output: `<out_dir>/<video_id>/<frame>.png` per frame, `<out_dir>/<video_id>.mp4`.

    Frames stream into the encoder as they are added (the video is never held in memory). The .mp4 is written
    to a temporary sibling and renamed on `close`; `abort` (or an exception in a `with` block) removes it."""

    def __init__(
        self,
        out_dir: str | os.PathLike,
        video_id: str,
        fps: float,
        class_names: Sequence[str] | None,
        write_frames: bool = True,
        write_video: bool = True,
        alpha: float = 0.5,
    ) -> None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.out_dir = Path(out_dir)
        self.video_id = video_id
        self.fps = fps
        self.rate = frame_rate(fps)
        self.class_names = class_names
        self.write_frames = write_frames
        self.write_video = write_video
        self.alpha = alpha
        self.frame_dir = self.out_dir / video_id
        self.video_path = self.out_dir / f"{video_id}.mp4"
        self.frames = 0
        self._encoded = 0
        self._result: Path | None = None
        self._file: contextlib.AbstractContextManager[Any] | None = None
        self._container: Any = None
        self._stream: Any = None
        self._closed = False

    def __enter__(self) -> VideoRenderer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def add(
        self, frame_name: str, frame: np.ndarray, semantic: np.ndarray, id_map: np.ndarray | None
    ) -> None:
        """Render one frame; write its PNG (write_frames) and encode it into the video (write_video)."""
        if self._closed:
            raise ValueError(f"the renderer of {self.video_id} is closed")
        image = render_frame(frame, semantic, id_map, self.class_names, self.alpha)
        if self.write_frames:
            with atomic_file(self.frame_dir / f"{frame_name}.png") as f:
                Image.fromarray(image).save(f, format="PNG")
        if self.write_video:
            self._encode(even_size(image))
        self.frames += 1

    def _encode(self, image: np.ndarray) -> None:
        import av

        if self._stream is None:
            try:
                self._open(image.shape[0], image.shape[1])
            except BaseException:
                self._drop()  # no half-opened temporary .mp4 left behind, with or without a `with` block
                raise
        elif (image.shape[0], image.shape[1]) != (self._stream.height, self._stream.width):
            raise ValueError(
                f"frame size {image.shape[:2]} of {self.video_id} differs from its first frame's "
                f"{(self._stream.height, self._stream.width)}"
            )
        frame = av.VideoFrame.from_ndarray(image, format="rgb24")
        frame.pts, frame.time_base = self._encoded, 1 / self.rate  # one tick of 1/rate per frame
        self._encoded += 1
        for packet in self._stream.encode(frame):
            self._container.mux(packet)

    def _open(self, height: int, width: int) -> None:
        """Open the encoder at the first frame, whose size the stream takes."""
        import av

        self._file = atomic_file(self.video_path)
        handle = self._file.__enter__()
        # the temporary name does not end in .mp4: name the container format
        self._container = av.open(handle, mode="w", format="mp4")
        codec = video_codec()
        stream = self._container.add_stream(codec, rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": "18", "preset": "medium"}  # visually lossless for label colours
        else:
            stream.bit_rate = max(1_000_000, int(width * height * float(self.fps) * 0.5))
        self._stream = stream

    def close(self) -> Path | None:
        """Finish the .mp4 and move it to `<out_dir>/<video_id>.mp4`; returns its path (None: no video was
        written). Closing twice is harmless."""
        if self._closed:
            return self._result
        self._closed = True
        if self._file is None:
            return None
        try:
            for packet in self._stream.encode():  # flush the frames the encoder still holds
                self._container.mux(packet)
            self._container.close()
        except BaseException:
            self._drop()
            raise
        file, self._file, self._container = self._file, None, None
        file.__exit__(None, None, None)  # fsync, then rename onto the .mp4
        self._result = self.video_path
        return self._result

    def abort(self) -> None:
        """Stop without a video: the encoder is closed and the temporary .mp4 removed (PNGs written stay)."""
        self._closed = True
        self._drop()

    def _drop(self) -> None:
        if self._container is not None:
            with contextlib.suppress(Exception):
                self._container.close()
        if self._file is not None:
            error = _Aborted()
            with contextlib.suppress(_Aborted):
                self._file.__exit__(type(error), error, None)
        self._file = self._container = None
