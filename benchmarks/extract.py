"""Masklet extraction under real load: our engine (native AMG, batched propagation) against sam2's stock path
(its SAM2AutomaticMaskGenerator and its per-object `propagate_in_video`), in one process, on the same frames.

    .venv/bin/python benchmarks/extract.py                      # CPU defaults: hiera_t, 64 px, K=50
    .venv/bin/python benchmarks/extract.py --image-size 256     # the compute-bound CPU regime
    .venv/bin/python benchmarks/extract.py --seed-objects 10 --json out.json
    python benchmarks/extract.py --device cuda                  # GPU defaults: hiera_l, 1024 px, 480x854, window 32
    python benchmarks/extract.py --device cuda --profile        # + torch.profiler's top kernels of our engine

`--seed-objects K` seeds K smooth blob objects per keyframe instead of running the AMG (the same blobs for
both engines): random weights keep no AMG masks at the paper's thresholds, while a trained SAM2 keeps some
tens. K=0 is a frame without masklets (encoder and writing only); K<0 runs the AMG itself. The frames are a
synthetic video written as JPEG in the VSPW layout and read back by the project's reader, and every shard
is written, so decode and write are real. Besides the whole path it times the image encoder alone, in
batches, and the AMG at the paper's thresholds, per keyframe, for both engines. The last line is
`seed-objects K=<K>: ours <x> fps, stock <y> fps, ratio <r>x`.

Two encoders (`--second-encoder dinov2|segformer`, random weights of the real sizes: DINOv2-B at 448 px,
MiT-B1 at 512 px on CUDA; DINOv2-S at 224 px, MiT-B0 at 256 px on the CPU): our engine's extraction
with SAM2's vectors (one encoder), then the second encoder's pass over the finished store's id maps and
the frames (docs/encoders.md), in the same process. It prints `two encoders / one: <r>x`; masklets are
shared, so the target is < 1.5x.

    python benchmarks/extract.py --device cuda --skip-stock --amg-frames 0 --second-encoder dinov2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from isam2.data.datasets import VSPW
from isam2.data.synthetic import SyntheticConfig, generate
from isam2.masklets.generator import SAM2MaskletSource
from isam2.masklets.runtime import apply_tf32
from isam2.masklets.sam2_backbone import SAM2Backbone
from isam2.masklets.seeded import SeededMaskletSource
from isam2.masklets.settings import SAM2_DEFAULTS
from isam2.masklets.timing import STAGES, StageClock
from isam2.store.extraction import extract_videos
from isam2.store.reader import MaskletStore
from isam2.store.writer import finalize_store, prepare_folder

ENGINES = {
    "stock": {"amg": "sam2", "propagation": "per_object"},
    "ours": {"amg": "native", "propagation": "batched"},
}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_source(backbone: SAM2Backbone, args: argparse.Namespace, engine: str, amg_thresholds: dict):
    settings = {
        **SAM2_DEFAULTS,
        **amg_thresholds,
        **ENGINES[engine],
        "window": args.window,
        "points_per_batch": args.points_per_batch,
        "frames_per_batch": args.frames_per_batch,
    }
    if args.seed_objects >= 0:
        source = SeededMaskletSource(backbone, settings, seed_objects=args.seed_objects, seed=args.seed)
    else:
        source = SAM2MaskletSource(backbone, settings)
    source.clock = StageClock(enabled=True, device=backbone.device)
    return source


def time_extraction(backbone, args, engine, videos, out_dir: Path, amg_thresholds: dict) -> dict:
    source = make_source(backbone, args, engine, amg_thresholds)
    sync(backbone.device)
    start = time.perf_counter()
    extract_videos(source, videos, out_dir)
    sync(backbone.device)
    wall = time.perf_counter() - start
    frames = sum(len(v) for v in videos)
    return {"fps": frames / wall, "seconds": wall, "stages": dict(source.clock.seconds)}


def time_encoder(backbone: SAM2Backbone, videos, frames_per_batch: int) -> float:
    """Frames per second of the image encoder alone, in batches, on frames already decoded."""
    clips = [v.load_frames() for v in videos]
    sync(backbone.device)
    start = time.perf_counter()
    for clip in clips:
        for s in range(0, len(clip), frames_per_batch):
            backbone.encode_batch(clip[s : s + frames_per_batch])
    sync(backbone.device)
    return sum(len(c) for c in clips) / (time.perf_counter() - start)


def time_amg(backbone: SAM2Backbone, args, engine: str, videos, n: int) -> float:
    """Milliseconds per keyframe of the AMG at the paper's thresholds (features computed beforehand)."""
    source = make_source(backbone, args, engine, {})
    frames = videos[0].load_frames()[:n]
    encoded = [backbone.encode(f) for f in frames]
    sync(backbone.device)
    start = time.perf_counter()
    for frame, enc in zip(frames, encoded):
        source.keyframe_masks(frame, enc)
    sync(backbone.device)
    return 1000 * (time.perf_counter() - start) / len(frames)


