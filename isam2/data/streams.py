"""Frame streams: any video input (a split's video, a frame folder, a video file, arrays) read window by window."""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isam2.data.video import DataError, Video, natural_key, pair_video
from isam2.data.video_file import VideoFile, is_video_file, safe_id
from isam2.errors import ISAM2Error

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
# Consecutive pieces of one video: (frames [n,H,W,3] uint8, GT train ids [n,H,W] or None).
Chunks = Iterable[tuple[np.ndarray, "np.ndarray | None"]]


@dataclass
class Window:
    """Consecutive frames of one video: their indices and names, RGB frames, and GT train ids when known."""

    indices: list[int]
    names: list[str]
    frames: np.ndarray  # [n, H, W, 3] uint8
    gt: np.ndarray | None  # [n, H, W] uint8 train ids, 255 = void

    def __len__(self) -> int:
        return len(self.indices)


class FrameStream:
    """One video read in order, `windows(size)` at a time; nothing holds more than one window of frames.

    `id` names its output folder; `size` is (H, W) of every frame (None until known); `has_gt` says whether
    windows carry ground truth; `num_frames` is the count when known up front (a file's may be unknown: 0)."""

    id: str
    size: tuple[int, int] | None = None
    has_gt: bool = False
    num_frames: int = 0
    fps: float = 25.0

    def windows(self, size: int) -> Iterator[Window]:
        raise NotImplementedError

    def frame_names(self) -> dict[int, str]:
        """Names of the frames read so far by index (encoders that read per-frame files look them up)."""
        return self._names

    _names: dict[int, str]


class SplitVideoStream(FrameStream):
    """A dataset `Video` (a split's, or a frame folder): frames decoded a window at a time, GT when it has masks."""

    def __init__(self, video: Video, fps: float = 25.0):
        self.video, self.id, self.size = video, video.id, video.size
        self.has_gt = video.masks is not None
        self.num_frames, self.fps = len(video), fps
        self._names = dict(enumerate(video.frame_names))

    def windows(self, size: int) -> Iterator[Window]:
        names = self.video.frame_names
        for start in range(0, len(self.video), size):
            idx = list(range(start, min(len(self.video), start + size)))
            frames = self.video.load_frames(idx)
            gt = self.video.load_masks(idx) if self.has_gt else None
            yield Window(idx, [names[i] for i in idx], frames, gt)


class VideoFileStream(FrameStream):
    """A video file (`VideoFile`), decoded in order: frame names 00000, 00001, ... and no GT."""

    def __init__(self, file: VideoFile):
        self.file, self.id, self.size = file, file.id, file.size
        self.num_frames, self.fps = int(file.num_frames_hint), float(file.fps)
        self._names = {}

    def windows(self, size: int) -> Iterator[Window]:
        for idx, frames in self.file.iter_windows(size):
            names = [self.file.frame_name(i) for i in idx]
            self._names.update(zip(idx, names))
            yield Window(list(idx), names, frames, None)


class ArrayStream(FrameStream):
    """Frames given in memory or by a generator: an array or tensor [T, H, W, 3] / [T, 3, H, W], or an iterable
    of [H, W, 3] uint8 arrays. Every frame is checked: uint8 RGB, and one size for the whole video."""

    def __init__(self, frames: Any, video_id: str = "video", fps: float = 25.0):
        self.source, self.id, self.fps = frames, video_id, fps
        self.num_frames = len(frames) if hasattr(frames, "__len__") else 0
        self._names = {}

    def _frames(self) -> Iterator[np.ndarray]:
        for t, frame in enumerate(self.source):
            yield self._checked(t, frame)

    def _checked(self, t: int, frame: Any) -> np.ndarray:
        arr = frame.detach().cpu().numpy() if hasattr(frame, "detach") else np.asarray(frame)
        if arr.ndim == 3 and arr.shape[0] == 3 and arr.shape[-1] != 3:  # a [3, H, W] tensor frame
            arr = arr.transpose(1, 2, 0)
        if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise DataError(
                f"frame {t} of {self.id!r} is {arr.dtype} {arr.shape}; expected uint8 [H, W, 3] RGB"
            )
        if self.size is None:
            self.size = (int(arr.shape[0]), int(arr.shape[1]))
        elif arr.shape[:2] != self.size:
            raise DataError(
                f"frame {t} of {self.id!r} is {arr.shape[0]}x{arr.shape[1]} but frame 0 is "
                f"{self.size[0]}x{self.size[1]} (HxW); every frame of a video must have one size"
            )
        return np.ascontiguousarray(arr)

    def windows(self, size: int) -> Iterator[Window]:
        yield from _windows_of(self._frames(), size, self._names)


