"""`python -m isam2.refine`: the SAM2 refiner (Eq. 1-2) over a folder of base predictions, scored before and after."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from tqdm import tqdm

from isam2.cli import hydra_entry
from isam2.files import check_output_apart, write_json


@hydra_entry("refine")
def main(cfg: DictConfig) -> None:
    from isam2.data import DataError, open_split
    from isam2.data.predictions import check_predictions, prediction_path, read_prediction, write_prediction
    from isam2.masklets.store import ensure_store, store_folder, store_identity
    from isam2.metrics import VideoSegmentationMetrics, format_table
    from isam2.segment.refine import refine

    base_dir = Path(cfg.base_pred_dir)
    out_dir = Path(cfg.output_dir).resolve()
    inputs = {
        "base_pred_dir": base_dir,
        "data.root": Path(cfg.data.root),
        "masklet store": store_folder(cfg.paths.store_dir, store_identity(cfg, cfg.data.split)),
    }
    check_output_apart(out_dir, "output_dir", inputs)  # before any work: refine never writes over its input
    dataset = open_split(cfg.data, cfg.data.split)
    check_predictions(base_dir, dataset.videos)
    store = ensure_store(cfg, cfg.data.split, force=cfg.force)
    metrics = {
        name: VideoSegmentationMetrics(num_classes=dataset.num_classes, **cfg.metrics)
        for name in ("base", "refined")
    }
    for video in tqdm(dataset, desc="refine", unit="video"):
        base = np.stack(
            [read_prediction(prediction_path(base_dir, video.id, f), video.size) for f in video.frame_names]
        )
        if base.dtype != np.uint8:
            raise DataError(f"base predictions of video {video.id!r} in {base_dir} are not 8-bit label PNGs")
        base = torch.from_numpy(base)
        refined = refine(base, torch.from_numpy(store.id_maps(video.id)))
        for name, frame in zip(video.frame_names, refined.numpy(), strict=True):
            write_prediction(out_dir / video.id / f"{name}.png", frame)
        gt = torch.from_numpy(video.load_masks())
        metrics["base"].update(base, gt)
        metrics["refined"].update(refined, gt)
    results = {name: m.compute() for name, m in metrics.items()}
    print(format_table({"base": results["base"], "SAM2-refiner": results["refined"]}))
    for path in {Path(cfg.paths.output_dir) / "metrics.json", out_dir / "metrics.json"}:
        write_json(path, results)
    print(f"refined predictions: {out_dir}")


if __name__ == "__main__":
    main()
