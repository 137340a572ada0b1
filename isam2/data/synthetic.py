"""The built-in synthetic dataset: small textured videos with moving, occluding objects, in the VSPW_480p layout.

`python -m isam2.data.synthetic root=<dir> [num_train=12 height=240 ... force=true]` writes it; `ensure_synthetic`
writes it on first use. Values are raw VSPW ids, so every reader path is the one real data takes.

With the set comes a noisy base segmentor's predictions for every split, `<root>/base_predictions/<video>/
<frame>.png` (uint8 train ids; see `noisy_video`): the input of the refiner (Eq. 1-2) and of learned fusions.

A set is built in a hidden temporary sibling and renamed into place, so a killed generation leaves no
half set at `root`. It carries MARKER (what made it, with which settings); only a folder recognised as
such a set (`synthetic_settings`) is ever replaced, and only with force=true: any other folder is refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from isam2.errors import ConfigError, user_errors_exit
from isam2.logs import console_logging, get_logger

log = get_logger(__name__)

if TYPE_CHECKING:
    from isam2.data.datasets import VideoDataset

# (name, raw VSPW id, base RGB, texture). Raw ids 1..10 -> train ids 0..9.
STUFF = [
    ("sky", 1, (110, 160, 235), "gradient"),
    ("grass", 2, (60, 150, 50), "noise"),
    ("road", 3, (105, 105, 110), "stripes"),
    ("wall", 4, (170, 90, 60), "bricks"),
    ("water", 5, (30, 80, 160), "waves"),
]
THINGS = [
    ("car", 6, (220, 30, 30), "solid"),
    ("person", 7, (240, 210, 40), "checker"),
    ("ball", 8, (150, 40, 180), "dots"),
    ("dog", 9, (120, 75, 30), "noise"),
    ("boat", 10, (240, 240, 240), "stripes"),
]
OTHERS_COLOUR = (128, 128, 128)
SPLITS = ("train", "val", "test")
MARKER = ".isam2-synthetic.json"  # {"made_by": MADE_BY, "settings": SyntheticConfig as a dict}
MADE_BY = "isam2.data.synthetic"
LEGACY_STAMP = "synthetic.json"  # the settings file of sets made before MARKER existed
BASE_PREDICTIONS = "base_predictions"
BASE_STAMP = ".isam2-base.json"  # {"noise": NOISE_VERSION, "seed": ...}: which noise model wrote the folder
NOISE_VERSION = 1  # bump when noisy_video changes, so existing sets rebuild their base predictions


@dataclass(frozen=True)
class SyntheticConfig:
    """Size and seed of the synthetic set; the defaults keep the whole demo within a few CPU minutes."""

    num_train: int = 12
    num_val: int = 4
    num_test: int = 4
    min_frames: int = 20
    max_frames: int = 30
    height: int = 240
    width: int = 320
    seed: int = 0
    jpeg_quality: int = 92


def _texture(kind: str, colour, yy: np.ndarray, xx: np.ndarray, y_extent: float) -> np.ndarray:
    """RGB float texture at (possibly shifted) pixel coordinates, of any shape: only the pixels that show it are
    evaluated. `y_extent`, the largest y of the whole frame's coordinates, spans the gradient."""
    c = np.asarray(colour, np.float32)
    if kind == "gradient":
        f = 0.75 + 0.5 * (yy / max(y_extent, 1))
    elif kind == "noise":
        f = 0.8 + 0.4 * ((np.sin(xx * 0.9) * np.cos(yy * 1.3) + np.sin((xx + yy) * 0.37)) * 0.25 + 0.5)
    elif kind == "stripes":
        f = np.where((xx // 6) % 2 == 0, 1.0, 0.7)
    elif kind == "bricks":
        row = yy // 8
        f = np.where(((yy % 8) == 0) | (((xx + 8 * (row % 2)) % 16) == 0), 0.55, 1.0)
    elif kind == "waves":
        f = 0.85 + 0.15 * np.sin(xx * 0.25 + 2 * np.sin(yy * 0.15))
    elif kind == "checker":
        f = np.where(((xx // 5) + (yy // 5)) % 2 == 0, 1.0, 0.6)
    elif kind == "dots":
        f = np.where(((xx % 7) - 3) ** 2 + ((yy % 7) - 3) ** 2 < 5, 0.5, 1.0)
    else:  # solid
        f = np.ones_like(xx, dtype=np.float32)
    return np.clip(c * np.asarray(f, np.float32)[..., None], 0, 255)


def _video(rng: np.random.Generator, n_frames: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """One clip: frames [T, H, W, 3] uint8 and raw VSPW masks [T, H, W] uint8."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    top, bottom = (STUFF[i] for i in rng.choice(len(STUFF), 2, replace=False))
    horizon = h * rng.uniform(0.3, 0.6)
    amp, freq, phase = rng.uniform(5, 20), rng.uniform(0.01, 0.04), rng.uniform(0, 6.3)
    pan = rng.uniform(-1.5, 1.5, size=2)
    # an "others" patch and a void patch, fixed in the scene
    oy, ox, orad = rng.uniform(0.6, 0.9) * h, rng.uniform(0.1, 0.9) * w, rng.uniform(0.06, 0.1) * h
    vy, vx = rng.uniform(0, h - 12), rng.uniform(0, w - 30)
    things = []
    for _ in range(rng.integers(2, 5)):
        _, raw, colour, tex = THINGS[rng.integers(len(THINGS))]
        size = rng.uniform(0.12, 0.28) * h
        # start anywhere, including off-frame, so objects enter and leave
        pos = np.array([rng.uniform(0.2, 0.9) * h, rng.uniform(-0.2, 1.2) * w])
        vel = np.array([rng.uniform(-1.5, 1.5), rng.uniform(-9, 9)])
        shape = rng.choice(["ellipse", "rect"])
        things.append((raw, colour, tex, size, pos, vel, shape, rng.uniform(0.6, 1.6)))
    frames = np.empty((n_frames, h, w, 3), np.uint8)
    masks = np.empty((n_frames, h, w), np.uint8)
    for t in range(n_frames):
        sy, sx = yy + pan[0] * t, xx + pan[1] * t
        sky = sy < horizon + amp * np.sin(sx * freq + phase)
        img = np.empty((h, w, 3), np.float32)
        y_extent = sy.max()
        for region, (_, _, colour, tex) in ((sky, top), (~sky, bottom)):
            img[region] = _texture(tex, colour, sy[region], sx[region], y_extent)
        lab = np.where(sky, top[1], bottom[1]).astype(np.uint8)
        others = (yy - oy) ** 2 + (xx - ox) ** 2 < orad**2
        img[others] = OTHERS_COLOUR
        lab[others] = 0
        for raw, colour, tex, size, pos, vel, shape, aspect in things:  # later things occlude earlier ones
            cy, cx = pos + vel * t
            dy, dx = (yy - cy) / size, (xx - cx) / (size * aspect)
            inside = (dy**2 + dx**2 < 1) if shape == "ellipse" else (np.abs(dy) < 0.8) & (np.abs(dx) < 0.8)
            img[inside] = _texture(tex, colour, yy[inside] - cy, xx[inside] - cx, (h - 1) - cy)
            lab[inside] = raw
        void = (yy >= vy) & (yy < vy + 12) & (xx >= vx) & (xx < vx + 30)
        lab[void] = 255
        noise = rng.normal(0, 6, size=img.shape).astype(np.float32)
        frames[t] = np.clip(img + noise, 0, 255).astype(np.uint8)
        masks[t] = lab
    return frames, masks


def confusion_partners(seed: int, num_classes: int = len(STUFF) + len(THINGS)) -> np.ndarray:
    """The base segmentor's systematic confusions: class c is mistaken for partners[c] (train ids of the
    set's classes, never c itself), fixed for a seed, so a learned fusion can learn them."""
    rng = np.random.default_rng([seed, 0xC0F])
    shift = rng.integers(1, num_classes, size=num_classes)  # in 1..n-1: a partner is always another class
    return ((np.arange(num_classes) + shift) % num_classes).astype(np.uint8)


def _shifted(a: np.ndarray, dy: int, dx: int, pad) -> np.ndarray:
    """`a` moved by (dy, dx): out[y, x] = a[y - dy, x - dx], `pad` where that falls outside."""
    h, w = a.shape
    out = np.full_like(a, pad)
    out[max(dy, 0) : h + min(dy, 0), max(dx, 0) : w + min(dx, 0)] = a[
        max(-dy, 0) : h + min(-dy, 0), max(-dx, 0) : w + min(-dx, 0)
    ]
    return out


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of [H,W] by a (2r+1)^2 square, separably: rows, then columns."""
    rows = mask.copy()
    for d in range(1, radius + 1):
        rows |= _shifted(mask, 0, d, False) | _shifted(mask, 0, -d, False)
    out = rows.copy()
    for d in range(1, radius + 1):
        out |= _shifted(rows, d, 0, False) | _shifted(rows, -d, 0, False)
    return out


def _fill_void(labels: np.ndarray, fallback: int) -> np.ndarray:
    """A segmentor predicts everywhere: void (255) takes the class of the nearest non-void pixel of its row
    (`fallback` in an all-void row)."""
    h, w = labels.shape
    valid = labels != 255
    cols = np.broadcast_to(np.arange(w), (h, w))
    left = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)  # last valid column at or before x
    right = np.minimum.accumulate(np.where(valid, cols, w)[:, ::-1], axis=1)[:, ::-1]  # first at or after x
    use_left = (left >= 0) & ((right >= w) | (cols - left <= right - cols))
    source = np.where(use_left, left, right)
    rows = np.broadcast_to(np.arange(h)[:, None], (h, w))
    out = np.where(source < w, labels[rows, source.clip(0, w - 1)], fallback)
    return np.where(valid, labels, out).astype(labels.dtype)


def noisy_video(gt: np.ndarray, rng: np.random.Generator, partners: np.ndarray) -> np.ndarray:
    """A base segmentor's predictions [T,H,W] uint8 of one video, made from its ground truth (train ids).

    The errors are those of a real segmentor, each fixed by a different remedy:
    - boundaries: about half the classes of a video are dilated by ~1.5% of the image side, so their
      neighbours are eroded (the refiner's masklets restore the edge);
    - wrong blobs: two ellipses per frame relabelled to a random class of the video (a masklet outvotes them);
    - systematic confusions: in half the videos one class is predicted as its partner (`confusion_partners`)
      on all its pixels for a contiguous run of about a third of the frames (a per-frame vote keeps the
      error; a per-track vote fixes it; a fusion can learn the pair);
    - void is predicted as a neighbouring class, never left as 255.
    """
    t_len, h, w = gt.shape
    present = np.unique(gt[gt != 255])
    classes = present if present.size else np.zeros(1, np.uint8)
    radius = max(1, round(0.015 * min(h, w)))
    grown = [c for c in classes if rng.random() < 0.5]
    confused = None
    if rng.random() < 0.5:
        candidates = [c for c in classes if c < len(partners)]
        if candidates:
            run = max(1, round(t_len * rng.uniform(0.25, 0.4)))
            start = int(rng.integers(0, t_len - run + 1))
            confused = (int(rng.choice(candidates)), start, start + run)
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty_like(gt)
    for t in range(t_len):
        frame = _fill_void(gt[t], int(classes[0]))
        for c in grown:
            frame[_dilate(gt[t] == c, radius)] = c
        if confused is not None and confused[1] <= t < confused[2]:
            frame[gt[t] == confused[0]] = partners[confused[0]]
        for _ in range(2):
            cy, cx = rng.uniform(0, h), rng.uniform(0, w)
            ry, rx = rng.uniform(0.04, 0.12) * h, rng.uniform(0.04, 0.12) * w
            frame[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1] = rng.choice(classes)
        out[t] = frame
    return out


def write_noisy_base(dataset: VideoDataset, out_dir: str | Path, seed: int = 0, stream: int = 0) -> Path:
    """Write `<out_dir>/<video>/<frame>.png`: `noisy_video` of every video of `dataset` (train ids).
    Video v draws from its own generator (seed, stream, v), so a video's noise does not depend on the others."""
    out_dir = Path(out_dir)
    partners = confusion_partners(seed)
    for v, video in enumerate(dataset):
        noisy = noisy_video(video.load_masks(), np.random.default_rng([seed, stream, v]), partners)
        (out_dir / video.id).mkdir(parents=True, exist_ok=True)
        for name, frame in zip(video.frame_names, noisy, strict=True):
            Image.fromarray(frame).save(out_dir / video.id / f"{name}.png")
    return out_dir


def write_base_predictions(root: str | Path, seed: int) -> Path:
    """Write `<root>/base_predictions/<video>/<frame>.png` for every video of every split of the set at
    `root`, from its masks; deterministic for (set, seed). Built in a hidden sibling folder and renamed
    into place."""
    from isam2.data.datasets import VSPW

    root = Path(root)
    target = root / BASE_PREDICTIONS
    tmp = Path(tempfile.mkdtemp(prefix=f".{BASE_PREDICTIONS}.", suffix=".tmp", dir=root))
    try:
        for stream, split in enumerate(SPLITS):
            if (root / f"{split}.txt").read_text().split():  # a set may have an empty split (num_val=0)
                write_noisy_base(VSPW(root, split), tmp, seed, stream)
        (tmp / BASE_STAMP).write_text(json.dumps({"noise": NOISE_VERSION, "seed": seed}))
        _install_base_predictions(tmp, target, seed)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _install_base_predictions(new: Path, target: Path, seed: int) -> None:
    """Rename `new` onto `target`; a stale `target` is first renamed aside and deleted. Two processes may
    rebuild at once (data-parallel ranks): whoever loses the race finds the same bytes installed and stops."""
    try:
        os.replace(new, target)  # onto a missing folder
        return
    except OSError:
        if base_predictions_current(target.parent, seed):
            return
    old = Path(tempfile.mkdtemp(prefix=f".{BASE_PREDICTIONS}.", suffix=".old", dir=target.parent))
    with contextlib.suppress(FileNotFoundError):  # another process moved it aside already
        os.replace(target, old / BASE_PREDICTIONS)
    shutil.rmtree(old, ignore_errors=True)
    try:
        os.replace(new, target)
    except OSError:
        if not base_predictions_current(target.parent, seed):
            raise


def base_predictions_current(root: str | Path, seed: int) -> bool:
    """Whether `<root>/base_predictions` was written by this noise model for this seed."""
    try:
        stamp = json.loads((Path(root) / BASE_PREDICTIONS / BASE_STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp == {"noise": NOISE_VERSION, "seed": seed}


def class_names() -> dict[str, int]:
    """The set's `label_num_dic_final.json`: class name -> raw VSPW id."""
    return {"others": 0} | {name: raw for name, raw, *_ in STUFF + THINGS}


def synthetic_settings(root: str | Path) -> dict | None:
    """The settings of the synthetic set at `root`, or None if `root` holds no set made by this module.

    A set carries MARKER. A set made before the marker existed is recognised by its layout: a `synthetic.json`
    with exactly SyntheticConfig's fields, this module's `label_num_dic_final.json` and the three split files."""
    root = Path(root)
    try:
        if (root / MARKER).is_file():
            record = json.loads((root / MARKER).read_text())
            return dict(record["settings"]) if record.get("made_by") == MADE_BY else None
        legacy = json.loads((root / LEGACY_STAMP).read_text())
        names = json.loads((root / "label_num_dic_final.json").read_text())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    if (
        isinstance(legacy, dict)
        and set(legacy) == set(SyntheticConfig.__dataclass_fields__)
        and names == class_names()
        and all((root / f"{split}.txt").is_file() for split in SPLITS)
    ):
        return legacy
    return None


def _check_replaceable(root: Path, cfg: SyntheticConfig, force: bool) -> bool:
    """Whether `root` (which exists) may be replaced by a new set; False: it already holds this very set.
    Raises DataError for anything that is not a synthetic set of ours, and for ours without force."""
    from isam2.data.video import DataError

    if not root.is_dir():
        raise DataError(f"{root} is not a folder: refusing to replace it; choose a new or empty folder")
    if not any(root.iterdir()):
        return True
    settings = synthetic_settings(root)
    if settings is None:
        raise DataError(
            f"{root} is not empty and holds no synthetic set made by {MADE_BY} (no {MARKER}): "
            "refusing to delete or overwrite it; choose a new or empty folder"
        )
    if force:
        return True
    if settings == asdict(cfg):
        return False
    raise DataError(
        f"{root} already holds a synthetic set made with other settings ({settings}); "
        "pass force=true to regenerate it, or choose another root"
    )


def generate(root: str | Path, cfg: SyntheticConfig = SyntheticConfig(), force: bool = False) -> Path:
    """Write the synthetic set under `root` (VSPW_480p layout). Deterministic for `cfg`; atomic: built in a
    hidden temporary sibling, then renamed into place. `root` must be new, empty, or a synthetic set of ours
    (`synthetic_settings`): the same set is kept as it is, another one is replaced only with `force`."""
    root = Path(root).expanduser().resolve()
    if root.exists() and not _check_replaceable(root, cfg, force):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        rng = np.random.default_rng(cfg.seed)
        counts = {"train": cfg.num_train, "val": cfg.num_val, "test": cfg.num_test}
        for split in SPLITS:
            ids = [f"{split}_{i:03d}" for i in range(counts[split])]
            for vid in ids:
                frames, masks = _video(
                    rng, int(rng.integers(cfg.min_frames, cfg.max_frames + 1)), cfg.height, cfg.width
                )
                for sub in ("origin", "mask"):
                    (tmp / "data" / vid / sub).mkdir(parents=True)
                for t in range(len(frames)):
                    name = f"{t:08d}"
                    Image.fromarray(frames[t]).save(
                        tmp / "data" / vid / "origin" / f"{name}.jpg", quality=cfg.jpeg_quality
                    )
                    Image.fromarray(masks[t]).save(tmp / "data" / vid / "mask" / f"{name}.png")
            (tmp / f"{split}.txt").write_text("".join(f"{v}\n" for v in ids))
        (tmp / "label_num_dic_final.json").write_text(json.dumps(class_names(), indent=1))
        write_base_predictions(tmp, cfg.seed)
        (tmp / MARKER).write_text(json.dumps({"made_by": MADE_BY, "settings": asdict(cfg)}, indent=1))
        _swap_in(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def _swap_in(new: Path, root: Path) -> None:
    """Rename the finished set `new` onto `root`. A set already at `root` (checked as ours) is first renamed
    aside, then deleted: a kill in between leaves no `root` at all, never a half set."""
    if root.exists() and any(root.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=root.parent))
        os.replace(root, old)
        os.replace(new, root)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, root)  # onto a missing or empty folder


def ensure_synthetic(root: str | Path, cfg: SyntheticConfig = SyntheticConfig()) -> Path:
    """Generate the set on first use (missing or empty root). An existing synthetic set is used as it is,
    its base predictions (re)written when missing or made by another noise model; the set is never overwritten (regenerate it with `python -m isam2.data.synthetic root=<root> force=true`)."""
    root = Path(root).expanduser()
    settings = synthetic_settings(root)
    if settings is not None:
        if settings != asdict(cfg):
            log.warning(f"{root} holds a synthetic set made with other settings; using it as it is")
        seed = int(settings.get("seed", 0))
        if not base_predictions_current(root, seed):  # a set made before them, or by an older noise model
            log.info(f"writing the base predictions of {root} ...")
            write_base_predictions(root, seed)
        return root
    if root.exists():
        _check_replaceable(root, cfg, force=False)  # refuses anything but an empty folder
    log.info(f"generating the synthetic dataset in {root} ...")
    return generate(root, cfg)


@user_errors_exit
def main(argv: list[str] | None = None) -> None:
    """CLI: `python -m isam2.data.synthetic root=<dir> [key=value ...] [force=true]` (keys of SyntheticConfig)."""
    fields = SyntheticConfig.__dataclass_fields__
    args: dict[str, str] = {}
    for arg in sys.argv[1:] if argv is None else argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in {"root", "force", *fields}:
            raise ConfigError(
                f"{arg!r} is not a setting root=, force=true|false or one of {', '.join(fields)}"
            )
        args[key] = value
    root = args.pop("root", "data/synthetic")
    force = args.pop("force", "false").lower()
    if force not in ("true", "false"):
        raise ConfigError(f"force={force} must be true or false")
    try:
        cfg = SyntheticConfig(**{k: int(v) for k, v in args.items()})
    except ValueError:
        raise ConfigError(f"the settings {args} must be integers") from None
    console_logging()
    out = generate(root, cfg, force=force == "true")
    log.info(f"wrote {cfg.num_train}+{cfg.num_val}+{cfg.num_test} videos to {out}")


if __name__ == "__main__":
    main()