def _windows_of(frames: Iterator[np.ndarray], size: int, names: dict[int, str]) -> Iterator[Window]:
    """Group single frames into windows of `size`, naming frame t `{t:05d}`."""
    batch: list[np.ndarray] = []
    start = 0
    for frame in frames:
        batch.append(frame)
        if len(batch) == size:
            yield _window(start, batch, names)
            start, batch = start + size, []
    if batch:
        yield _window(start, batch, names)
    if start == 0 and not batch and not names:
        raise DataError("the video has no frames")


def _window(start: int, batch: list[np.ndarray], names: dict[int, str]) -> Window:
    idx = list(range(start, start + len(batch)))
    names.update((i, f"{i:05d}") for i in idx)
    return Window(idx, [names[i] for i in idx], np.stack(batch), None)


# ------------------------------------------------------------------------------------------ chunks


def _check_video(frames: np.ndarray, gt: np.ndarray | None) -> None:
    if (
        not isinstance(frames, np.ndarray)
        or frames.ndim != 4
        or frames.shape[-1] != 3
        or frames.dtype != np.uint8
    ):
        desc = f"{frames.dtype} {frames.shape}" if isinstance(frames, np.ndarray) else type(frames).__name__
        raise ISAM2Error(f"frames must be a uint8 array [T, H, W, 3], got {desc}")
    if gt is not None and (gt.ndim != 3 or tuple(gt.shape) != tuple(frames.shape[:3])):
        raise ISAM2Error(f"ground truth {gt.shape} does not match frames {frames.shape[:3]}")


def as_chunks(frames: np.ndarray | Chunks, gt: np.ndarray | None = None) -> Chunks:
    """A whole video (frames [T,H,W,3], gt [T,H,W] or None) as one chunk; chunks pass through unchanged."""
    return [(frames, gt)] if isinstance(frames, np.ndarray) else frames


