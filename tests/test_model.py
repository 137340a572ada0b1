"""MLPHead and MaskletClassifier: standardisation, loss rules, fit on a toy store, checkpoint contents."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F

from isam2.errors import ISAM2Error
from isam2.model import MaskletClassifier, MLPHead
from isam2.model.module import class_weights_from_counts

from .train_helpers import cpu_trainer, tiny_dataset, toy_store


def test_head_shapes_depth_and_bad_settings():
    head = MLPHead(8, 5, hidden_dim=16, depth=3, dropout=0.0, norm="batchnorm", activation="relu")
    assert head(torch.randn(4, 8)).shape == (4, 5)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.modules()) == 4
    assert sum(isinstance(m, torch.nn.Linear) for m in MLPHead(8, 5, depth=0).modules()) == 1
    with pytest.raises(ISAM2Error, match="activation"):
        MLPHead(8, 5, activation="swish2")
    with pytest.raises(ISAM2Error, match="norm"):
        MLPHead(8, 5, norm="group")


def test_head_standardises_with_its_buffers():
    head = MLPHead(3, 2, depth=0)
    x = torch.tensor([[1.0, 10.0, -5.0], [3.0, 30.0, 5.0]])
    head.set_statistics(x.mean(0), x.std(0, unbiased=False))
    seen = {}
    head.mlp[0].register_forward_hook(lambda m, i, o: seen.setdefault("x", i[0]))
    head(x)
    assert torch.allclose(seen["x"], torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    assert {"feature_mean", "feature_std"} <= set(head.state_dict())
    with pytest.raises(ISAM2Error, match="feature width 3"):
        head.set_statistics(torch.zeros(4), torch.ones(4))


def test_class_weights_balance_the_expected_sample_weight():
    counts = torch.tensor([90, 10, 0])
    w = class_weights_from_counts(counts, "inverse")
    # weight = c / frequency, with c such that the mean weight per sample is 1: 0.9 c/0.9 + 0.1 c/0.1 = 1
    assert torch.allclose(w, torch.tensor([0.5 / 0.9, 0.5 / 0.1, 0.0]))
    assert torch.isclose((counts / counts.sum() * w).sum(), torch.tensor(1.0))
    assert torch.allclose(class_weights_from_counts(counts, "none")[:2], torch.ones(2))


def _model(**kw) -> MaskletClassifier:
    return MaskletClassifier(num_classes=4, feature_dim=6, head={"depth": 0}, **kw)


def test_loss_ignores_255_and_impure_masklets_and_weights_by_purity():
    torch.manual_seed(0)
    logits = torch.randn(4, 4)
    label = torch.tensor([0, 1, 255, 2])
    purity = torch.tensor([1.0, 0.3, 1.0, 0.6])
    model = _model(min_purity=0.5)
    target = model._targets(label, purity)
    assert target.tolist() == [0, 255, 255, 2]
    expected = F.cross_entropy(logits[[0, 3]], torch.tensor([0, 2]))
    assert torch.isclose(model._loss(logits, target, purity), expected)
    weighted = _model(min_purity=0.5, purity_weighting=True)._loss(logits, target, purity)
    per_row = F.cross_entropy(logits[[0, 3]], torch.tensor([0, 2]), reduction="none")
    assert torch.isclose(weighted, (per_row * torch.tensor([1.0, 0.6])).sum() / 1.6)
    none_left = model._loss(logits, torch.full((4,), 255), purity)
    assert none_left.item() == 0 and none_left.requires_grad is logits.requires_grad


def test_label_smoothing_and_class_weights_enter_the_loss():
    logits, target, purity = torch.randn(5, 4), torch.tensor([0, 1, 1, 3, 3]), torch.ones(5)
    smooth = _model(label_smoothing=0.2)._loss(logits, target, purity)
    assert torch.isclose(smooth, F.cross_entropy(logits, target, label_smoothing=0.2))
    model = _model(class_weighting="inverse")
    model.set_training_statistics(torch.zeros(6), torch.ones(6), torch.tensor([1, 2, 0, 2]))
    w = model.class_weights[target]
    expected = (F.cross_entropy(logits, target, reduction="none") * w).sum() / w.sum()
    assert torch.isclose(model._loss(logits, target, purity), expected)


def test_bad_settings_raise_isam2_error():
    with pytest.raises(ISAM2Error, match="class_weighting"):
        _model(class_weighting="log")
    with pytest.raises(ISAM2Error, match="min_purity"):
        _model(min_purity=1.5)
    with pytest.raises(ISAM2Error, match="segment.fill"):
        _model(segment={"fill": "other"})


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    datasets = {s: tiny_dataset(root / "data", s) for s in ("train", "val", "test")}
    stores = {s: toy_store(root / f"store_{s}", datasets[s], seed=i) for i, s in enumerate(datasets)}
    # the tiny training split lacks some test classes: train on other noise draws of the test videos
    stores["train"] = toy_store(root / "store_train_on_test", datasets["test"], seed=7)
    return root, stores, datasets


def test_fit_on_toy_store_reaches_high_miou_and_checkpoint_has_only_the_head(toy, tmp_path):
    from isam2.datamodules.stores import StoreDataModule

    _, stores, datasets = toy
    pl.seed_everything(0)
    dm = StoreDataModule(stores, datasets, batch_size=8, seed=0)
    model = MaskletClassifier(
        num_classes=124,
        feature_dim=16,
        head={"hidden_dim": 32, "depth": 1},
        seed=0,
        optimizer={"_target_": "torch.optim.AdamW", "_partial_": True, "lr": 1e-2},
    )
    trainer = cpu_trainer(tmp_path, max_epochs=10)
    model.set_training_statistics(**dm.training_statistics())  # the pipeline's part, before the fit
    trainer.fit(model, datamodule=dm)
    # standardisation statistics come from the training store
    train_feats = torch.from_numpy(stores["train"].features[:].astype("float32"))
    assert torch.allclose(model.head.feature_mean, train_feats.mean(0), atol=1e-3)
    trainer.test(model, datamodule=dm, verbose=False)
    assert model.test_results["miou"] >= 0.9
    assert model.test_results["num_videos"] == len(datasets["test"])
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert all(k.startswith(("head.", "class_weights")) for k in state["state_dict"])
    loaded = MaskletClassifier.load_from_checkpoint(ckpt, map_location="cpu")
    assert torch.equal(loaded.head.feature_std, model.head.feature_std)
    x = torch.randn(3, 16)
    model.eval(), loaded.eval()
    assert torch.allclose(loaded.masklet_logits(x), model.masklet_logits(x))
    # a checkpoint for another width / number of classes is refused, naming both
    other = MaskletClassifier(num_classes=10, feature_dim=16)
    with pytest.raises(ISAM2Error, match=r"124 classes and 16-dim.*10 classes and 16-dim"):
        other.on_load_checkpoint(state)


def test_smoothed_loss_over_ignored_rows_equals_the_loss_over_the_kept_rows():
    torch.manual_seed(1)
    logits, target = torch.randn(6, 5), torch.tensor([0, 255, 4, 255, 2, 2])
    got = _model(label_smoothing=0.1)._loss(logits, target, torch.ones(6))
    kept = target != 255
    assert torch.isclose(got, F.cross_entropy(logits[kept], target[kept], label_smoothing=0.1))
