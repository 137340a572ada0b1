"""Benchmark: masklet vectors/s through a store-mode fit vs the raw read rate of the same fp16 bytes.

python benchmarks/train.py [--rows 2000000] [--dim 256] [--batch-size 16384] [--depth 0] [--device auto]
Prints both rates and their ratio (target: training >= 25% of the raw read rate).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def write_store(folder: Path, rows: int, dim: int, block: int = 1 << 18) -> SimpleNamespace:
    """A memory-mapped store in the MaskletStore array layout (features/label/purity .npy)."""
    rng = np.random.default_rng(0)
    feats = np.lib.format.open_memmap(folder / "features.npy", "w+", np.float16, (rows, dim))
    for start in range(0, rows, block):
        n = min(block, rows - start)
        feats[start : start + n] = rng.standard_normal((n, dim), np.float32).astype(np.float16)
    feats.flush()
    np.save(folder / "label.npy", rng.integers(0, 124, rows).astype(np.uint8))
    np.save(folder / "purity.npy", np.ones(rows, np.float32))
    return SimpleNamespace(
        **{k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in ("features", "label", "purity")}
    )


def raw_read_rate(path: Path, block: int = 1 << 16) -> float:
    """Rows/s of np.load(mmap_mode="r") summed in blocks (the bytes a fit must at least touch)."""
    feats = np.load(path, mmap_mode="r")
    start = time.perf_counter()
    total = 0.0
    for i in range(0, len(feats), block):
        total += float(feats[i : i + block].sum(dtype=np.float32))
    return len(feats) / (time.perf_counter() - start)


def train_rate(store: SimpleNamespace, args: argparse.Namespace) -> tuple[float, float]:
    """(rows/s of the first epoch incl. the one-time device load, rows/s of a later epoch)."""
    import lightning.pytorch as pl
    import torch

    from isam2.datamodules.stores import StoreDataModule
    from isam2.model.module import MaskletClassifier

    class EpochTimer(pl.Callback):
        def __init__(self):
            self.times: list[float] = []

        def on_train_epoch_start(self, trainer, module):
            self.start = time.perf_counter()

        def on_train_epoch_end(self, trainer, module):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

    accelerator = (
        "gpu"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    dm = StoreDataModule({"train": store}, {}, batch_size=args.batch_size, device_resident=True)
    model = MaskletClassifier(
        num_classes=124, feature_dim=store.features.shape[1], head={"depth": args.depth, "dropout": 0.0}
    )
    timer = EpochTimer()
    trainer = pl.Trainer(
        max_epochs=args.epochs,
        accelerator=accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        callbacks=[timer],
        precision="bf16-mixed" if accelerator == "gpu" else "32-true",
    )
    model.set_training_statistics(**dm.training_statistics())
    trainer.fit(model, datamodule=dm)
    rows = len(store.features)
    return rows / timer.times[0], rows / min(timer.times[1:] or timer.times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16384)
    parser.add_argument("--depth", type=int, default=0, help="hidden layers of the head (0 = linear)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp), args.rows, args.dim)
        raw_read_rate(Path(tmp) / "features.npy")  # warm the page cache: both sides read from memory
        raw = raw_read_rate(Path(tmp) / "features.npy")
        first, steady = train_rate(store, args)
    print(
        f"store: {args.rows} x {args.dim} fp16 ({args.rows * args.dim * 2 / 2**30:.2f} GiB), batch {args.batch_size}, head depth {args.depth}"
    )
    print(f"raw read (np.load mmap, block sums): {raw / 1e6:8.2f} M vectors/s")
    print(f"fit, first epoch (incl. device load): {first / 1e6:8.2f} M vectors/s  ratio {first / raw:.2f}")
    print(
        f"fit, steady epoch:                    {steady / 1e6:8.2f} M vectors/s  ratio {steady / raw:.2f} (target >= 0.25)"
    )


if __name__ == "__main__":
    main()