def profile_ours(backbone, args, videos, out_dir: Path, amg_thresholds: dict) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if backbone.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        time_extraction(backbone, args, "ours", videos, out_dir, amg_thresholds)
    key = "self_cuda_time_total" if backbone.device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=25)


def second_encoder_settings(name: str, gpu: bool) -> dict:
    """Random-weight settings of the second encoder at a real size (DINOv2-B / MiT-B1 on CUDA, S / B0 on CPU)."""
    if name == "dinov2":
        config = {} if gpu else {"hidden_size": 384, "num_attention_heads": 6, "intermediate_size": 1536}
        return {
            "name": "dinov2",
            "_target_": "isam2.encoders.dinov2.Dinov2Encoder",
            "config": config,
            "input_size": 448 if gpu else 224,
        }
    return {
        "name": "segformer",
        "_target_": "isam2.encoders.segformer.SegformerEncoder",
        "variant": "b1" if gpu else "b0",
        "input_size": 512 if gpu else 256,
    }


def time_two_encoders(backbone, args, videos, out_dir: Path, amg_thresholds: dict) -> dict:
    """Seconds of extraction with SAM2's vectors (masklets + store), then of the second encoder's pass."""
    from isam2.encoders import build_encoder, encoder_identity
    from isam2.store.encoder_pass import add_encoder_features

    prepare_folder(out_dir, {"benchmark": "two encoders"}, force=True)
    start = time.perf_counter()
    one = time_extraction(backbone, args, "ours", videos, out_dir, amg_thresholds)
    finalize_store(out_dir, [v.id for v in videos], {"config_hash": "benchmark"}, backbone.feature_dim)
    store = MaskletStore(out_dir)
    sync(backbone.device)
    one_seconds = time.perf_counter() - start
    settings = {
        **second_encoder_settings(args.second_encoder, backbone.device.type == "cuda"),
        "device": str(backbone.device),
        "frames_per_batch": args.frames_per_batch,
    }
    # Built and warmed up outside the timing, as SAM2 is (imports, weights, first-call kernels).
    encoder = build_encoder(settings)
    encoder.maps(videos[0].load_frames()[: args.frames_per_batch], videos[0], range(args.frames_per_batch))
    sync(backbone.device)
    start = time.perf_counter()
    add_encoder_features(store, settings, encoder_identity(settings), videos, progress=False, encoder=encoder)
    sync(backbone.device)
    second = time.perf_counter() - start
    return {
        "encoder": args.second_encoder,
        "one_seconds": one_seconds,
        "second_pass_seconds": second,
        "ratio": (one_seconds + second) / one_seconds,
        "masklets": len(store),
        "one": one,
    }


