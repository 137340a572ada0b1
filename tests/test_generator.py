"""Masklet sources: one encoder forward per frame, AMG keyframes + propagation, oracle masklets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from isam2.errors import ISAM2Error
from isam2.masklets.generator import FrameMasklets, SAM2MaskletSource, build_masklet_source
from isam2.masklets.pooling import masked_mean
from tests.conftest import pooling_levels, toy_video

CONF = Path(__file__).resolve().parents[1] / "conf"
# Random weights give almost no masks at the paper's thresholds: open them up, and use a small grid.
LOW = {"source": "sam2", "points_per_side": 4, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0}


def sam2_cfg(**kw):
    cfg = OmegaConf.load(CONF / "masklets" / "sam2.yaml")
    return OmegaConf.merge(cfg, {**LOW, **kw})


def check_frame(fm: FrameMasklets, hw, dim):
    n = len(fm)
    assert fm.masks.dtype == torch.bool and tuple(fm.masks.shape) == (n, *hw)
    assert fm.scores.dtype == torch.float32 and fm.scores.shape == (n,)
    assert fm.tracks.dtype == torch.int64 and fm.tracks.shape == (n,)
    assert fm.features.dtype == torch.float32 and fm.features.shape == (n, dim)
    assert len(set(fm.tracks.tolist())) == n  # unique within the frame
    for t in (fm.masks, fm.scores, fm.tracks, fm.features):
        assert t.device.type == "cpu" and not t.is_inference()
    if n:
        assert fm.masks.flatten(1).any(1).all()  # no empty masklets
        assert torch.isfinite(fm.features).all()


def test_sam2_source_one_forward_per_frame_and_propagation(tiny_backbone):
    frames, _ = toy_video(T=5)
    source = build_masklet_source(sam2_cfg(window=2), tiny_backbone)
    assert isinstance(source, SAM2MaskletSource) and source.window == 2
    before = tiny_backbone.encoder_calls
    out = list(source.video(frames))
    assert tiny_backbone.encoder_calls - before == len(frames)  # ONE encoder forward per frame
    assert len(out) == len(frames)
    for fm in out:
        check_frame(fm, frames.shape[1:3], 256)
    assert all(len(fm) > 0 for fm in out)
    key0, prop1, key2 = (set(out[i].tracks.tolist()) for i in range(3))
    assert prop1 <= key0  # frame 1 carries keyframe-0 masklets forward
    assert not key2 & key0  # a new keyframe starts new tracks (ids unique per video)
    assert set(out[3].tracks.tolist()) <= key2
    assert set(out[4].tracks.tolist()).isdisjoint(key0 | key2)  # frame 4 is the last keyframe
    assert ((out[0].scores >= 0) & (out[0].scores <= 1)).all()


def test_keyframe_features_are_eq3_of_the_frame(tiny_backbone):
    frames, _ = toy_video(T=2)
    source = build_masklet_source(sam2_cfg(window=1), tiny_backbone)
    out = list(source.video(frames))
    for t in range(2):
        enc = tiny_backbone.encode(frames[t])
        torch.testing.assert_close(
            out[t].features, masked_mean(enc.maps[0], out[t].masks), rtol=1e-5, atol=1e-5
        )


def test_window_one_runs_amg_on_every_frame(tiny_backbone):
    frames, _ = toy_video(T=3)
    source = build_masklet_source(sam2_cfg(window=1), tiny_backbone)
    before = tiny_backbone.encoder_calls
    out = list(source.video(frames))
    assert tiny_backbone.encoder_calls - before == 3
    seen: set[int] = set()
    for fm in out:
        ids = set(fm.tracks.tolist())
        assert ids and not ids & seen
        seen |= ids


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")  # sam2's own transforms
@pytest.mark.parametrize("engine", ["sam2", "native"])
def test_keyframe_amg_equals_sam2_amg(tiny_backbone, engine):
    """Same masks and scores as sam2's own SAM2AutomaticMaskGenerator, which runs its own encoder forward."""
    from isam2.masklets.sam2_adapter import stock_amg

    frame = toy_video(T=1)[0][0]
    source = build_masklet_source(sam2_cfg(amg=engine), tiny_backbone)
    masks, scores = source.keyframe_masks(frame, tiny_backbone.encode(frame))
    amg = stock_amg(
        tiny_backbone.model,
        tiny_backbone.image_size,
        points_per_side=4,
        pred_iou_thresh=0.0,
        stability_score_thresh=0.0,
        stability_score_offset=0.9,
        box_nms_thresh=0.7,
    )
    with torch.inference_mode():
        ref = amg.generate(frame)
    assert len(ref) == len(masks) > 0
    ref_masks = np.stack([r["segmentation"] for r in ref])
    agree = (ref_masks == masks.numpy()).mean()
    assert agree > 0.999
    np.testing.assert_allclose([r["predicted_iou"] for r in ref], scores.numpy(), atol=1e-4)


def test_batched_seeding_equals_sam2_add_new_mask(tiny_backbone):
    """`add_new_masks` (one call) propagates exactly like sam2's `add_new_mask` per object."""
    frames, gt = toy_video(T=3)
    model = tiny_backbone.model
    encs = [tiny_backbone.encode(f) for f in frames]
    masks = torch.from_numpy(np.stack([gt[0] == 7, gt[0] == 3]))

    def run(batched: bool):
        state = model.isam2_state(3, frames.shape[1:3], lambda i: encs[i].backbone_out)
        with torch.inference_mode():
            if batched:
                model.add_new_masks(state, 0, [10, 11], masks)
            else:
                for obj_id, m in zip([10, 11], masks):
                    model.add_new_mask(state, 0, obj_id, m)
            return [(i, ids, m.clone()) for i, ids, m in model.propagate_in_video(state, 0, 2)]

    a, b = run(True), run(False)
    assert [x[:2] for x in a] == [x[:2] for x in b]
    for (_, _, ma), (_, _, mb) in zip(a, b):
        torch.testing.assert_close(ma, mb)


