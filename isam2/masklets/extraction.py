"""Building a MaskletStore: run the masklet source over a split's videos (1 process, DDP or torchrun), resumably.

Distributed protocol (the store folder is the shared state, so it must be on a file system every rank sees):
rank 0 takes the store's build lock, checks/prepares the folder and broadcasts the outcome; each rank beats
its heartbeat, extracts its whole videos (`shard_indices`, no padding) and writes their shards; every rank
waits until all shards exist (polling the folder, not a collective, so a slow rank never trips a collective
timeout); rank 0 finalises; the others wait for manifest.json; a final barrier; every rank opens the store.
Waits have a deadline, and a rank that failed (its heartbeat carries the error) or died (its heartbeat
stopped, or its process on this host is gone) stops the waiting ranks with an error naming it
(`isam2.masklets.coordination`).

Ranks are launched only by `python -m isam2.extract` (`ensure_store(..., launch=True)`). Elsewhere a
process launched as rank > 0 without a process group (torchrun, srun, Lightning's DDP children) waits
for rank 0, which builds a missing store alone.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from isam2.constants import VOID
from isam2.data.sharding import asks_for_several_processes, launched_rank, rank_and_world, shard_indices
from isam2.data.streams import HeldChunks, as_chunks, prefetched
from isam2.errors import ConfigError, ISAM2Error
from isam2.files import BackgroundWriter, write_json
from isam2.masklets.coordination import (
    LOCK_NAME,
    BuildLock,
    BuildSettings,
    Heartbeat,
    PeerWatch,
    reset_heartbeats,
    wait_until,
)
from isam2.masklets.pooling import mask_areas
from isam2.masklets.settings import check_extraction_settings
from isam2.masklets.store import (
    ROW_DTYPES,
    SHARD_ARRAYS,
    IdMapWriter,
    MaskletStore,
    VideoShard,
    check_video_id,
    config_hash,
    done_videos,
    encoder_folder,
    finalize_store,
    masklet_identity,
    non_finite_arrays,
    paint_ids,
    prepare_folder,
    store_folder,
    store_identity,
    verified_done_videos,
    write_video_shard,
)
from isam2.masklets.targets import masklet_targets
from isam2.masklets.timing import StageClock


def video_chunks(video: Any, size: int, clock: StageClock | None = None) -> Iterator[tuple[np.ndarray, Any]]:
    """A video's frames [n,H,W,3] uint8 and GT train ids [n,H,W] (None without GT), `size` frames at a time."""
    from isam2.data.streams import SplitVideoStream

    clock = clock or StageClock()
    windows = SplitVideoStream(video).windows(size)
    while True:
        with clock("decode"):
            window = next(windows, None)
        if window is None:
            return
        yield window.frames, window.gt