def parse(argv: list[str] | None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="auto")
    p.add_argument("--variant", default=None, help="default: hiera_l on CUDA, hiera_t on CPU")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--image-size", type=int, default=None, help="default: 1024 on CUDA, 64 on CPU")
    p.add_argument("--frames", type=int, default=64 if cuda else 16)
    p.add_argument("--height", type=int, default=480 if cuda else 240)
    p.add_argument("--width", type=int, default=854 if cuda else 427)
    p.add_argument("--window", type=int, default=32 if cuda else 8)
    p.add_argument("--seed-objects", type=int, default=50, help="K blobs per keyframe; <0 runs the AMG")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--points-per-batch", type=int, default=256 if cuda else 64)
    p.add_argument("--frames-per-batch", type=int, default=8)
    p.add_argument("--amg-frames", type=int, default=4, help="keyframes for the AMG timing (0: skip it)")
    p.add_argument("--skip-stock", action="store_true", help="time ours only (no ratio)")
    p.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of our engine")
    p.add_argument("--json", default=None, help="also write the figures to this file")
    p.add_argument(
        "--second-encoder",
        choices=("none", "dinov2", "segformer"),
        default="none",
        help="also time adding a second encoder's vectors (masklets shared): the two-encoder ratio",
    )
    args = p.parse_args(argv)
    gpu = args.device.startswith("cuda") or (args.device == "auto" and cuda)
    args.variant = args.variant or ("hiera_l" if gpu else "hiera_t")
    args.image_size = args.image_size or (1024 if gpu else 64)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    apply_tf32({"tf32": True})
    backbone = SAM2Backbone(
        args.variant, checkpoint=args.checkpoint, image_size=args.image_size, device=args.device
    )
    # Random weights keep nothing at the paper's thresholds; with K<0 (AMG on) the thresholds are opened.
    amg_thresholds = (
        {"pred_iou_thresh": 0.0, "stability_score_thresh": 0.0} if args.checkpoint is None else {}
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "video"
        generate(
            root,
            SyntheticConfig(
                num_train=1,
                num_val=0,
                num_test=0,
                min_frames=args.frames,
                max_frames=args.frames,
                height=args.height,
                width=args.width,
                seed=args.seed,
            ),
        )
        videos = list(VSPW(root, "train"))
        warm = list(VSPW(root, "train"))[:1]
        for engine in ENGINES:  # warm-up: kernels, allocator, autotuning
            time_extraction(
                backbone,
                argparse.Namespace(**{**vars(args), "seed_objects": min(args.seed_objects, 2)}),
                engine,
                warm,
                Path(tmp) / f"warm-{engine}",
                amg_thresholds,
            )
        result: dict = {
            "device": str(backbone.device)
            + (f" ({torch.cuda.get_device_name(backbone.device)})" if backbone.device.type == "cuda" else ""),
            "dtype": backbone.dtype_mode,
            "variant": args.variant,
            "image_size": args.image_size,
            "frames": sum(len(v) for v in videos),
            "frame_hw": [args.height, args.width],
            "window": args.window,
            "seed_objects": args.seed_objects,
        }
        result["encoder_fps"] = time_encoder(backbone, videos, args.frames_per_batch)
        engines = ["ours"] if args.skip_stock else ["stock", "ours"]
        for engine in engines:
            result[engine] = time_extraction(
                backbone, args, engine, videos, Path(tmp) / engine, amg_thresholds
            )
        if args.amg_frames > 0:
            for engine in engines:
                result[engine]["amg_ms_paper"] = time_amg(backbone, args, engine, videos, args.amg_frames)
        if args.profile:
            print(profile_ours(backbone, args, videos, Path(tmp) / "profile", amg_thresholds))
        if args.second_encoder != "none":
            result["two_encoders"] = time_two_encoders(
                backbone, args, videos, Path(tmp) / "two", amg_thresholds
            )

    print(
        f"masklet extraction, {args.variant} {backbone.dtype_mode} on {result['device']}, {args.image_size} px, "
        f"{result['frames']} frames of {args.height}x{args.width}, window {args.window}, "
        f"{'AMG' if args.seed_objects < 0 else f'{args.seed_objects} seeded objects'} per keyframe, "
        f"weights {'random' if args.checkpoint is None else args.checkpoint}"
    )
    print(
        f"  image encoder alone, {args.frames_per_batch} frames per forward: {result['encoder_fps']:.2f} fps"
    )
    for engine in engines:
        r = result[engine]
        stages = "  ".join(f"{s} {r['stages'].get(s, 0.0):.2f}s" for s in STAGES)
        amg = f"; AMG at paper thresholds {r['amg_ms_paper']:.1f} ms/keyframe" if "amg_ms_paper" in r else ""
        print(f"  {engine:5s} {r['fps']:8.2f} fps ({r['seconds']:.2f} s): {stages}{amg}")
    if not args.skip_stock:
        result["ratio"] = result["ours"]["fps"] / result["stock"]["fps"]
    if "two_encoders" in result:
        two = result["two_encoders"]
        print(
            f"  sam2 only {two['one_seconds']:.2f} s ({two['masklets']} masklets); + {two['encoder']} pass "
            f"{two['second_pass_seconds']:.2f} s; two encoders / one: {two['ratio']:.2f}x"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if not args.skip_stock:
        print(
            f"seed-objects K={args.seed_objects}: ours {result['ours']['fps']:.2f} fps, "
            f"stock {result['stock']['fps']:.2f} fps, ratio {result['ratio']:.2f}x"
        )
    return result


if __name__ == "__main__":
    main()
