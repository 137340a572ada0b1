"""Masklet extraction speed: our SAM2 source (AMG on keyframes + propagation, one encoder forward per frame)
against the plain route (sam2's SAM2AutomaticMaskGenerator.generate on every frame, plus a second encoder
pass to pool Eq. 3 features). Same model, same frames, same AMG settings.

    .venv/bin/python benchmarks/extract.py                 # short default run (CPU: 256 px, 32 frames)
    .venv/bin/python benchmarks/extract.py --frames 64 --image-size 1024 --json out.json

Runs on CUDA with bf16 autocast when present (defaults then: 1024 px, 480x854 frames, 16x16 points, 64
frames). Weights are random unless --checkpoint is given, so the AMG thresholds default to 0 (random
weights give almost no masks at the paper's 0.6 / 0.8); with random weights AMG's masks are few after NMS,
which makes propagation cheap: with a real checkpoint (tens of masklets per keyframe) the ratio is lower.
Prints frames/s of both and their ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isam2.masklets.generator import build_masklet_source
from isam2.masklets.sam2_backbone import SAM2Backbone, import_sam2

import_sam2()
from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator  # noqa: E402


def synthetic_frames(T: int, H: int, W: int, seed: int = 0) -> np.ndarray:
    """A gradient background with a few coloured discs and boxes drifting across it, plus noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    base = np.stack([xx / W * 120 + 40, yy / H * 120 + 60, (xx + yy) / (H + W) * 80 + 30], -1)
    objects = [
        (
            rng.uniform(0, H),
            rng.uniform(0, W),
            rng.uniform(0.05, 0.2) * H,
            rng.uniform(-2, 2),
            rng.uniform(-3, 3),
            rng.integers(0, 256, 3),
            rng.random() < 0.5,
        )
        for _ in range(6)
    ]
    frames = np.empty((T, H, W, 3), np.uint8)
    for t in range(T):
        img = base.copy()
        for y, x, r, vy, vx, color, disc in objects:
            cy, cx = (y + vy * t) % H, (x + vx * t) % W
            inside = (
                ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2)
                if disc
                else ((abs(yy - cy) < r) & (abs(xx - cx) < 1.5 * r))
            )
            img[inside] = color
        img += rng.normal(0, 6, img.shape)
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_ours(backbone: SAM2Backbone, cfg: dict, frames: np.ndarray) -> tuple[float, int]:
    source = build_masklet_source(cfg, backbone)
    sync(backbone.device)
    t0 = time.perf_counter()
    n = sum(len(fm) for fm in source.video(frames))
    sync(backbone.device)
    return time.perf_counter() - t0, n


def run_baseline(backbone: SAM2Backbone, cfg: dict, frames: np.ndarray) -> tuple[float, int]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning)
        amg = SAM2AutomaticMaskGenerator(
            backbone.model,
            points_per_side=cfg["points_per_side"],
            points_per_batch=cfg["points_per_batch"],
            pred_iou_thresh=cfg["pred_iou_thresh"],
            stability_score_thresh=cfg["stability_score_thresh"],
            stability_score_offset=cfg["stability_score_offset"],
            box_nms_thresh=cfg["box_nms_thresh"],
        )
    S = backbone.image_size
    amg.predictor._bb_feat_sizes = [(S // 4, S // 4), (S // 8, S // 8), (S // 16, S // 16)]
    sync(backbone.device)
    t0 = time.perf_counter()
    n = 0
    for frame in frames:
        with backbone.context():
            anns = amg.generate(frame)  # encoder forward 1 (inside set_image)
        masks = torch.from_numpy(np.stack([a["segmentation"] for a in anns])) if anns else None
        enc = backbone.encode(frame)  # encoder forward 2, for Eq. 3
        if masks is not None:
            backbone.pool(enc, masks).cpu()
            n += len(anns)
    sync(backbone.device)
    return time.perf_counter() - t0, n


def main(argv: list[str] | None = None) -> dict:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--variant", default="hiera_t")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--image-size", type=int, default=1024 if cuda else 256)
    p.add_argument("--frames", type=int, default=64 if cuda else 32)
    p.add_argument("--height", type=int, default=480 if cuda else 180)
    p.add_argument("--width", type=int, default=854 if cuda else 320)
    p.add_argument("--window", type=int, default=32)
    p.add_argument("--points-per-side", type=int, default=16 if cuda else 8)
    p.add_argument("--points-per-batch", type=int, default=64)
    p.add_argument("--pred-iou-thresh", type=float, default=0.0)
    p.add_argument("--stability-score-thresh", type=float, default=0.0)
    p.add_argument("--json", default=None, help="also write the figures to this file")
    args = p.parse_args(argv)

    torch.manual_seed(0)
    backbone = SAM2Backbone(
        args.variant, checkpoint=args.checkpoint, image_size=args.image_size, device=args.device
    )
    cfg = {
        "source": "sam2",
        "window": args.window,
        "points_per_side": args.points_per_side,
        "points_per_batch": args.points_per_batch,
        "pred_iou_thresh": args.pred_iou_thresh,
        "stability_score_thresh": args.stability_score_thresh,
        "stability_score_offset": 0.9,
        "box_nms_thresh": 0.7,
    }
    frames = synthetic_frames(args.frames, args.height, args.width)
    # warm-up (CUDA kernels, allocator, autotuning): a short clip through both routes
    run_ours(backbone, cfg, frames[:2])
    run_baseline(backbone, cfg, frames[:1])

    calls = backbone.encoder_calls
    t_ours, n_ours = run_ours(backbone, cfg, frames)
    calls_ours = backbone.encoder_calls - calls
    t_base, n_base = run_baseline(backbone, cfg, frames)
    T = len(frames)
    result = {
        "device": str(backbone.device)
        + (f" ({torch.cuda.get_device_name(backbone.device)})" if cuda else ""),
        "dtype": backbone.dtype_mode,
        "variant": args.variant,
        "checkpoint": backbone.metadata()["checkpoint_sha256"],
        "image_size": args.image_size,
        "frames": T,
        "frame_hw": [args.height, args.width],
        "window": args.window,
        "points_per_side": args.points_per_side,
        "ours_fps": T / t_ours,
        "baseline_fps": T / t_base,
        "speedup": t_base / t_ours,
        "ours_masklets_per_frame": n_ours / T,
        "baseline_masks_per_frame": n_base / T,
        "ours_encoder_forwards_per_frame": calls_ours / T,
        "baseline_encoder_forwards_per_frame": 2.0,
    }
    print(
        f"masklet extraction, {args.variant} {backbone.dtype_mode} on {result['device']}, {args.image_size} px, "
        f"{T} frames of {args.height}x{args.width}, {args.points_per_side}x{args.points_per_side} points, "
        f"weights {'random' if args.checkpoint is None else args.checkpoint}"
    )
    print(
        f"  baseline (AMG every frame + 2nd encoder pass): {result['baseline_fps']:8.2f} frames/s  "
        f"({result['baseline_masks_per_frame']:.1f} masks/frame, 2 encoder forwards/frame)"
    )
    print(
        f"  ours (AMG every {args.window} frames + propagation): {result['ours_fps']:8.2f} frames/s  "
        f"({result['ours_masklets_per_frame']:.1f} masklets/frame, "
        f"{result['ours_encoder_forwards_per_frame']:.2f} encoder forwards/frame)"
    )
    print(f"  speed-up (ours / baseline): {result['speedup']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
