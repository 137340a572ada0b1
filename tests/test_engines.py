"""The fast engines equal sam2's own (fp32, CPU): native AMG vs SAM2AutomaticMaskGenerator, batched vs per-object
propagation, batched frame encoding vs one frame at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from isam2.masklets.amg import NativeMaskGenerator
from isam2.masklets.generator import build_masklet_source
from isam2.masklets.sam2_adapter import stock_amg
from isam2.masklets.seeded import SeededMaskletSource, blob_masks
from tests.conftest import toy_video

CONF = Path(__file__).resolve().parents[1] / "conf"
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")


def amg_settings(**kw):
    base = {
        "points_per_side": 8,
        "points_per_batch": 16,
        "pred_iou_thresh": 0.0,
        "stability_score_thresh": 0.0,
        "stability_score_offset": 0.9,
        "box_nms_thresh": 0.7,
    }
    return {**base, **kw}


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def compare_amg(backbone, frame: np.ndarray, settings: dict) -> int:
    """Native vs sam2's AMG (its own encoder pass) on one frame; returns how many masks both kept."""
    enc = backbone.encode(frame)
    native = NativeMaskGenerator(backbone.model, backbone.image_size, **settings)
    with backbone.context():
        masks, scores = native.generate(enc.backbone_out, frame.shape[:2])
    with torch.inference_mode():
        ref = stock_amg(backbone.model, backbone.image_size, **settings).generate(frame)
    assert len(ref) == len(masks)
    for k, ann in enumerate(ref):  # the same order: best predicted IoU first after NMS
        assert mask_iou(ann["segmentation"], masks[k].numpy()) >= 0.999
        assert abs(ann["predicted_iou"] - float(scores[k])) <= 1e-4
    return len(ref)


def test_native_amg_equals_sam2_amg_with_every_mask_kept(tiny_backbone):
    frame = toy_video(T=1, H=90, W=150)[0][0]
    assert compare_amg(tiny_backbone, frame, amg_settings(box_nms_thresh=1.0)) == 8 * 8 * 3


def test_native_amg_equals_sam2_amg_through_each_filter(tiny_backbone):
    """Thresholds at the medians of this frame's own scores, so that each filter removes some masks (random
    weights give logits of about +-0.1: a stability offset of 0.05 spreads their stability scores)."""
    from sam2.utils.amg import calculate_stability_score

    frame = toy_video(T=1, H=90, W=150, seed=3)[0][0]
    enc = tiny_backbone.encode(frame)
    native = NativeMaskGenerator(tiny_backbone.model, tiny_backbone.image_size, **amg_settings())
    with tiny_backbone.context():
        low_res, ious = native.decode_points(enc.backbone_out, frame.shape[:2])
    logits = torch.nn.functional.interpolate(low_res[:, None], frame.shape[:2], mode="bilinear")[:, 0]
    stability = calculate_stability_score(logits, 0.0, 0.05)
    iou_thresh = float(ious.median())
    stab_thresh = float(stability[ious > iou_thresh].median())
    settings = amg_settings(
        pred_iou_thresh=iou_thresh, stability_score_thresh=stab_thresh, stability_score_offset=0.05
    )
    kept = compare_amg(tiny_backbone, frame, {**settings, "box_nms_thresh": 1.0})
    assert 0 < kept < int((ious > iou_thresh).sum())
    assert 0 < compare_amg(tiny_backbone, frame, settings) < kept  # NMS at 0.7 removes more


def test_native_amg_at_paper_thresholds_on_random_weights_keeps_what_sam2_keeps(tiny_backbone):
    frame = toy_video(T=1, H=90, W=150)[0][0]
    paper = amg_settings(points_per_side=16, pred_iou_thresh=0.6, stability_score_thresh=0.8)
    compare_amg(tiny_backbone, frame, paper)  # random weights: typically none on either side


def seeded(backbone, k: int, **masklets):
    cfg = OmegaConf.merge(OmegaConf.load(CONF / "masklets" / "sam2.yaml"), {"window": 4, **masklets})
    plain = build_masklet_source(cfg, backbone)
    return SeededMaskletSource(backbone, plain.settings, seed_objects=k, seed=7)


@pytest.mark.parametrize("objects_per_batch", [None, 3])
def test_batched_propagation_equals_sam2_per_object(tiny_backbone, objects_per_batch):
    frames, _ = toy_video(T=6, H=72, W=120)
    ref = list(seeded(tiny_backbone, 8, propagation="per_object").video(frames))
    ours = list(
        seeded(tiny_backbone, 8, propagation="batched", objects_per_batch=objects_per_batch).video(frames)
    )
    assert len(ref) == len(ours) == 6
    tracked = 0
    for a, b in zip(ref, ours):
        assert a.tracks.tolist() == b.tracks.tolist()  # the same tracks, in the same order
        tracked += len(a)
        if len(a):
            assert (a.masks == b.masks).float().mean() >= 0.999
            torch.testing.assert_close(a.scores, b.scores, atol=1e-4, rtol=0)
            torch.testing.assert_close(a.features, b.features, atol=1e-3, rtol=1e-3)
    assert tracked > 2 * 8  # keyframes 0 and 4 plus propagated frames


def test_seeded_blobs_are_reproducible_and_non_empty():
    a, b = blob_masks(5, (40, 60), seed=1), blob_masks(5, (40, 60), seed=1)
    assert torch.equal(a, b) and a.flatten(1).any(1).all()
    assert not torch.equal(a, blob_masks(5, (40, 60), seed=2))


def test_frames_per_batch_gives_the_same_masklets(tiny_backbone):
    frames, gt = toy_video(T=5)
    cfg = OmegaConf.load(CONF / "masklets" / "gt.yaml")
    one = list(
        build_masklet_source(OmegaConf.merge(cfg, {"frames_per_batch": 1}), tiny_backbone).video(frames, gt)
    )
    before = tiny_backbone.encoder_calls
    four = list(
        build_masklet_source(OmegaConf.merge(cfg, {"frames_per_batch": 4}), tiny_backbone).video(frames, gt)
    )
    assert tiny_backbone.encoder_calls - before == 5  # still one forward per frame
    for a, b in zip(one, four):
        assert torch.equal(a.masks, b.masks)
        torch.testing.assert_close(a.features, b.features, atol=1e-4, rtol=1e-4)


def test_engine_settings_are_checked(tiny_backbone):
    from isam2.errors import ISAM2Error

    for key, value in (
        ("amg", "fast"),
        ("propagation", "all"),
        ("objects_per_batch", 0),
        ("frames_per_batch", -1),
    ):
        cfg = OmegaConf.merge(OmegaConf.load(CONF / "masklets" / "sam2.yaml"), {key: value})
        with pytest.raises(ISAM2Error, match=f"masklets.{key}"):
            build_masklet_source(cfg, tiny_backbone)