def rechunk(chunks: Chunks, size: int) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Consecutive chunks of a video regrouped into chunks of exactly `size` frames (the last may be shorter),
    each checked; at most `size` frames more than the incoming chunk are held at once."""
    frames: list[np.ndarray] = []
    gts: list[np.ndarray | None] = []
    held = 0
    for chunk, gt in chunks:
        _check_video(chunk, gt)
        if frames and (gt is None) != (gts[0] is None):
            raise ISAM2Error("ground truth must be given for every frame of a video or for none")
        frames.append(chunk)
        gts.append(gt)
        held += len(chunk)
        while held >= size:
            out, frames, gts, held = _take(frames, gts, size)
            yield out
    if held:
        yield _take(frames, gts, held)[0]


def _take(frames: list[np.ndarray], gts: list, size: int):
    """The first `size` frames of the held pieces, and what is left."""
    all_frames = frames[0] if len(frames) == 1 else np.concatenate(frames)
    all_gt = None if gts[0] is None else (gts[0] if len(gts) == 1 else np.concatenate(gts))
    head = (all_frames[:size], None if all_gt is None else all_gt[:size])
    rest_f, rest_g = all_frames[size:], None if all_gt is None else all_gt[size:]
    if len(rest_f) == 0:
        return head, [], [], 0
    return head, [rest_f], [rest_g], len(rest_f)


class HeldChunks:
    """A video's chunks as a consumer (the masklet source) reads them, each kept until a later frame is asked
    for: `locate(t)` gives the chunk that holds frame t and t's offset in it. `split(item)` turns an item into
    its (frames, gt); items are (frames, gt) pairs by default, or e.g. `Window`s."""

    def __init__(self, items: Iterable[Any], split: Any = None):
        self.items, self.split = items, split or (lambda item: item)
        self.frames = 0  # frames handed out so far
        self._held: deque = deque()  # (first frame, item)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        for item in self.items:
            frames, gt = self.split(item)
            self._held.append((self.frames, item))
            self.frames += len(frames)
            yield frames, gt

    def locate(self, t: int) -> tuple[Any, int]:
        while len(self._held) > 1 and self._held[1][0] <= t:
            self._held.popleft()  # frames before t are done with: the chunk may go
        if not self._held or not self._held[0][0] <= t < self.frames:
            raise ISAM2Error(f"the masklet source gave frame {t}, which it was not given (or out of order)")
        start, item = self._held[0]
        return item, t - start


def prefetched(items: Iterable[Any], depth: int = 1) -> Iterator[Any]:
    """`items` produced in a background thread, at most `depth` ahead of the consumer (decoding the next
    window while the device works on this one); its errors are raised here, and a consumer that stops early
    stops the thread."""
    import queue
    import threading

    box: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put((item, None), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put((done, None))
        except BaseException as e:  # handed to the consumer, raised in its thread
            box.put((done, e))

    thread = threading.Thread(target=produce, name="isam2-decode", daemon=True)
    thread.start()
    try:
        while True:
            item, error = box.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        with contextlib.suppress(queue.Empty):
            box.get_nowait()  # unblock a producer waiting to put
        thread.join()


# ------------------------------------------------------------------------------------------ opening inputs


def frame_folder_video(folder: Path) -> Video:
    """A folder of image files as one unlabeled video (natural order; every frame must have one size)."""
    suffixes = {p.suffix.lower() for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES}
    if not suffixes:
        raise DataError(f"input {folder} holds no frames ({', '.join(IMAGE_SUFFIXES)}) and no video files")
    if len(suffixes) > 1:
        raise DataError(f"input {folder} mixes frame formats {sorted(suffixes)}; keep one per video")
    return pair_video(safe_id(folder.name), folder, None, suffixes.pop(), _no_labels)


def _no_labels(raw: np.ndarray) -> np.ndarray:
    raise DataError("a frame folder has no ground truth")


def open_path(path: str | Path) -> list[FrameStream]:
    """The videos of `input=`: a video file, a folder of frames (one video), or a folder of such folders and
    video files (one video each, in natural order). Names become output folder names, so they must differ."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"input not found: {path}")
    if path.is_file():
        if not is_video_file(path):
            raise DataError(
                f"input {path} is not a video file (expected one of .mp4 .mov .avi .mkv) or a folder"
            )
        return [VideoFileStream(VideoFile(path))]
    entries = sorted(path.iterdir(), key=natural_key)
    if any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES for p in entries):
        return [SplitVideoStream(frame_folder_video(path))]
    streams: list[FrameStream] = []
    for entry in entries:
        if entry.is_dir():
            streams.append(SplitVideoStream(frame_folder_video(entry)))
        elif is_video_file(entry):
            streams.append(VideoFileStream(VideoFile(entry)))
    if not streams:
        raise DataError(f"input {path} holds no frames, frame folders or video files")
    seen: dict[str, Path] = {}
    for stream in streams:
        if stream.id in seen:
            raise DataError(f"input {path}: two videos would both be written as {stream.id!r}; rename one")
        seen[stream.id] = Path(stream.id)
    return streams


def as_stream(frames: Any, video_id: str = "video") -> FrameStream:
    """A `FrameStream` of anything `Segmenter.segment` takes: a path (file or folder), a stream, or frames."""
    if isinstance(frames, FrameStream):
        return frames
    if isinstance(frames, Video):
        return SplitVideoStream(frames)
    if isinstance(frames, (str, Path)):
        streams = open_path(frames)
        if len(streams) != 1:
            raise DataError(f"{frames} holds {len(streams)} videos; segment them one at a time")
        return streams[0]
    if isinstance(frames, np.ndarray) or hasattr(frames, "detach") or isinstance(frames, Iterable):
        return ArrayStream(frames, video_id)
    raise DataError(f"cannot read frames from a {type(frames).__name__}")
