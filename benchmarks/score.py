"""Benchmark: isam2's metrics vs a plain numpy implementation of the official loops, at VSPW resolution.

`python benchmarks/score.py [--videos 4 --frames 30 --height 480 --width 853 --repeats 2]` prints frames/s
of both on the same in-memory label maps (PNG decoding, equal for both, is left out) and their ratio,
and checks that both give the same numbers. Both run on one CPU thread. The baseline functions double as
the tests' independent reference of docs/metrics.md.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

# ---------------------------------------------------------------- the numpy baseline (official loops)


def confusion_numpy(pred: np.ndarray, gt: np.ndarray, c: int) -> np.ndarray:
    """VSPW Evaluator._generate_matrix, with a miss column C for predictions outside [0, C)."""
    mask = (gt >= 0) & (gt < c)
    p = pred[mask].astype(np.int64)
    p[(p < 0) | (p >= c)] = c
    label = (c + 1) * gt[mask].astype(np.int64) + p
    return np.bincount(label, minlength=c * (c + 1)).reshape(c, c + 1)


def band_numpy(gt: np.ndarray, c: int, width: int) -> np.ndarray:
    """Union over GT classes k of M_k minus erode(M_k, width x width), outside the image never eroding."""
    r = width // 2
    h, w = gt.shape
    band = np.zeros(gt.shape, bool)
    for k in np.unique(gt):
        if not 0 <= k < c:
            continue
        m = gt == k
        padded = np.pad(m, r, constant_values=True)
        eroded = np.ones_like(m)
        for dy in range(width):
            for dx in range(width):
                eroded &= padded[dy : dy + h, dx : dx + w]
        band |= m & ~eroded
    return band


def vc_windows_numpy(gts: np.ndarray, preds: np.ndarray, n: int, num_windows: int) -> list[float]:
    """VC_perclip.get_common: the first `num_windows` windows; NaN where no pixel's GT is consistent."""
    h, w = gts.shape[1:]
    accs = []
    for i in range(num_windows):
        global_common = np.ones((h, w))
        predglobal_common = np.ones((h, w))
        for j in range(1, n):
            global_common = np.logical_and(global_common, gts[i] == gts[i + j])
            predglobal_common = np.logical_and(predglobal_common, preds[i] == preds[i + j])
        both = predglobal_common * global_common
        den = global_common.sum()
        accs.append(both.sum() / den if den else float("nan"))
    return accs


def reference_metrics(videos, c=124, classes="gt", protocol="cffm", lengths=(8, 16), width=5) -> dict:
    """docs/metrics.md in plain numpy loops. videos: list of (pred [T,H,W], gt [T,H,W]) integer arrays."""
    cm = np.zeros((c, c + 1), np.int64)
    biou = []
    vc = {n: [] for n in lengths}
    for pred, gt in videos:
        pred, gt = np.asarray(pred).astype(np.int64), np.asarray(gt).astype(np.int64)
        for p, g in zip(pred, gt):
            cm += confusion_numpy(p, g, c)
            b = band_numpy(g, c, width)
            if b.any():
                hit = (b & (p == g)).sum()
                biou.append(hit / (b.sum() + (b & (p >= 0) & (p < c)).sum() - hit))
        t = len(gt)
        for n in lengths:
            if protocol == "paper":
                if t >= n:
                    accs = np.array(vc_windows_numpy(gt, pred, n, t - n + 1))
                    if not np.isnan(accs).all():
                        vc[n].append(np.nanmean(accs))
            elif t > (16 if protocol == "cffm" else n):
                vc[n].extend(vc_windows_numpy(gt, pred, n, t - n))
    tp = np.diag(cm[:, :c])
    gt_count = cm.sum(1)
    union = gt_count + cm[:, :c].sum(0) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = tp / union
    chosen = gt_count > 0 if classes == "gt" else union > 0
    out = {
        "miou": float(iou[chosen].mean()) if chosen.any() else None,
        "fwiou": float((gt_count[gt_count > 0] / gt_count.sum() * iou[gt_count > 0]).sum())
        if gt_count.sum()
        else None,
        "mbiou": float(np.mean(biou)) if biou else None,
        "per_class_iou": [None if u == 0 else float(v) for u, v in zip(union, iou)],
    }
    for n in lengths:
        a = np.array(vc[n], float)
        out[f"mvc{n}"] = float(np.nanmean(a)) if (~np.isnan(a)).any() else None
    return out


# ---------------------------------------------------------------- synthetic data and timing


def synthetic_videos(num_videos: int, frames: int, h: int, w: int, seed: int = 0):
    """GT: two stuff regions, a void patch and moving blocks; prediction: GT with shifted and noisy regions."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    videos = []
    for _ in range(num_videos):
        gts = np.empty((frames, h, w), np.uint8)
        horizon = rng.uniform(0.3, 0.6) * h
        objs = [
            (
                rng.integers(2, 20),
                rng.uniform(0, h),
                rng.uniform(0, w),
                rng.uniform(-4, 4),
                rng.uniform(-8, 8),
                rng.uniform(0.05, 0.2) * h,
            )
            for _ in range(6)
        ]
        for t in range(frames):
            g = np.where(yy < horizon + 10 * np.sin(xx / 40 + t / 5), 0, 1).astype(np.uint8)
            for k, y0, x0, vy, vx, s in objs:
                g[(np.abs(yy - y0 - vy * t) < s) & (np.abs(xx - x0 - vx * t) < 1.5 * s)] = k
            g[20:50, 100:180] = 255
            gts[t] = g
        preds = np.roll(gts, shift=(2, -3), axis=(1, 2)).copy()
        flips = rng.random(preds.shape) < 0.01
        preds[flips] = rng.integers(0, 30, flips.sum())
        preds[:, -40:, :60] = 200  # out of range: a miss
        videos.append((preds, gts))
    return videos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=int, default=4)
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--width", type=int, default=853)
    ap.add_argument("--repeats", type=int, default=2, help="best of this many timed runs for each")
    args = ap.parse_args()

    import torch

    from isam2.metrics import VideoSegmentationMetrics

    # the numpy baseline is single-threaded; 1 thread is also robust on a busy machine
    torch.set_num_threads(1)
    videos = synthetic_videos(args.videos, args.frames, args.height, args.width)
    tensors = [(torch.from_numpy(p), torch.from_numpy(g)) for p, g in videos]
    num_frames = sum(len(g) for _, g in videos)

    def ours():
        m = VideoSegmentationMetrics()
        for p, g in tensors:
            m.update(p, g)
        return m.compute()

    def best(fn):
        times, out = [], None
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return min(times), out

    t_ours, r_ours = best(ours)
    t_base, r_base = best(lambda: reference_metrics(videos))
    keys = ["miou", "fwiou", "mbiou", "mvc8", "mvc16"]
    diff = max(abs(r_ours[k] - r_base[k]) for k in keys)
    print(
        f"{args.videos} videos x {args.frames} frames at {args.height}x{args.width} ({num_frames} frames), best of {args.repeats}"
    )
    print("  " + "  ".join(f"{k}={r_ours[k]:.4f}" for k in keys) + f"  (max |ours - baseline| = {diff:.1e})")
    print(f"  numpy baseline (official loops): {num_frames / t_base:8.1f} frames/s")
    print(f"  isam2 VideoSegmentationMetrics: {num_frames / t_ours:8.1f} frames/s")
    print(f"  speed-up: {t_base / t_ours:.1f}x")
    if diff > 1e-6:
        raise SystemExit(f"results differ from the baseline by {diff:.2e}")


if __name__ == "__main__":
    main()
