"""The frozen SAM2: built from sam2's packaged configs without sam2's Hydra, loaded safely, encoded once per frame.

Why not `sam2.build_sam.build_sam2`: sam2 keeps a global Hydra of its own (`import sam2` initialises it),
which clashes with our `@hydra.main` (MissingConfigException inside it; "GlobalHydra is already
initialized" when sam2 is imported first). Here sam2 is imported through `sam2_adapter.import_sam2()`, which
undoes that global initialisation when nobody else had made it, and the model is built by loading the packaged
yaml with OmegaConf and calling `hydra.utils.instantiate(cfg.model)`, which needs no global Hydra.

One model object serves everything: it is built as a `FrozenSAM2VideoPredictor` (a subclass of sam2's
`SAM2VideoPredictor`, which subclasses `SAM2Base`) with the overrides of sam2's
`build_sam2_video_predictor`, and the same object is the model of the `SAM2ImagePredictor` inside the
automatic mask generator. The image-only overrides of `build_sam2` (dynamic multimask via stability)
are a subset of the video ones, so nothing differs for AMG.

Preprocessing is SAM2's: RGB / 255, resized to image_size x image_size (bilinear, antialiased, aspect NOT
kept, no padding), ImageNet mean/std. So the feature grid covers the whole original frame; see
`isam2.masklets.pooling` for how masks map onto it.
"""

from __future__ import annotations

import contextlib
import importlib.resources
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from isam2.constants import IMAGENET_MEAN, IMAGENET_STD
from isam2.errors import ISAM2Error
from isam2.files import cached_sha256, is_unset, load_weights
from isam2.logs import get_logger
from isam2.masklets import sam2_adapter
from isam2.masklets.pooling import pool_levels
from isam2.masklets.sam2_adapter import FrozenSAM2VideoPredictor, sam2_has_C
from isam2.masklets.settings import (
    check_image_size,
    check_pooling_levels,
    check_variant,
    resolve_device,
)

log = get_logger(__name__)

FEATURES_PER_LEVEL = 256


def config_resource(variant: str, version: str) -> str:
    """The packaged config of a variant, relative to the sam2 package."""
    if version == "2.1":
        return f"configs/sam2.1/sam2.1_{variant}.yaml"
    return f"configs/sam2/sam2_{variant}.yaml"


@dataclass
class EncodedFrame:
    """One frame through the frozen encoder: what SAM2's heads need, and the maps Eq. 3 pools."""

    backbone_out: dict  # SAM2's `forward_image` output (levels 0/1 projected by the decoder's conv_s0/s1)
    maps: list[torch.Tensor]  # pooling maps [256, h_l, w_l], one per pooling level
    orig_hw: tuple[int, int]

    def pool(self, masks: torch.Tensor) -> torch.Tensor:
        """Eq. 3 over every pooling level, concatenated: masks [n, H, W] at original resolution -> [n, d] float32."""
        if tuple(masks.shape[-2:]) != tuple(self.orig_hw):
            raise ValueError(f"masks {tuple(masks.shape)} do not match the frame size {self.orig_hw}")
        return pool_levels(self.maps, masks)