def frame_rows(
    fm: Any, t: int, gt: torch.Tensor | None, first_row: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Frame t's store rows and its id map (local rows from `first_row`). Everything is computed where the
    masks are (the GPU in a CUDA run); only the pooled vectors, the per-row numbers and the id map come back."""
    masks, scores, tracks, features = fm.masks, fm.scores, fm.tracks, fm.features
    area = mask_areas(masks)
    keep = area > 0  # a lost object leaves an empty mask: it is not a masklet
    if not bool(keep.all()):
        masks, area, scores, tracks, features = (x[keep] for x in (masks, area, scores, tracks, features))
    scores = scores.float()
    features = features.to(torch.float16)
    targets = masklet_targets(masks, gt)
    id_map = paint_ids(masks, scores, first_row).to(torch.int32)
    n = int(masks.shape[0])
    rows = {
        "features": features.cpu().numpy(),
        "frame": np.full(n, t, np.int32),
        "track": tracks.cpu().numpy().astype(np.int64),
        "area": area.cpu().numpy().astype(np.int64),
        "score": scores.cpu().numpy(),
        "label": targets.label,
        "purity": targets.purity,
        "valid": targets.valid,
    }
    return rows, id_map.cpu().numpy()


def extract_frames(
    source: Any,
    video_id: str,
    frames: Any,
    gt: np.ndarray | None = None,
    progress: Any = None,
    id_maps: IdMapWriter | None = None,
) -> VideoShard:
    """All masklets of one video: rows in frame order (empty masklets dropped), targets, id maps. `frames`: the
    whole video [T,H,W,3] (with `gt`), or an iterable of its (frames, gt) chunks, consumed as they come;
    `id_maps`: a writer that takes each frame's id map as it comes (None: the shard keeps them in a list)."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in SHARD_ARRAYS}
    maps: list[np.ndarray] | IdMapWriter = [] if id_maps is None else id_maps
    counted = HeldChunks(as_chunks(frames, gt))
    first_row = 0
    for t, fm in enumerate(source.video(counted)):
        (chunk_frames, chunk_gt), offset = counted.locate(t)
        if tuple(fm.masks.shape[1:]) != tuple(chunk_frames.shape[1:3]):
            raise ISAM2Error(
                f"video {video_id!r} frame {t}: masklets are {tuple(fm.masks.shape[1:])}, "
                f"the frame is {chunk_frames.shape[1:3]}"
            )
        gt_t = None if chunk_gt is None else chunk_gt[offset]
        gt_t = None if gt_t is None else torch.from_numpy(np.ascontiguousarray(gt_t)).to(fm.masks.device)
        rows, id_map = frame_rows(fm, t, gt_t, first_row)
        bad = non_finite_arrays(rows)  # in the store's dtypes: an fp32 feature beyond fp16's range is inf
        if bad:
            raise ISAM2Error(
                f"video {video_id!r} frame {t}: masklet {' and '.join(bad)} not finite (NaN or infinite, "
                "features in fp16); nothing of this video was written"
            )
        n = len(rows["frame"])
        for key in SHARD_ARRAYS:
            parts[key].append(rows[key])
        if isinstance(maps, list):
            maps.append(id_map)
        else:
            maps.add(id_map)
        first_row += n
        if progress is not None:
            progress.update(1)
            progress.set_postfix(masklets_per_frame=f"{n}")
    if len(maps) != counted.frames:
        raise ISAM2Error(
            f"the masklet source gave {len(maps)} frames for video {video_id!r} of {counted.frames} frames"
        )
    return VideoShard(rows={k: _concat(v, k) for k, v in parts.items()}, id_maps=maps)


def _concat(parts: list[np.ndarray], key: str) -> np.ndarray:
    if parts:
        return np.concatenate(parts)
    return np.zeros((0, 0) if key == "features" else 0, ROW_DTYPES[key])


def extract_video(source: Any, video: Any, progress: Any = None) -> VideoShard:
    """Extract all masklets of one dataset video, decoded window by window (see `extract_frames`)."""
    return extract_frames(
        source, video.id, video_chunks(video, source.chunk_size, source.clock), None, progress
    )


def extract_videos(source: Any, videos: list[Any], path: Path, progress: Any = None) -> None:
    """Extract `videos` into shards of the store folder `path`, window by window: a decode thread reads the
    next window while this one is on the device, and a writer thread compresses each frame's id map into the
    video's archive as it comes and then writes the row shard. Neither side holds more than a window or two
    of frames, however long the video."""
    if not videos:
        return
    clock = source.clock
    archives: list[IdMapWriter] = []
    writer = BackgroundWriter(pending=8)
    try:
        for video in videos:
            chunks = prefetched(video_chunks(video, source.chunk_size, clock))
            archives.append(IdMapWriter(path, video.id))
            sink = _ThreadedIdMaps(archives[-1], writer, clock)
            rows = extract_frames(source, video.id, chunks, None, progress, sink).rows
            # the writer runs in order: the shard is written after the video's last id map
            writer.submit(_write_shard, path, video.id, VideoShard(rows, archives[-1]), clock)
        writer.wait()
    except BaseException:
        writer.wait(raise_errors=False)
        for archive in archives:  # the writer thread has stopped: no archive is being written to
            archive.abort()
        raise


class _ThreadedIdMaps:
    """An `IdMapWriter` fed through the background writer (compression off the device's path)."""

    def __init__(self, archive: IdMapWriter, writer: BackgroundWriter, clock: StageClock):
        self.archive, self.writer, self.clock = archive, writer, clock
        self.count = 0

    def add(self, id_map: np.ndarray) -> None:
        self.writer.submit(self._add, id_map)
        self.count += 1

    def _add(self, id_map: np.ndarray) -> None:
        with self.clock("write"):
            self.archive.add(id_map)

    def __len__(self) -> int:
        return self.count


def _write_shard(path: Path, video_id: str, shard: VideoShard, clock: StageClock) -> None:
    with clock("write"):
        write_video_shard(path, video_id, shard)


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("isam2", "torch", "sam2", "numpy", "lightning"):
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            out[pkg] = "missing"
    return out


@functools.lru_cache(maxsize=1)
def _backbone(sam2_json: str) -> Any:
    """The frozen SAM2 of a config, built once per process: train builds three stores with one model
    (building it again would re-initialise or re-load, and re-hash, the checkpoint)."""
    from hydra.utils import instantiate

    return instantiate(
        json.loads(sam2_json)
    )  # seeded when random: every rank and rerun gets the same weights


def _build_backbone_and_source(cfg: DictConfig, path: Path) -> tuple[Any, Any]:
    from isam2.masklets.generator import build_masklet_source

    backbone = _backbone(json.dumps(OmegaConf.to_container(cfg.sam2, resolve=True), sort_keys=True))
    source = build_masklet_source(cfg.masklets, backbone)  # sets the pooling levels, hence feature_dim
    write_json(
        path / "backbone.json", {"metadata": backbone.metadata(), "feature_dim": int(source.feature_dim)}
    )
    return backbone, source


# ----------------------------------------------------------------------------- process coordination


def _broadcast_from_zero(value: Any) -> Any:
    if dist.is_available() and dist.is_initialized():
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]
    return value


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _in_group() -> bool:
    return dist.is_available() and dist.is_initialized()


