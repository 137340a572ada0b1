"""Test helper: tiny copies of VIPSeg's two layouts, made from a synthetic set (VSPW_480p layout).

`<dest>/VIPSeg/{imgs,panomasks}/<video>/` with `<split>.txt`, as VIPSeg ships, and inside it `VIPSeg_720P/
{images,panomasks}/<video>/` with `panoptic_gt_VIPSeg_<split>.json`, as its change2_720p.py and splitjson.py
write them: frames resized bilinearly and masks by nearest neighbour to `SCALE` times the size (480 -> 720).
Masks are 16-bit panoptic PNGs: stuff pixels hold the category, thing pixels category x 100 + instance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from isam2.data.datasets import VSPW
from isam2.data.synthetic import STUFF, THINGS

SCALE = 1.5
THING_IDS = {raw for _, raw, *_ in THINGS}


def panoptic(raw: np.ndarray) -> np.ndarray:
    """Raw VSPW ids -> VIPSeg panoptic ids (uint16): others and void -> 0, stuff -> category, thing ->
    category x 100 + instance (instance 1 on the left half, 2 on the right)."""
    out = np.where((raw == 0) | (raw == 255), 0, raw).astype(np.uint16)
    instance = 1 + (np.arange(raw.shape[1]) >= raw.shape[1] // 2)
    things = np.isin(raw, list(THING_IDS))
    return np.where(things, raw.astype(np.uint16) * 100 + instance[None, :], out).astype(np.uint16)


def nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    rows = (np.arange(size[0]) * mask.shape[0] // size[0]).clip(0, mask.shape[0] - 1)
    cols = (np.arange(size[1]) * mask.shape[1] // size[1]).clip(0, mask.shape[1] - 1)
    return mask[rows[:, None], cols[None, :]]


def make_vipseg(
    synthetic_root: Path, dest: Path, split: str = "val", keep: dict[str, int] | None = None
) -> tuple[Path, Path]:
    """Both layouts of `split` under `dest`; `keep`: video id -> number of first frames kept. Returns
    (original root, 720P root). The 720P JSON lists the videos sorted by id, as the official scripts do."""
    original, p720 = dest / "VIPSeg", dest / "VIPSeg" / "VIPSeg_720P"
    videos = VSPW(synthetic_root, split).videos
    entries = []
    for video in videos:
        frames = video.frames[: (keep or {}).get(video.id, len(video))]
        for sub in (original / "imgs", original / "panomasks", p720 / "images", p720 / "panomasks"):
            (sub / video.id).mkdir(parents=True)
        h, w = video.size
        big = (round(h * SCALE), round(w * SCALE))
        images = []
        for frame, mask in zip(frames, video.masks, strict=False):
            pano = panoptic(np.asarray(Image.open(mask)))
            rgb = Image.open(frame).convert("RGB")
            rgb.save(original / "imgs" / video.id / frame.name)
            Image.fromarray(pano).save(original / "panomasks" / video.id / mask.name)
            rgb.resize(big[::-1], Image.BILINEAR).save(p720 / "images" / video.id / frame.name)
            Image.fromarray(nearest(pano, big)).save(p720 / "panomasks" / video.id / mask.name)
            images.append({"id": mask.stem, "width": big[1], "height": big[0], "file_name": mask.name})
        entries.append({"video_id": video.id, "images": images})
    (original / f"{split}.txt").write_text("".join(f"{v.id}\n" for v in videos))
    categories = [
        {"id": raw - 1, "name": name, "isthing": int(raw in THING_IDS)} for name, raw, *_ in STUFF + THINGS
    ]
    coco = {
        "videos": sorted(entries, key=lambda e: e["video_id"]),
        "annotations": [],
        "categories": categories,
    }
    (p720 / f"panoptic_gt_VIPSeg_{split}.json").write_text(json.dumps(coco))
    (p720 / "panoVIPSeg_categories.json").write_text(json.dumps(categories))
    return original, p720
