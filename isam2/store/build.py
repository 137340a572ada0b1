"""The one `ensure_store`: open a finished store or build it (1 process, DDP or torchrun), resumably."""

from __future__ import annotations

import functools
import json
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from isam2.distributed import (
    barrier,
    broadcast_from_zero,
    in_process_group,
    launched_rank,
    launcher_fabric,
    rank_and_world,
    shard_indices,
)
from isam2.errors import ConfigError, ISAM2Error
from isam2.files import write_json
from isam2.masklets.settings import check_extraction_settings
from isam2.runs import package_versions
from isam2.store.coordination import (
    LOCK_NAME,
    BuildLock,
    BuildSettings,
    Heartbeat,
    PeerWatch,
    reset_heartbeats,
    wait_until,
)
from isam2.store.extraction import extract_videos
from isam2.store.format import check_video_id, encoder_folder
from isam2.store.identity import config_hash, masklet_identity, store_folder, store_identity
from isam2.store.reader import MaskletStore
from isam2.store.writer import (
    done_videos,
    finalize_store,
    prepare_folder,
    verified_done_videos,
)


def _versions() -> dict[str, str]:
    return package_versions(("isam2", "torch", "sam2", "numpy", "lightning"))


@functools.lru_cache(maxsize=1)
def _backbone(sam2_json: str) -> Any:
    """The frozen SAM2 of a config, built once per process: train builds three stores with one model
    (building it again would re-initialise or re-load, and re-hash, the checkpoint)."""
    from hydra.utils import instantiate

    # seeded when random: every rank and rerun gets the same weights
    return instantiate(json.loads(sam2_json))


def _build_backbone_and_source(cfg: DictConfig, path: Path) -> tuple[Any, Any]:
    from isam2.masklets.generator import build_masklet_source

    backbone = _backbone(json.dumps(OmegaConf.to_container(cfg.sam2, resolve=True), sort_keys=True))
    source = build_masklet_source(cfg.masklets, backbone)  # sets the pooling levels, hence feature_dim
    write_json(
        path / "backbone.json", {"metadata": backbone.metadata(), "feature_dim": int(source.feature_dim)}
    )
    return backbone, source


# ---------------------------------------------------------------------------------------- building


def ensure_store(
    cfg: DictConfig, split: str, force: bool = False, progress: bool = True, launch: bool = False
) -> MaskletStore:
    """The store of (cfg.data, split, cfg.sam2, cfg.masklets) under cfg.paths.store_dir, built if missing.

    In an initialised process group the ranks share the work. Only `python -m isam2.extract` passes
    `launch=True`: there, when cfg.trainer asks for several devices, Lightning Fabric launches the ranks
    (re-running the command). Elsewhere (train, evaluate, refine) one process builds a missing store: a
    process launched as rank > 0 without a process group (torchrun, srun, Lightning's DDP children) waits
    for rank 0 to build it. Every `sam2` and `masklets` setting is checked first, before a folder is made or
    a frame is read; `cfg.store_build` holds the lock and wait settings (`coordination.BuildSettings`).
    """
    check_extraction_settings(cfg)
    settings = BuildSettings.from_cfg(cfg)
    # with the configured encoders, if not just [sam2]
    full_identity = store_identity(cfg, split, split_targets(cfg, split))
    identity = masklet_identity(full_identity)
    path = store_folder(cfg.paths.store_dir, identity)
    if launch and not in_process_group() and (force or not (path / "manifest.json").is_file()):
        fabric = launcher_fabric(cfg.trainer)
        if fabric is not None:
            fabric.launch()  # re-runs this command for the other ranks (Lightning's script launcher)
    if not in_process_group() and launched_rank() != 0:
        store = _follow_rank_zero(cfg, split, identity, path, force, settings)
    else:
        store = _ensure_in_group(cfg, split, identity, path, force, progress, settings)
    encoders = full_identity.get("encoders")
    return _with_encoders(cfg, split, store, encoders, config_hash(identity), settings, progress)


