"""The built-in synthetic dataset: small textured videos with moving, occluding objects, in the VSPW_480p layout.

`python -m isam2.data.synthetic root=<dir> [num_train=12 height=240 ... force=true]` writes it; `ensure_synthetic`
writes it on first use. Values are raw VSPW ids, so every reader path is the one real data takes.

A set is built in a hidden temporary sibling and renamed into place, so a killed generation leaves no
half set at `root`. It carries MARKER (what made it, with which settings); only a folder recognised as
such a set (`synthetic_settings`) is ever replaced, and only with force=true: any other folder is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from isam2.errors import ConfigError, user_errors_exit

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


def _texture(kind: str, colour, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RGB float texture evaluated at (possibly shifted) pixel coordinates."""
    c = np.asarray(colour, np.float32)
    if kind == "gradient":
        f = 0.75 + 0.5 * (yy / max(yy.max(), 1))
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
        img = np.where(
            sky[..., None], _texture(top[3], top[2], sy, sx, rng), _texture(bottom[3], bottom[2], sy, sx, rng)
        )
        lab = np.where(sky, top[1], bottom[1]).astype(np.uint8)
        others = (yy - oy) ** 2 + (xx - ox) ** 2 < orad**2
        img[others] = OTHERS_COLOUR
        lab[others] = 0
        for raw, colour, tex, size, pos, vel, shape, aspect in things:  # later things occlude earlier ones
            cy, cx = pos + vel * t
            dy, dx = (yy - cy) / size, (xx - cx) / (size * aspect)
            inside = (dy**2 + dx**2 < 1) if shape == "ellipse" else (np.abs(dy) < 0.8) & (np.abs(dx) < 0.8)
            img = np.where(inside[..., None], _texture(tex, colour, yy - cy, xx - cx, rng), img)
            lab[inside] = raw
        void = (yy >= vy) & (yy < vy + 12) & (xx >= vx) & (xx < vx + 30)
        lab[void] = 255
        noise = rng.normal(0, 6, size=img.shape).astype(np.float32)
        frames[t] = np.clip(img + noise, 0, 255).astype(np.uint8)
        masks[t] = lab
    return frames, masks


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
    never overwritten (regenerate it with `python -m isam2.data.synthetic root=<root> force=true`)."""
    root = Path(root).expanduser()
    settings = synthetic_settings(root)
    if settings is not None:
        if settings != asdict(cfg):
            print(
                f"note: {root} holds a synthetic set made with other settings; using it as it is",
                file=sys.stderr,
                flush=True,
            )
        return root
    if root.exists():
        _check_replaceable(root, cfg, force=False)  # refuses anything but an empty folder
    print(f"generating the synthetic dataset in {root} ...", file=sys.stderr, flush=True)
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
    out = generate(root, cfg, force=force == "true")
    print(f"wrote {cfg.num_train}+{cfg.num_val}+{cfg.num_test} videos to {out}")


if __name__ == "__main__":
    main()
