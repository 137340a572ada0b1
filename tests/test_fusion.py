"""The fusion head (model=fusion): the base histogram's place in the vectors, its start as the refiner's vote, its training."""

from __future__ import annotations

import pytest
import torch

from isam2.errors import ISAM2Error
from isam2.model import MaskletClassifier
from isam2.model.fusion import FusionHead

C = 5
IDENTITY = {
    "sam2": {},
    "masklets": {},
    "encoders": [{"name": "sam2"}, {"name": "base_histogram", "num_classes": C}],
}


def test_untrained_fusion_with_a_silent_mlp_is_the_majority_vote():
    head = FusionHead(8 + C, C, feature_identity=IDENTITY, depth=0)
    torch.nn.init.zeros_(head.features.mlp[-1].weight)
    torch.nn.init.zeros_(head.features.mlp[-1].bias)
    g = torch.Generator().manual_seed(0)
    hist = torch.rand(50, C, generator=g)
    hist[:10, 2] = 0  # some masklets where the base never says class 2
    hist = hist / hist.sum(1, keepdim=True)
    x = torch.cat([torch.randn(50, 8, generator=g), hist], dim=1)
    assert torch.equal(head(x).argmax(1), hist.argmax(1))  # the refiner's Eq. 1 vote, by hand: argmax of h


def test_fusion_needs_the_histogram_last():
    with pytest.raises(ISAM2Error, match="base_histogram encoder last"):
        FusionHead(8 + C, C, feature_identity={"sam2": {}, "masklets": {}})
    wrong = {"encoders": [{"name": "base_histogram", "num_classes": C}, {"name": "sam2"}]}
    with pytest.raises(ISAM2Error, match="last"):
        FusionHead(8 + C, C, feature_identity=wrong)
    with pytest.raises(ISAM2Error, match="classes"):
        FusionHead(8 + C, C + 1, feature_identity=IDENTITY)


def test_fusion_learns_to_overrule_a_wrong_base():
    """Features say the class; the base is right on most masklets but always wrong for class 0 (it says 1)."""
    g = torch.Generator().manual_seed(0)
    n = 400
    label = torch.randint(0, C, (n,), generator=g)
    feats = torch.nn.functional.one_hot(label, C).float() + 0.1 * torch.randn(n, C, generator=g)
    base = torch.where(label == 0, torch.ones_like(label), label)
    hist = 0.8 * torch.nn.functional.one_hot(base, C).float() + 0.2 / C
    x = torch.cat([feats, hist], 1)
    model = MaskletClassifier(
        C, C + C, head={"_target_": "isam2.model.fusion.FusionHead", "depth": 0}, feature_identity=IDENTITY
    )
    model.head.set_statistics(x.mean(0), x.std(0))
    before = (model.head(x).argmax(1) == label).float().mean()
    opt = torch.optim.Adam(model.head.parameters(), lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model.head(x), label).backward()
        opt.step()
    after = (model.head(x).argmax(1) == label).float().mean()
    assert after > 0.98 > before
    assert model.hparams.head["_target_"].endswith("FusionHead")  # the head's settings travel in checkpoints


def test_the_fusion_head_names_its_rows_i_sam2_fusion():
    model = MaskletClassifier(
        C, C + C, head={"_target_": "isam2.model.fusion.FusionHead", "depth": 0}, feature_identity=IDENTITY
    )
    plain = MaskletClassifier(C, C, head={"depth": 0})
    assert model.method_name("isam2") == "I-SAM2_fusion"
    assert model.method_name("refiner") == plain.method_name("refiner") == "SAM2-refiner"
    assert plain.method_name("isam2") == "I-SAM2"