def _with_encoders(
    cfg: DictConfig,
    split: str,
    store: MaskletStore,
    encoders: list[dict[str, Any]] | None,
    expected_hash: str,
    settings: BuildSettings,
    progress: bool,
) -> MaskletStore:
    """`store` reading the vectors of cfg.encoder's encoders (None: its own SAM2 vectors), after adding those
    it lacks: rank 0 computes them (`isam2.store.encoder_pass`: no SAM2 work, the masklets are the store's)
    while the other ranks wait for their records."""
    if encoders is None:
        return store
    from isam2.encoders import encoder_configs
    from isam2.store.format import ENCODER_RECORD

    configs = list(encoder_configs(cfg).values())
    todo = [
        (c, ident)
        for c, ident in zip(configs, encoders)
        if ident["name"] != "sam2" and not (encoder_folder(store.path, ident) / ENCODER_RECORD).is_file()
    ]
    if todo:
        rank = rank_and_world()[0] if in_process_group() else launched_rank()
        if rank == 0:
            from isam2.data import open_split
            from isam2.store.encoder_pass import add_encoder_features

            videos = open_split(cfg.data, split, require_masks=False).videos
            with Heartbeat(store.path, 0, settings.heartbeat_seconds):
                for c, ident in todo:
                    add_encoder_features(store, c, ident, videos, progress)
        elif not in_process_group():
            wait_until(
                lambda: all((encoder_folder(store.path, i) / ENCODER_RECORD).is_file() for _, i in todo),
                PeerWatch(store.path, [0], settings.dead_after_seconds, fresh=False),
                settings.wait_seconds,
                f"rank 0 to add the encoders' vectors to {store.path}",
            )
        barrier()
    return MaskletStore(store.path, expected_hash, encoders=encoders)


def split_targets(cfg: DictConfig, split: str) -> str:
    """Which videos of the split have ground truth ("all", "none", "some"): a store of unlabelled frames holds
    no targets, so it is another store than a labelled one of the same frames. A split not there yet (the
    synthetic set before its first use) is taken as labelled; reading it later says what is wrong."""
    from isam2.data import DataError, labelled_status, open_split

    try:
        return labelled_status(open_split(cfg.data, split, require_masks=False, generate=False))
    except Exception as e:  # Hydra's instantiate wraps the reader's DataError
        if isinstance(e, DataError) or isinstance(e.__cause__, DataError):
            return "all"
        raise


def _open_finished(path: Path, expected: str, video_ids: list[str], force: bool) -> MaskletStore | None:
    """The finished store at `path` (checked against the config hash and the split's videos), None when
    there is none yet or `force` asks for a rebuild."""
    if force or not (path / "manifest.json").is_file():
        return None
    store = MaskletStore(path, expected_hash=expected)
    _check_videos(store, video_ids)
    return store


def _follow_rank_zero(
    cfg: DictConfig, split: str, identity: dict[str, Any], path: Path, force: bool, settings: BuildSettings
) -> MaskletStore:
    """A process launched as rank > 0 without a process group: rank 0 builds the store alone, this one waits."""
    from isam2.data import open_split

    if force:
        raise ConfigError(
            f"force=true: rank {launched_rank()} was launched without a process group, so it cannot rebuild "
            "a store together with rank 0; rebuild it with python -m isam2.extract force=true"
        )
    manifest = path / "manifest.json"
    wait_until(
        manifest.is_file,
        PeerWatch(path, [0], settings.dead_after_seconds, fresh=False),
        settings.wait_seconds,
        f"rank 0 to build the masklet store {path}",
    )
    video_ids = [v.id for v in open_split(cfg.data, split, require_masks=False).videos]
    return _open_finished(path, config_hash(identity), video_ids, force=False)


