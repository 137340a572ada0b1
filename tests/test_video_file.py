"""VideoFile on tiny videos written here with PyAV: exact frames, windows, odd sizes, rotation, variable frame
rate, bad files, and that decoding is lazy and closes the file."""

import inspect
import re
import tracemalloc
from fractions import Fraction

import av
import numpy as np
import pytest

from isam2.data import DataError
from isam2.data.video_file import VideoFile, is_video_file, rotate_tag_matrix, safe_id, to_display


def random_frames(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


def write_video(
    path,
    frames,
    fps=10,
    codec="ffv1",
    pix_fmt="bgr0",
    rotation=None,
    hflip=False,
    pts=None,
    options=None,
    container_options=None,
):
    """Encode RGB frames with PyAV. ffv1 + bgr0 is lossless for RGB; `pts` in milliseconds gives a variable
    frame rate; `rotation` (counter-clockwise degrees) and `hflip` write a display matrix."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=fps, options=options or {})
        stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
        if pts is not None:
            stream.time_base = stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None or hflip:
            stream.set_display_rotation(rotation or 0, hflip=hflip)
        for i, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[i], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_mp4(path, frames, **kw):
    return write_video(path, frames, codec="libx264", pix_fmt="yuv420p", **kw)


def plain_decode(path) -> list[np.ndarray]:
    """The reference: PyAV's own loop, no orientation."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def assert_frames_equal(got, expected):
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert g.dtype == np.uint8
        np.testing.assert_array_equal(g, e)


def test_is_video_file_and_safe_id():
    assert (
        is_video_file("a/b.MP4")
        and is_video_file("x.mov")
        and is_video_file("x.avi")
        and is_video_file("x.mkv")
    )
    assert not is_video_file("x.jpg") and not is_video_file("mp4")
    assert safe_id("my clip (1)é") == "my_clip__1__"
    assert safe_id("a.b+c-d_e") == "a.b+c-d_e"


def test_mp4_frames_equal_an_independent_pyav_decode(tmp_path):
    path = write_mp4(tmp_path / "my clip.mp4", random_frames(12, 48, 64))
    video = VideoFile(path)
    assert video.id == "my_clip" and video.path == path and video.masks is None
    assert video.size == (48, 64) and video.fps == 10.0 and video.num_frames_hint == 12
    assert VideoFile(path, video_id="other").id == "other"
    assert [video.frame_name(i) for i in (0, 7, 123456)] == ["00000", "00007", "123456"]
    assert "my_clip" in repr(video) and "48x64" in repr(video)
    assert_frames_equal(list(video.iter_frames()), plain_decode(path))


def test_lossless_mkv_round_trips_exact_frames(tmp_path):
    frames = random_frames(12, 48, 64)
    video = VideoFile(write_video(tmp_path / "v.mkv", frames))
    assert_frames_equal(list(video.iter_frames()), frames)


def test_windows_of_5_over_12_frames(tmp_path):
    frames = random_frames(12, 48, 64)
    video = VideoFile(write_video(tmp_path / "v.mkv", frames))
    windows = list(video.iter_windows(5))
    assert [idx for idx, _ in windows] == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9], [10, 11]]
    for idx, batch in windows:
        assert batch.shape == (len(idx), 48, 64, 3) and batch.dtype == np.uint8
        np.testing.assert_array_equal(batch, np.stack([frames[i] for i in idx]))
    with pytest.raises(ValueError, match="at least 1"):
        next(video.iter_windows(0))


@pytest.mark.parametrize(
    "hw", [(27, 48), (48, 27), (31, 17)], ids=["odd-landscape", "odd-portrait", "odd-both"]
)
def test_odd_and_portrait_sizes(tmp_path, hw):
    frames = random_frames(5, *hw)
    video = VideoFile(write_video(tmp_path / "odd.mkv", frames))
    assert video.size == hw
    assert_frames_equal(list(video.iter_frames()), frames)


def test_portrait_mp4_with_yuv444(tmp_path):
    path = write_video(tmp_path / "p.mov", random_frames(6, 47, 27), codec="libx264", pix_fmt="yuv444p")
    video = VideoFile(path)
    assert video.size == (47, 27)
    assert_frames_equal(list(video.iter_frames()), plain_decode(path))