def _launcher_fabric(trainer_cfg: DictConfig) -> Any | None:
    """A Lightning Fabric for cfg.trainer when it asks for several processes, else None."""
    if not asks_for_several_processes(trainer_cfg):
        return None
    devices = trainer_cfg.get("devices", 1)
    num_nodes = int(trainer_cfg.get("num_nodes", 1) or 1)
    from lightning.fabric import Fabric

    fabric = Fabric(
        accelerator=trainer_cfg.get("accelerator", "auto"),
        devices=devices,
        num_nodes=num_nodes,
        strategy=trainer_cfg.get("strategy", "auto"),
    )
    return fabric if fabric.world_size > 1 else None


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
    full_identity = store_identity(
        cfg, split, split_targets(cfg, split)
    )  # with the configured encoders, if not just [sam2]
    identity = masklet_identity(full_identity)
    path = store_folder(cfg.paths.store_dir, identity)
    if launch and not _in_group() and (force or not (path / "manifest.json").is_file()):
        fabric = _launcher_fabric(cfg.trainer)
        if fabric is not None:
            fabric.launch()  # re-runs this command for the other ranks (Lightning's script launcher)
    if not _in_group() and launched_rank() != 0:
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
    it lacks: rank 0 computes them (`isam2.encoders.features`: no SAM2 work, the masklets are the store's)
    while the other ranks wait for their records."""
    if encoders is None:
        return store
    from isam2.encoders import encoder_configs
    from isam2.masklets.store import ENCODER_RECORD

    configs = list(encoder_configs(cfg).values())
    todo = [
        (c, ident)
        for c, ident in zip(configs, encoders)
        if ident["name"] != "sam2" and not (encoder_folder(store.path, ident) / ENCODER_RECORD).is_file()
    ]
    if todo:
        rank = rank_and_world()[0] if _in_group() else launched_rank()
        if rank == 0:
            from isam2.data import open_split
            from isam2.encoders.features import add_encoder_features

            videos = open_split(cfg.data, split, require_masks=False).videos
            with Heartbeat(store.path, 0, settings.heartbeat_seconds):
                for c, ident in todo:
                    add_encoder_features(store, c, ident, videos, progress)
        elif not _in_group():
            wait_until(
                lambda: all((encoder_folder(store.path, i) / ENCODER_RECORD).is_file() for _, i in todo),
                PeerWatch(store.path, [0], settings.dead_after_seconds, fresh=False),
                settings.wait_seconds,
                f"rank 0 to add the encoders' vectors to {store.path}",
            )
        _barrier()
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
            dataset = open_split(
                cfg.data, split, require_masks=False
            )  # first on rank 0: it may generate the synthetic set
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
    outcome = _broadcast_from_zero(outcome)
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
    _barrier()
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


# ----------------------------------------------------------------------------------------- summary


def summarize(store: MaskletStore) -> dict[str, float]:
    """Videos, frames, masklets, mean masklets/frame, mean frame coverage, mean purity of targeted masklets."""
    videos = store.manifest["videos"]
    frames = sum(v["frames"] for v in videos)
    coverage = sum(v["covered_pixels"] / max(1, v["height"] * v["width"]) for v in videos)
    targeted = np.asarray(store.label) != VOID
    return {
        "videos": len(videos),
        "frames": frames,
        "masklets": len(store),
        "masklets_per_frame": len(store) / max(1, frames),
        "coverage": coverage / max(1, frames),
        "purity": float(np.asarray(store.purity)[targeted].mean()) if targeted.any() else float("nan"),
    }


def format_summary(summary: dict[str, float]) -> str:
    purity = summary["purity"]
    purity_text = "n/a (no masklet with a target)" if purity != purity else f"{100 * purity:.1f}%"  # NaN
    return (
        f"videos: {summary['videos']}  frames: {summary['frames']}  masklets: {summary['masklets']}\n"
        f"masklets/frame: {summary['masklets_per_frame']:.1f}  coverage: {100 * summary['coverage']:.1f}%  "
        f"purity: {purity_text}"
    )


__all__ = [
    "ensure_store",
    "extract_frames",
    "extract_video",
    "extract_videos",
    "format_summary",
    "summarize",
    "video_chunks",
]