def _ensure_in_group(
    cfg: DictConfig,
    split: str,
    identity: dict[str, Any],
    path: Path,
    force: bool,
    progress: bool,
    settings: BuildSettings,
) -> MaskletStore:
    from isam2.data import open_split

    rank, world = rank_and_world()
    expected = config_hash(identity)
    lock = BuildLock(path)

    # Rank 0 decides (open as is / build), takes the build lock and prepares the folder; the others follow.
    outcome: tuple[str, ISAM2Error | None] = ("build", None)
    if rank == 0:
        try:
            # first on rank 0: it may generate the synthetic set
            dataset = open_split(cfg.data, split, require_masks=False)
            video_ids = [v.id for v in dataset.videos]
            for video_id in video_ids:  # every id must name a file, before the first video is extracted
                check_video_id(video_id, getattr(dataset, "split_source", dataset.root / f"{split}.txt"))
            opened = _open_finished(path, expected, video_ids, force)
            if opened is None:
                lock.acquire(settings.lock_wait_seconds)
                opened = _open_finished(path, expected, video_ids, force)  # built while this one waited
            if opened is None:
                prepare_folder(path, identity, force, keep=(LOCK_NAME,))
                reset_heartbeats(path)
            else:
                lock.release()
                outcome = ("open", None)
        except BaseException as e:
            lock.release()
            if not isinstance(e, ISAM2Error):
                raise
            outcome = ("error", e)
    outcome = broadcast_from_zero(outcome)
    if outcome[0] == "error":
        raise outcome[1]
    if outcome[0] == "open":
        return opened if rank == 0 else MaskletStore(path, expected_hash=expected)
    if rank != 0:
        dataset = open_split(cfg.data, split, require_masks=False)
        video_ids = [v.id for v in dataset.videos]

    manifest = path / "manifest.json"
    peers = [r for r in range(world) if r != rank]
    try:
        # A failure leaves this rank's heartbeat with the error, which stops the ranks waiting on it.
        with Heartbeat(path, rank, settings.heartbeat_seconds):
            _extract_mine(cfg, split, dataset, path, rank, world, progress)
            # Rank 0 removes the shards once it has finalised: the manifest then stands for all of them.
            wait_until(
                lambda: manifest.is_file() or done_videos(path) >= set(video_ids),
                PeerWatch(path, peers, settings.dead_after_seconds, fresh=True),
                settings.wait_seconds,
                f"the shards of every rank in {path}",
            )
            if rank == 0:
                finalize_store(
                    path,
                    video_ids,
                    _manifest(cfg, split, identity, expected, path, getattr(dataset, "layout", None)),
                    _feature_dim(cfg, path),
                )
            else:
                wait_until(
                    manifest.is_file,
                    PeerWatch(path, [0], settings.dead_after_seconds, fresh=True),
                    settings.wait_seconds,
                    f"rank 0 to write {manifest}",
                )
    finally:
        lock.release()
    barrier()
    if rank == 0:
        reset_heartbeats(path)  # an empty folder by now
    return MaskletStore(path, expected_hash=expected)


def _extract_mine(
    cfg: DictConfig, split: str, dataset: Any, path: Path, rank: int, world: int, progress: bool
) -> None:
    from tqdm import tqdm

    sizes = [len(v) for v in dataset.videos]
    mine = shard_indices(sizes, rank, world)
    done = verified_done_videos(path, [dataset.videos[i].id for i in mine])  # a corrupt shard is redone
    todo = [i for i in mine if dataset.videos[i].id not in done]
    if not todo:
        return
    _, source = _build_backbone_and_source(cfg, path)
    desc = f"extract {cfg.data.name}/{split}" + (f" rank {rank}/{world}" if world > 1 else "")
    with tqdm(
        total=sum(sizes[i] for i in todo), desc=desc, unit="frame", disable=not progress, position=rank
    ) as bar:
        extract_videos(source, [dataset.videos[i] for i in todo], path, bar)


def _feature_dim(cfg: DictConfig, path: Path) -> int:
    return int(_backbone_record(cfg, path)["feature_dim"])


def _backbone_record(cfg: DictConfig, path: Path) -> dict[str, Any]:
    """What the ranks that extracted recorded about the backbone; rebuilt if every shard predates this run."""
    file = path / "backbone.json"
    if not file.is_file():
        _build_backbone_and_source(cfg, path)
    return json.loads(file.read_text())


def _manifest(
    cfg: DictConfig,
    split: str,
    identity: dict[str, Any],
    expected: str,
    path: Path,
    layout: str | None = None,
) -> dict[str, Any]:
    return {
        "config_hash": expected,
        "identity": identity,
        "dataset": {"name": str(cfg.data.name), "root": identity["data"]["root"], "layout": layout},
        "split": split,
        "sam2": OmegaConf.to_container(cfg.sam2, resolve=True),
        "backbone": _backbone_record(cfg, path)["metadata"],
        "masklets": OmegaConf.to_container(cfg.masklets, resolve=True),
        "targets": identity["data"].get("targets", "all"),
        "versions": _versions(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _check_videos(store: MaskletStore, video_ids: list[str]) -> None:
    if store.videos() != video_ids:
        raise ISAM2Error(
            f"masklet store {store.path} lists {len(store.videos())} videos but the split file now lists "
            f"{len(video_ids)} (or another order); pass force=true to rebuild it"
        )