@pytest.mark.parametrize(
    ("rotation", "hflip", "displayed"),
    [
        (90, False, lambda a: np.rot90(a, 1)),  # counter-clockwise
        (-90, False, lambda a: np.rot90(a, -1)),  # clockwise: a phone held upright (legacy tag rotate=90)
        (180, False, lambda a: np.rot90(a, 2)),
        (0, True, lambda a: a[:, ::-1]),
        (90, True, lambda a: np.rot90(a, 1)[:, ::-1]),  # PyAV: the flip comes after the rotation
    ],
)
def test_display_matrix_is_applied(tmp_path, rotation, hflip, displayed):
    frames = random_frames(4, 24, 40)
    path = write_video(tmp_path / "rot.mkv", frames, rotation=rotation, hflip=hflip)
    with av.open(str(path)) as container:  # the metadata really is in the file
        assert "DISPLAYMATRIX" in [side.type.name for side in next(container.decode(video=0)).side_data]
    video = VideoFile(path)
    expected = [displayed(f) for f in frames]
    assert video.size == expected[0].shape[:2]
    assert_frames_equal(list(video.iter_frames()), expected)


def test_portrait_phone_mp4_comes_out_portrait(tmp_path):
    path = write_mp4(tmp_path / "phone.mp4", random_frames(6, 48, 64), rotation=-90)
    video = VideoFile(path)
    assert video.size == (64, 48)
    assert_frames_equal(list(video.iter_frames()), [np.rot90(f, -1) for f in plain_decode(path)])


def test_to_display_on_synthetic_matrices():
    image = np.arange(2 * 3).reshape(2, 3)
    assert to_display(image, None) is image
    np.testing.assert_array_equal(to_display(image, rotate_tag_matrix(0)), image)
    # clockwise tag
    np.testing.assert_array_equal(to_display(image, rotate_tag_matrix(90)), np.rot90(image, -1))
    np.testing.assert_array_equal(to_display(image, rotate_tag_matrix(270)), np.rot90(image, 1))
    np.testing.assert_array_equal(to_display(image, rotate_tag_matrix(180)), image[::-1, ::-1])
    np.testing.assert_array_equal(to_display(image, rotate_tag_matrix(80)), np.rot90(image, -1))  # nearest
    vflip = (65536, 0, 0, 0, -65536, 0, 0, 0, 1 << 30)
    np.testing.assert_array_equal(to_display(image, vflip), image[::-1])


def test_variable_frame_rate_yields_every_frame_in_order(tmp_path):
    frames, pts = random_frames(6, 27, 48), [0, 40, 50, 130, 140, 400]
    path = write_video(tmp_path / "vfr.mkv", frames, pts=pts, fps=25)
    with av.open(str(path)) as container:
        assert [f.pts for f in container.decode(video=0)] == pts
    assert_frames_equal(list(VideoFile(path).iter_frames()), frames)


def test_variable_frame_rate_mp4(tmp_path):
    pts = [0, 40, 50, 130, 140, 400, 410]
    path = write_mp4(tmp_path / "vfr.mp4", random_frames(7, 28, 48), pts=pts, fps=25)
    assert_frames_equal(list(VideoFile(path).iter_frames()), plain_decode(path))


def write_bad(tmp_path, case: str):
    if case == "missing":
        return tmp_path / "missing.mp4"
    if case == "folder":
        (tmp_path / "clip.mp4").mkdir()
        return tmp_path / "clip.mp4"
    path = tmp_path / f"{case}.mp4"
    if case == "text":
        path.write_text("this is not a video\n" * 20)
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "truncated":
        good = write_mp4(tmp_path / "good.mp4", random_frames(12, 48, 64)).read_bytes()
        path.write_bytes(good[:300])
    elif case == "audio-only":
        with av.open(str(path), "w") as container:
            stream = container.add_stream("aac", rate=16000)
            for i in range(10):
                frame = av.AudioFrame.from_ndarray(
                    np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
                )
                frame.sample_rate, frame.pts = 16000, i * 1024
                for packet in stream.encode(frame):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    elif case == "no-frames":  # the header intact, the first frame cut short
        good = write_video(tmp_path / "good.mkv", random_frames(12, 48, 64)).read_bytes()
        path = tmp_path / "no-frames.mkv"
        path.write_bytes(good[: len(good) // 24])
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing", "input not found"),
        ("folder", "not a file"),
        ("text", "not a video"),
        ("empty", "not a video"),
        ("truncated", "not a video"),
        ("audio-only", "has no video stream"),
        ("no-frames", "has no frames"),
    ],
)
def test_bad_input_names_the_file(tmp_path, case, message):
    path = write_bad(tmp_path, case)
    with pytest.raises(DataError, match=message) as info:
        VideoFile(path)
    assert str(path) in str(info.value)


