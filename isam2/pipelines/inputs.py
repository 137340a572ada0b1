"""What every pipeline starts from: the stores and datasets of its splits, checked, and the data module over them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from omegaconf import DictConfig

from isam2.constants import VOID
from isam2.errors import ConfigError, ISAM2Error

DEMO_NOTE = (
    "note: SAM2 runs with RANDOM weights (sam2.checkpoint=null) and ground-truth masklets "
    "(masklets=gt): a smoke-scale demo whose numbers say nothing about SAM2. With a real checkpoint: "
    "python -m isam2.train experiment=vspw_isam2 sam2.checkpoint=<sam2.1_hiera_large.pt> data.root=<VSPW_480p>"
)


# ---- stores, datasets, data module ------------------------------------------------------------------------
def open_stores_and_datasets(
    cfg: DictConfig, roles: Mapping[str, str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """For each role -> split: the masklet store (built first when missing) and the dataset reader."""
    from isam2.data import open_split
    from isam2.store.build import ensure_store

    by_split_store: dict[str, Any] = {}
    by_split_data: dict[str, Any] = {}
    for split in dict.fromkeys(roles.values()):
        by_split_data[split] = open_split(cfg.data, split)
        by_split_store[split] = ensure_store(cfg, split)
        check_store_targets(by_split_store[split])
        check_store_labels(by_split_store[split], int(cfg.data.num_classes))
    return (
        {role: by_split_store[split] for role, split in roles.items()},
        {role: by_split_data[split] for role, split in roles.items()},
    )


def check_store_targets(store: Any) -> None:
    """Training and scoring need a store whose every video had ground truth (its masklets have targets)."""
    targets = store.manifest.get("targets", "all")
    if targets != "all":
        raise ConfigError(
            f"masklet store {store.path} has no targets for {'any' if targets == 'none' else 'some'} of its "
            "videos (built from a split without ground-truth masks): train and evaluate need a labelled split"
        )


def dataset_record(dataset: Any) -> dict[str, Any]:
    """Which data a result was computed on: reader name, split, root, the layout found and the split list read."""
    return {
        "name": dataset.name,
        "split": dataset.split,
        "root": str(dataset.root),
        "layout": dataset.layout,
        "split_list": str(dataset.split_source),
    }


def check_store_labels(store: Any, num_classes: int) -> None:
    """Every masklet target must be a class of `data.num_classes` (or VOID, no target)."""
    labels = np.asarray(store.label)
    targeted = labels[labels != VOID]
    if targeted.size and int(targeted.max()) >= num_classes:
        raise ConfigError(
            f"data.num_classes={num_classes}, but the masklet store {store.path} has targets up to class "
            f"{int(targeted.max())}; set data.num_classes to the dataset's class count"
        )


def build_datamodule(
    cfg: DictConfig,
    stores: dict[str, Any],
    datasets: dict[str, Any],
    videos: Mapping[str, list[str]] | None = None,
) -> Any:
    """The data module of cfg.datamodule over the opened stores; base predictions load when given."""
    from hydra.utils import instantiate

    return instantiate(
        cfg.datamodule,
        stores=stores,
        datasets=datasets,
        seed=int(cfg.seed),
        base_pred_dir=cfg.get("base_pred_dir"),
        videos=dict(videos) if videos else None,
    )


def require_base_if_filling(fill: str | None, cfg: DictConfig) -> None:
    """segment.fill=base paints uncovered pixels from a base segmentor: its predictions must be given."""
    if fill == "base" and not cfg.get("base_pred_dir"):
        raise ISAM2Error(
            "segment.fill=base needs base_pred_dir=<dir with <video>/<frame>.png base predictions>"
        )
