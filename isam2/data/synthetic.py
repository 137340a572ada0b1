"""The built-in synthetic dataset: small textured videos with moving, occluding objects, in the VSPW_480p layout.

`python -m isam2.data.synthetic root=<dir> [num_train=12 height=240 ...]` writes it; `ensure_synthetic`
writes it on first use. Values are raw VSPW ids, so every reader path is the one real data takes.
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


def generate(root: str | Path, cfg: SyntheticConfig = SyntheticConfig()) -> Path:
    """Write the synthetic set under `root` (VSPW_480p layout). Deterministic for `cfg`; atomic (temp dir, rename)."""
    root = Path(root).expanduser().resolve()
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
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
        names = {"others": 0} | {name: raw for name, raw, *_ in STUFF + THINGS}
        (tmp / "label_num_dic_final.json").write_text(json.dumps(names, indent=1))
        (tmp / "synthetic.json").write_text(json.dumps(asdict(cfg), indent=1))
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def ensure_synthetic(root: str | Path, cfg: SyntheticConfig = SyntheticConfig()) -> Path:
    """Generate the set on first use (missing or empty root). An existing synthetic set is used as it is,
    never overwritten: delete it to regenerate with other settings."""
    root = Path(root).expanduser()
    stamp = root / "synthetic.json"
    if stamp.is_file():
        if json.loads(stamp.read_text()) != asdict(cfg):
            print(
                f"note: {root} holds a synthetic set made with other settings ({stamp}); using it as it is",
                file=sys.stderr,
                flush=True,
            )
        return root
    if root.is_dir() and any(root.iterdir()):
        from isam2.data.video import DataError

        raise DataError(f"data.root={root} is not empty and holds no synthetic set: refusing to overwrite it")
    print(f"generating the synthetic dataset in {root} ...", file=sys.stderr, flush=True)
    return generate(root, cfg)


def main(argv: list[str] | None = None) -> None:
    """CLI: `python -m isam2.data.synthetic root=<dir> [key=value ...]` (keys of SyntheticConfig)."""
    args = dict(a.split("=", 1) for a in (sys.argv[1:] if argv is None else argv))
    root = args.pop("root", "data/synthetic")
    fields = SyntheticConfig.__dataclass_fields__
    unknown = set(args) - set(fields)
    if unknown:
        raise SystemExit(f"error: unknown setting(s) {sorted(unknown)}; known: root, {', '.join(fields)}")
    cfg = SyntheticConfig(**{k: int(v) for k, v in args.items()})
    out = generate(root, cfg)
    print(f"wrote {cfg.num_train}+{cfg.num_val}+{cfg.num_test} videos to {out}")


if __name__ == "__main__":
    main()