def test_gt_source(tiny_backbone):
    frames, gt = toy_video(T=4)
    source = build_masklet_source(OmegaConf.load(CONF / "masklets" / "gt.yaml"), tiny_backbone)
    before = tiny_backbone.encoder_calls
    out = list(source.video(frames, gt))
    assert tiny_backbone.encoder_calls - before == 4
    for t, fm in enumerate(out):
        check_frame(fm, frames.shape[1:3], 256)
        assert len(fm) == 3 and torch.all(fm.scores == 1.0)
        union = fm.masks.any(0).numpy()
        assert not union[gt[t] == 255].any()
    assert all(fm.tracks.tolist() == out[0].tracks.tolist() for fm in out)  # the moving box keeps its track


def test_gt_source_needs_gt_and_handles_empty_frames(tiny_backbone):
    frames, gt = toy_video(T=2)
    source = build_masklet_source(OmegaConf.create({"source": "gt", "min_area": 1}), tiny_backbone)
    with pytest.raises(ISAM2Error, match="ground-truth"):
        list(source.video(frames))
    gt[1] = 255
    out = list(source.video(frames, gt))
    assert len(out[1]) == 0
    check_frame(out[1], frames.shape[1:3], 256)


def test_sam2_config_allows_source_gt_and_pooling_levels(tiny_backbone):
    frames, gt = toy_video(T=2)
    cfg = sam2_cfg(source="gt", min_area=4, pooling={"levels": [0, 1]})
    with pooling_levels(tiny_backbone, [0]):
        source = build_masklet_source(cfg, tiny_backbone)
        assert source.name == "gt" and source.feature_dim == tiny_backbone.feature_dim == 512
        out = list(source.video(frames, gt))
        check_frame(out[0], frames.shape[1:3], 512)
        assert source.describe()["pooling_levels"] == [0, 1]


def test_bad_settings(tiny_backbone):
    with pytest.raises(ISAM2Error, match="masklets.source"):
        build_masklet_source(OmegaConf.create({"source": "sam3"}), tiny_backbone)
    with pytest.raises(ISAM2Error, match="masklets.window"):
        build_masklet_source(sam2_cfg(window=0), tiny_backbone)
    with pytest.raises(ISAM2Error, match="pooling.levels"):
        with pooling_levels(tiny_backbone, [0]):
            build_masklet_source(sam2_cfg(pooling={"levels": [3]}), tiny_backbone)
    source = build_masklet_source(sam2_cfg(), tiny_backbone)
    with pytest.raises(ISAM2Error, match="uint8"):
        list(source.video(np.zeros((2, 8, 8, 3), np.float32)))


def test_paper_defaults_in_config():
    cfg = OmegaConf.load(CONF / "masklets" / "sam2.yaml")
    assert cfg.source == "sam2" and cfg.window == 32 and cfg.points_per_side == 16
    assert (cfg.pred_iou_thresh, cfg.stability_score_thresh, cfg.stability_score_offset) == (0.6, 0.8, 0.9)
    assert cfg.crop_n_layers == 0 and list(cfg.pooling.levels) == [0]


def test_acceptance_overrides_compose_and_instantiate():
    """`sam2=hiera_t sam2.image_size=256 masklets.source=sam2 masklets.pred_iou_thresh=0 ...` composes and builds."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    overrides = [
        "sam2=hiera_t",
        "sam2.image_size=128",
        "masklets=sam2",
        "masklets.source=sam2",
        "masklets.pred_iou_thresh=0",
        "masklets.stability_score_thresh=0",
        "masklets.points_per_side=4",
        "masklets.window=2",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    backbone = instantiate(cfg.sam2)
    assert backbone.image_size == 128 and backbone.metadata()["checkpoint_sha256"] == "random"
    source = build_masklet_source(cfg.masklets, backbone)
    frames, _ = toy_video(T=3)
    out = list(source.video(frames))
    assert len(out) == 3 and backbone.encoder_calls == 3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_sam2_source_on_cuda_bf16():
    from isam2.masklets.sam2_backbone import SAM2Backbone

    torch.manual_seed(0)
    backbone = SAM2Backbone("hiera_t", image_size=256, device="cuda")
    assert backbone.metadata()["dtype"] == "bf16-autocast"
    frames, gt = toy_video(T=5, H=120, W=200)
    out = list(build_masklet_source(sam2_cfg(window=3, points_per_side=8), backbone).video(frames))
    assert backbone.encoder_calls == 5 and len(out) == 5
    for fm in out:
        check_frame(fm, frames.shape[1:3], 256)
    assert set(out[1].tracks.tolist()) <= set(out[0].tracks.tolist())
    out = list(
        build_masklet_source(OmegaConf.create({"source": "gt", "min_area": 4}), backbone).video(frames, gt)
    )
    assert backbone.encoder_calls == 10 and all(len(fm) == 3 for fm in out)
    enc = backbone.encode(frames[0])
    cpu = masked_mean(enc.maps[0].float().cpu(), out[0].masks)
    torch.testing.assert_close(out[0].features, cpu, rtol=2e-2, atol=2e-2)