class SAM2Backbone:
    """A frozen SAM2 (eval, no gradients, inference mode; fp32 on CPU, bf16 autocast on CUDA).

    `encode(frame)` runs the image encoder once (counted in `encoder_calls`) and returns an
    `EncodedFrame` whose features feed AMG, the video predictor and Eq. 3 pooling alike.
    """

    def __init__(
        self,
        variant: str = "hiera_t",
        version: str = "2.1",
        checkpoint: str | Path | None = None,
        image_size: int = 1024,
        device: str = "auto",
        pooling_levels: Sequence[int] = (0,),
        tf32: bool | None = None,
    ):
        """`tf32` is process-wide, so the entry points switch it (`isam2.cli.hydra_entry` calls `isam2.masklets.runtime.apply_tf32`); it is
        accepted here because it lives in the `sam2` config group, and the value in force is in `metadata()`."""
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        try:
            sam2_adapter.check_sam2_version()
        except sam2_adapter.UnsupportedSAM2Version as e:
            raise ISAM2Error(str(e)) from None

        variant, version = check_variant(variant, version)
        image_size = check_image_size(image_size)
        self.variant, self.version, self.image_size = variant, version, image_size
        self.device = resolve_device(device)
        self.pooling_levels = pooling_levels  # validated by the setter

        resource = config_resource(variant, version)
        path = importlib.resources.files("sam2") / resource
        if not path.is_file():
            raise ISAM2Error(f"sam2 {version} has no packaged config {resource} for sam2={variant}")
        self.config_name = resource
        cfg = OmegaConf.load(str(path))
        m = cfg.model
        m._target_ = f"{FrozenSAM2VideoPredictor.__module__}.{FrozenSAM2VideoPredictor.__qualname__}"
        m.image_size = image_size
        # sam2's build_sam2_video_predictor(apply_postprocessing=True) overrides
        m.sam_mask_decoder_extra_args = {
            "dynamic_multimask_via_stability": True,
            "dynamic_multimask_stability_delta": 0.05,
            "dynamic_multimask_stability_thresh": 0.98,
        }
        m.binarize_mask_from_pts_for_mem_enc = True
        # Hole filling needs sam2._C's CUDA kernel; without it sam2 warns on every call and skips it.
        self.sam2_C = sam2_has_C()
        self.fill_hole_area = 8 if (self.sam2_C and self.device.type == "cuda") else 0
        m.fill_hole_area = self.fill_hole_area
        # RoPE tables for the stride-16 grid of this image size (sam2 recomputes them anyway on mismatch)
        grid = image_size // 16
        for att in ("self_attention", "cross_attention"):
            if att in m.memory_attention.layer:
                m.memory_attention.layer[att].feat_sizes = [grid, grid]
        OmegaConf.resolve(cfg)
        # Random weights (checkpoint=null) must be the same in every process and on every rerun, or a
        # store's features would depend on who built it: initialise under a fixed seed, leaving the
        # caller's RNG untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = instantiate(cfg.model, _recursive_=True)

        self.checkpoint = None if is_unset(checkpoint) else Path(checkpoint).expanduser()
        if self.checkpoint is None:
            self.checkpoint_sha256 = "random"
            msg = (
                f"sam2.checkpoint is not set: SAM2 {variant} (SAM {version}) runs with RANDOM WEIGHTS. "
                "Masklets and features are meaningless for real use; set sam2.checkpoint=<path to a .pt>."
            )
            log.warning(msg)
        else:
            self.checkpoint_sha256 = self._load_checkpoint(model, self.checkpoint)

        model = model.to(self.device).eval()
        model.requires_grad_(False)
        self.model: FrozenSAM2VideoPredictor = model
        self.encoder_calls = 0
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    # ------------------------------------------------------------------ settings
    @property
    def pooling_levels(self) -> tuple[int, ...]:
        return self._pooling_levels

    @pooling_levels.setter
    def pooling_levels(self, levels: Sequence[int]) -> None:
        self._pooling_levels = check_pooling_levels(levels)

    @property
    def feature_dim(self) -> int:
        """Length of a pooled masklet vector: 256 per pooling level."""
        return FEATURES_PER_LEVEL * len(self._pooling_levels)

    @property
    def dtype_mode(self) -> str:
        return "bf16-autocast" if self.device.type == "cuda" else "fp32"

    def context(self) -> contextlib.ExitStack:
        """inference_mode, plus bf16 autocast on CUDA. Enter it around every use of `self.model`."""
        stack = contextlib.ExitStack()
        stack.enter_context(torch.inference_mode())
        if self.device.type == "cuda":
            stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
        return stack

    # ------------------------------------------------------------------ checkpoint
    def _load_checkpoint(self, model: torch.nn.Module, path: Path) -> str:
        what = f"sam2={self.variant} sam2.version={self.version} ({self.config_name})"
        if not path.is_file():
            raise ISAM2Error(f"sam2.checkpoint {path} does not exist (wanted for {what})")
        obj = load_weights(path, "sam2.checkpoint")
        if not isinstance(obj, dict) or not isinstance(obj.get("model"), dict):
            raise ISAM2Error(
                f"sam2.checkpoint {path} is not a SAM2 checkpoint (no 'model' state dict) for {what}"
            )
        sd = obj["model"]
        own = model.state_dict()
        missing = [k for k in own if k not in sd]
        unexpected = [k for k in sd if k not in own]
        mismatched = [
            f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}"
            for k in own
            if k in sd and hasattr(sd[k], "shape") and tuple(sd[k].shape) != tuple(own[k].shape)
        ]
        if missing or unexpected or mismatched:
            parts = []
            for name, items in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("shape mismatch", mismatched),
            ):
                if items:
                    parts.append(f"{len(items)} {name} (e.g. {', '.join(items[:3])})")
            raise ISAM2Error(f"sam2.checkpoint {path} does not fit {what}: " + "; ".join(parts))
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            raise ISAM2Error(f"sam2.checkpoint {path} does not fit {what}: {e}") from None
        log.info("loaded SAM2 checkpoint %s into %s", path, what)
        return cached_sha256(path)

    # ------------------------------------------------------------------ encoding
    def preprocess(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """RGB uint8 [H, W, 3] or [B, H, W, 3] -> normalised [B, 3, S, S] float32 on the device (aspect not kept)."""
        t = torch.as_tensor(np.ascontiguousarray(frames) if isinstance(frames, np.ndarray) else frames)
        if t.dim() == 3:
            t = t[None]
        if t.dim() != 4 or t.shape[-1] != 3:
            raise ValueError(f"frames must be [H, W, 3] or [B, H, W, 3] RGB, got {tuple(t.shape)}")
        if t.dtype != torch.uint8:
            raise ValueError(f"frames must be uint8 RGB, got {t.dtype}")
        # uint8 crosses to the device (4x fewer bytes than float), then converts there
        t = t.to(self.device, non_blocking=True).permute(0, 3, 1, 2).to(torch.float32) / 255.0
        S = self.image_size
        if t.shape[-2:] != (S, S):
            t = F.interpolate(t, size=(S, S), mode="bilinear", align_corners=False, antialias=True)
        return (t - self._mean) / self._std

    def encode(self, frame: np.ndarray | torch.Tensor) -> EncodedFrame:
        """ONE encoder forward: SAM2's backbone output plus the pooling maps of `pooling_levels`."""
        return self.encode_batch(frame[None])[0]

    def encode_batch(self, frames: np.ndarray | torch.Tensor) -> list[EncodedFrame]:
        """One batched encoder forward over frames [B, H, W, 3]; one `EncodedFrame` (views) per frame."""
        x = self.preprocess(frames)
        with self.context():
            out = self.model.image_encoder(x)
            raw_fpn = list(out["backbone_fpn"])  # [stride 4, stride 8, stride 16], 256-d
            if self.model.use_high_res_features_in_sam:  # as SAM2Base.forward_image does
                out["backbone_fpn"][0] = self.model.sam_mask_decoder.conv_s0(out["backbone_fpn"][0])
                out["backbone_fpn"][1] = self.model.sam_mask_decoder.conv_s1(out["backbone_fpn"][1])
        B = int(x.shape[0])
        self.encoder_calls += B
        hw = (int(frames.shape[-3]), int(frames.shape[-2]))
        encoded = []
        for b in range(B):
            one = {
                "vision_features": out["vision_features"][b : b + 1],
                "vision_pos_enc": [p[b : b + 1] for p in out["vision_pos_enc"]],
                "backbone_fpn": [f[b : b + 1] for f in out["backbone_fpn"]],
            }
            maps = [raw_fpn[len(raw_fpn) - 1 - level][b] for level in self._pooling_levels]
            encoded.append(EncodedFrame(backbone_out=one, maps=maps, orig_hw=hw))
        return encoded

    def pool(self, encoded: EncodedFrame, masks: torch.Tensor) -> torch.Tensor:
        """Eq. 3 of masks [n, H, W] over an encoded frame -> [n, feature_dim] float32 on the device."""
        with torch.inference_mode():
            return encoded.pool(masks)

    # ------------------------------------------------------------------ provenance
    def metadata(self) -> dict:
        """JSON-able description of the frozen model, for run metadata and store manifests."""
        return {
            "variant": self.variant,
            "version": self.version,
            "config": self.config_name,
            "image_size": self.image_size,
            "checkpoint": None if self.checkpoint is None else str(self.checkpoint),
            "checkpoint_sha256": self.checkpoint_sha256,
            "random_weights": self.checkpoint is None,
            "sam2_C": self.sam2_C,
            "fill_hole_area": self.fill_hole_area,
            "pooling_levels": list(self._pooling_levels),
            "feature_dim": self.feature_dim,
            "torch": torch.__version__,
            "sam2": sam2_adapter.sam2_version(),
            "tf32": bool(torch.backends.cuda.matmul.allow_tf32),
            "device": str(self.device),
            "dtype": self.dtype_mode,
        }

    def __repr__(self) -> str:
        ck = "random" if self.checkpoint is None else str(self.checkpoint)
        return f"SAM2Backbone({self.variant}, SAM {self.version}, {self.image_size}px, {ck}, {self.device})"