def test_truncated_mkv_yields_the_frames_before_the_cut(tmp_path):
    frames = random_frames(12, 48, 64)
    good = write_video(tmp_path / "good.mkv", frames).read_bytes()
    path = tmp_path / "cut.mkv"
    path.write_bytes(good[: len(good) // 2])
    got = list(VideoFile(path).iter_frames())
    assert 1 <= len(got) < 12
    assert_frames_equal(got, frames[: len(got)])


def test_corrupt_mp4_yields_a_prefix_or_names_the_file_and_frame(tmp_path):
    """FFmpeg either stops quietly or raises, depending on where the damage is (and on its threads)."""
    good = write_mp4(
        tmp_path / "good.mp4", random_frames(12, 48, 64), container_options={"movflags": "faststart"}
    )
    reference = plain_decode(good)
    path = tmp_path / "cut.mp4"
    path.write_bytes(good.read_bytes()[: good.stat().st_size * 3 // 4])
    got = []
    try:
        for frame in VideoFile(path).iter_frames():
            got.append(frame)
    except DataError as e:
        assert str(path) in str(e) and f"stopped at frame {len(got)}" in str(e)
    assert_frames_equal(got, reference[: len(got)])


class FailingDecode:
    """A container whose decoder raises FFmpeg's error after `ok` frames."""

    def __init__(self, container, ok: int):
        self.container, self.ok = container, ok

    def __getattr__(self, name):
        return getattr(self.container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.container.close()

    def decode(self, *args):
        for i, frame in enumerate(self.container.decode(*args)):
            if i == self.ok:
                raise av.error.InvalidDataError(1094995529, "Invalid data found when processing input", "x")
            yield frame


def test_ffmpeg_error_mid_file_names_the_file_and_frame(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.mkv", random_frames(12, 48, 64))
    video = VideoFile(path)
    real_open = av.open
    monkeypatch.setattr(av, "open", lambda *a, **k: FailingDecode(real_open(*a, **k), ok=7))
    got = []
    with pytest.raises(
        DataError, match=re.escape(f"{path} is corrupt or truncated: decoding stopped at frame 7")
    ):
        for frame in video.iter_frames():
            got.append(frame)
    assert len(got) == 7


def test_a_frame_of_another_size_names_the_file_and_frame(tmp_path, monkeypatch):
    path = write_video(tmp_path / "v.mkv", random_frames(6, 48, 64))
    video = VideoFile(path)
    real = VideoFile._to_array
    calls = iter(range(100))

    def shrink_fourth(self, frame):
        arr = real(self, frame)
        return arr[:-2] if next(calls) == 3 else arr

    monkeypatch.setattr(VideoFile, "_to_array", shrink_fourth)
    with pytest.raises(DataError, match=re.escape(f"frame 3 of video file {path} is 46x64 (HxW)")):
        list(video.iter_frames())


class SpyContainer:
    """Records whether the wrapped container was closed."""

    def __init__(self, container):
        self.container, self.closed = container, False

    def __getattr__(self, name):
        return getattr(self.container, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closed = True
        self.container.close()


def test_long_video_is_decoded_lazily_and_closed(tmp_path, monkeypatch):
    frames = [np.full((64, 64, 3), i % 256, np.uint8) for i in range(300)]
    video = VideoFile(write_video(tmp_path / "long.mkv", frames))
    opened: list[SpyContainer] = []
    real_open = av.open

    def spy_open(*args, **kwargs):
        opened.append(SpyContainer(real_open(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(av, "open", spy_open)
    assert inspect.isgenerator(video.iter_frames()) and inspect.isgenerator(video.iter_windows(10))
    assert not opened  # creating the generators opens nothing

    tracemalloc.start()
    try:
        count = 0
        for idx, batch in video.iter_windows(10):
            assert batch[0, 0, 0, 0] == idx[0] % 256
            count += len(idx)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 300 and opened[-1].closed
    all_frames = 300 * 64 * 64 * 3
    assert peak < all_frames / 4  # a few windows at most, never the whole video

    for _ in video.iter_windows(10):
        break
    assert opened[-1].closed  # the abandoned generator closed its file

    gen = video.iter_frames()
    next(gen)
    assert not opened[-1].closed
    gen.close()
    assert opened[-1].closed
