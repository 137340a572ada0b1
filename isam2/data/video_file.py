"""`VideoFile`: one video file (mp4, mov, ...) decoded with PyAV in order, a frame or a window at a time."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from isam2.data.video import DataError

if TYPE_CHECKING:
    import av

VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv")
DEFAULT_FPS = 25.0  # when the container does not say; used for output videos, never to pick frames


def is_video_file(path: str | Path) -> bool:
    """Whether `path` names a video file, by its suffix (case-insensitive); the file is not opened."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def safe_id(stem: str) -> str:
    """A file stem usable as a folder and file name: characters outside [A-Za-z0-9_.+-] become '_'."""
    return re.sub(r"[^A-Za-z0-9_.+-]", "_", stem) or "_"


def to_display(image: np.ndarray, matrix: Sequence[int] | None) -> np.ndarray:
    """`image` [H, W, ...] as displayed under FFmpeg's 3x3 display matrix (9 ints, row-major, 16.16 fixed
    point; None = as stored). Rotations snap to the nearest right angle; flips are honoured. Matches the
    ffmpeg CLI's autorotate: a displayed pixel (x', y') = (a x + c y, b x + d y) up to a shift, where
    a, b, c, d = matrix[0], matrix[1], matrix[3], matrix[4]."""
    if matrix is None:
        return image
    a, b, c, d = (int(matrix[i]) for i in (0, 1, 3, 4))
    if abs(a) + abs(d) >= abs(b) + abs(c):  # (nearly) no quarter turn: x' = a x, y' = d y
        flip_cols, flip_rows = a < 0, d < 0
    else:  # quarter turn: x' = c y, y' = b x, so displayed rows come from stored columns
        image = image.swapaxes(0, 1)
        flip_cols, flip_rows = c < 0, b < 0
    if flip_rows:
        image = image[::-1]
    if flip_cols:
        image = image[:, ::-1]
    return np.ascontiguousarray(image)


def rotate_tag_matrix(clockwise_degrees: float) -> tuple[int, ...]:
    """The display matrix of the legacy `rotate` stream tag (clockwise degrees), as FFmpeg's
    av_display_rotation_set builds it."""
    rad = np.deg2rad(-clockwise_degrees)
    cos, sin = round(np.cos(rad) * 65536), round(np.sin(rad) * 65536)
    return (cos, -sin, 0, sin, cos, 0, 0, 0, 1 << 30)


def _rotate_tag(metadata: dict[str, str]) -> tuple[int, ...] | None:
    """The display matrix of a legacy `rotate` tag in a stream's metadata; None when absent or not a number."""
    try:
        return rotate_tag_matrix(float(metadata["rotate"]))
    except (KeyError, ValueError):
        return None


def frame_display_matrix(frame: av.VideoFrame, fallback: Sequence[int] | None) -> Sequence[int] | None:
    """The DISPLAYMATRIX side data of a decoded PyAV frame (FFmpeg copies the stream's onto every frame),
    else `fallback`."""
    for side in frame.side_data:
        if getattr(side.type, "name", None) == "DISPLAYMATRIX":
            return np.frombuffer(bytes(side), dtype=np.int32)[:9].tolist()
    return fallback


class VideoFile:
    """A video file read in order with PyAV (its wheels ship FFmpeg), one frame at a time.

    Frames come in presentation order as RGB uint8 [H, W, 3], oriented as displayed (rotation and flip
    metadata applied). A variable-frame-rate video yields every decoded frame, in order: nothing is dropped
    or duplicated to reach a constant rate. The file is opened anew by each `iter_frames` and closed when
    that iteration ends or is abandoned, so an instance holds no open file."""

    masks = None  # a video file carries no ground truth

    def __init__(self, path: str | Path, video_id: str | None = None):
        self.path = Path(path)
        if not self.path.exists():
            raise DataError(f"input not found: {self.path}")
        if not self.path.is_file():
            raise DataError(f"input {self.path} is not a file")
        self.id = video_id if video_id is not None else safe_id(self.path.stem)
        self.fps = DEFAULT_FPS
        self.num_frames_hint = 0  # the container's count: only for progress bars, never trusted
        self._tag_matrix: tuple[int, ...] | None = None
        self.size: tuple[int, int] = self._probe()

    def _probe(self) -> tuple[int, int]:
        """Read the stream's rate, frame count and rotation tag, and decode the first frame for the size."""
        import av

        try:
            with av.open(str(self.path)) as container:
                stream = self._video_stream(container)
                rate = stream.average_rate or stream.guessed_rate
                self.fps = float(rate) if rate else DEFAULT_FPS
                self.num_frames_hint = int(stream.frames or 0)
                self._tag_matrix = _rotate_tag(stream.metadata)
                first = next(container.decode(stream), None)
                if first is None:
                    raise DataError(f"video file {self.path} has no frames (no frame could be decoded)")
                return self._to_array(first).shape[:2]
        except av.FFmpegError as e:
            raise DataError(f"cannot read video file {self.path}: not a video, or unreadable ({e})") from None

    def _video_stream(self, container: av.container.InputContainer) -> av.VideoStream:
        if not container.streams.video:
            raise DataError(f"video file {self.path} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: several times faster on long H.264/HEVC files
        return stream

    def _to_array(self, frame: av.VideoFrame) -> np.ndarray:
        rgb = frame.to_ndarray(format="rgb24")
        return to_display(rgb, frame_display_matrix(frame, self._tag_matrix))

    def frame_name(self, i: int) -> str:
        """Frame i's name, zero-padded so that names sort in frame order: 00000, 00001, ..."""
        return f"{i:05d}"

    def iter_frames(self) -> Iterator[np.ndarray]:
        """Every frame in presentation order, RGB uint8 [H, W, 3] as displayed, decoded one at a time.

        A file that ends early (truncated) yields the frames FFmpeg could decode; an FFmpeg error while
        decoding, or a frame of another size than the first, raises DataError naming the file and frame."""
        import av

        index = 0
        try:
            with av.open(str(self.path)) as container:
                for frame in container.decode(self._video_stream(container)):
                    arr = self._to_array(frame)
                    if arr.shape[:2] != self.size:
                        raise DataError(
                            f"frame {index} of video file {self.path} is {arr.shape[0]}x{arr.shape[1]} (HxW) but "
                            f"its first frame is {self.size[0]}x{self.size[1]}; every frame must have one size"
                        )
                    yield arr
                    index += 1
        except av.FFmpegError as e:
            raise DataError(
                f"video file {self.path} is corrupt or truncated: decoding stopped at frame {index} ({e})"
            ) from None
        if index == 0:
            raise DataError(f"video file {self.path} has no frames (no frame could be decoded)")

    def iter_windows(self, size: int) -> Iterator[tuple[list[int], np.ndarray]]:
        """Consecutive windows of `size` frames: (frame indices, frames [n, H, W, 3] uint8); the last window
        may be shorter. Only one window is held in memory."""
        if size < 1:
            raise ValueError(f"window size must be at least 1, got {size}")
        indices: list[int] = []
        frames: list[np.ndarray] = []
        for i, frame in enumerate(self.iter_frames()):
            indices.append(i)
            frames.append(frame)
            if len(frames) == size:
                yield indices, np.stack(frames)
                indices, frames = [], []
        if frames:
            yield indices, np.stack(frames)

    def __repr__(self) -> str:
        h, w = self.size
        return f"VideoFile(id={self.id!r}, path='{self.path}', size={h}x{w}, fps={self.fps:g})"
