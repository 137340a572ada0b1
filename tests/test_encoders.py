"""Encoders: the mmseg MiT key converter, the transformers encoders' maps, and an encoder pass equal to brute-force Eq. 3."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from isam2.encoders.base import build_encoder, encoder_identity
from isam2.encoders.dinov2 import Dinov2Encoder
from isam2.encoders.histogram import BaseHistogramEncoder
from isam2.encoders.segformer import SegformerEncoder, convert_mmseg_mit, mit_config
from isam2.encoders.torch_module import ModuleEncoder
from isam2.errors import ISAM2Error
from isam2.store.encoder_pass import add_encoder_features
from isam2.store.format import encoder_key
from isam2.store.reader import MaskletStore
from tests.noisy import write_noisy_base
from tests.train_helpers import tiny_dataset, toy_store

TINY_MIT = {"depths": [1, 2, 1, 1], "hidden_sizes": [8, 16, 24, 32], "num_attention_heads": [1, 2, 1, 2]}
TINY_DINO = {
    "hidden_size": 16,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "patch_size": 14,
}


def mmseg_state_dict(config) -> dict[str, torch.Tensor]:
    """A random state dict named as mmseg's mix_transformer (SegFormer/CFFM releases) names its keys, with
    the shapes that module gives them (written from its definition, not from the converter)."""
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    sd = {}
    in_ch = 3
    for i, (d, depth) in enumerate(zip(config.hidden_sizes, config.depths), start=1):
        k = 7 if i == 1 else 3
        sd[f"backbone.patch_embed{i}.proj.weight"] = r(d, in_ch, k, k)
        sd[f"backbone.patch_embed{i}.proj.bias"] = r(d)
        sd[f"backbone.patch_embed{i}.norm.weight"] = r(d)
        sd[f"backbone.patch_embed{i}.norm.bias"] = r(d)
        sr = config.sr_ratios[i - 1]
        hidden = d * config.mlp_ratios[i - 1]
        for j in range(depth):
            b = f"backbone.block{i}.{j}."
            for name, shape in [
                ("norm1", (d,)),
                ("attn.q", (d, d)),
                ("attn.kv", (2 * d, d)),
                ("attn.proj", (d, d)),
                ("norm2", (d,)),
                ("mlp.fc1", (hidden, d)),
                ("mlp.fc2", (d, hidden)),
            ]:
                sd[b + name + ".weight"] = r(*shape)
                sd[b + name + ".bias"] = r(shape[0])
            sd[b + "mlp.dwconv.dwconv.weight"] = r(hidden, 1, 3, 3)
            sd[b + "mlp.dwconv.dwconv.bias"] = r(hidden)
            if sr > 1:
                sd[b + "attn.sr.weight"] = r(d, d, sr, sr)
                sd[b + "attn.sr.bias"] = r(d)
                sd[b + "attn.norm.weight"] = r(d)
                sd[b + "attn.norm.bias"] = r(d)
        sd[f"backbone.norm{i}.weight"] = r(d)
        sd[f"backbone.norm{i}.bias"] = r(d)
        in_ch = d
    sd["decode_head.conv_seg.weight"] = r(124, 8, 1, 1)  # CFFM's head: dropped
    return sd


def test_mmseg_checkpoint_converts_and_loads_strictly(tmp_path):
    config = mit_config("b0", TINY_MIT)
    sd = mmseg_state_dict(config)
    converted = convert_mmseg_mit(sd)
    from transformers import SegformerModel

    model = SegformerModel(config)
    model.load_state_dict(converted, strict=True)  # every key present, every shape right
    own = model.state_dict()
    d = config.hidden_sizes[0]
    kv = sd["backbone.block1.0.attn.kv.weight"]
    assert torch.equal(own["stages.0.blocks.0.attention.k_proj.weight"], kv[:d])
    assert torch.equal(own["stages.0.blocks.0.attention.v_proj.weight"], kv[d:])
    assert torch.equal(own["stages.0.patch_embeddings.proj.weight"], sd["backbone.patch_embed1.proj.weight"])
    assert torch.equal(own["stages.3.layer_norm.weight"], sd["backbone.norm4.weight"])
    assert torch.equal(
        own["stages.1.blocks.1.attention.q_proj.weight"], sd["backbone.block2.1.attn.q.weight"]
    )
    # The encoder loads it from a file (weights_only) and refuses a foreign key
    torch.save({"state_dict": sd}, tmp_path / "cffm.pth")
    enc = SegformerEncoder(
        checkpoint=str(tmp_path / "cffm.pth"), config=TINY_MIT, variant="b0", input_size=64, device="cpu"
    )
    assert torch.equal(enc.net.state_dict()["stages.0.blocks.0.attention.k_proj.weight"], kv[:d])
    torch.save({"state_dict": {**sd, "backbone.block1.0.attn.extra.weight": kv}}, tmp_path / "bad.pth")
    with pytest.raises(ISAM2Error, match="bad.pth.*attn.extra"):
        SegformerEncoder(checkpoint=str(tmp_path / "bad.pth"), config=TINY_MIT, variant="b0", device="cpu")


def test_transformers_encoders_give_their_declared_maps_frozen():
    frames = np.random.default_rng(0).integers(0, 256, (3, 40, 60, 3), dtype=np.uint8)
    seg = SegformerEncoder(config=TINY_MIT, variant="b0", input_size=64, device="cpu")
    dino = Dinov2Encoder(config=TINY_DINO, input_size=[56, 84], device="cpu")
    for enc, strides in ((seg, (4, 8, 16, 32)), (dino, (14,))):
        maps = enc.maps(frames, None, [0, 1, 2])
        assert enc.strides == strides and enc.width == sum(enc.widths)
        for m, w, s in zip(maps, enc.widths, enc.strides):
            assert tuple(m.shape) == (3, w, enc.input_size[0] // s, enc.input_size[1] // s)
        assert not enc.net.training and not any(p.requires_grad for p in enc.net.parameters())
    assert seg.widths == tuple(TINY_MIT["hidden_sizes"]) and dino.widths == (16,)


def brute_force_eq3(maps: torch.Tensor, stride: int, id_map: np.ndarray, rows: range) -> np.ndarray:
    """Mean of the map, upsampled by repeating each cell over its stride x stride pixels, under each region."""
    up = maps.repeat_interleave(stride, 1).repeat_interleave(stride, 2).numpy()  # [d, H, W]
    out = []
    for r in rows:
        region = id_map == r
        out.append(up[:, region].mean(axis=1) if region.any() else np.zeros(len(up)))
    return np.array(out).reshape(len(rows), len(up))


def test_encoder_pass_equals_brute_force_eq3(tmp_path):
    dataset = tiny_dataset(tmp_path / "data", "val")
    # no SAM2 anywhere: the pass needs only id maps and frames; every third frame has no masklet
    store = toy_store(tmp_path / "store", dataset, skip=lambda _, t: t % 3 == 1)
    settings = {
        "name": "module",
        "_target_": "isam2.encoders.torch_module.ModuleEncoder",
        "module": {"_target_": "torch.nn.AvgPool2d", "kernel_size": 4},
        "widths": [3],
        "strides": [4],
        "input_size": [64, 96],  # the frame size: no resize, so each cell is exactly 4x4 pixels
        "device": "cpu",
        "frames_per_batch": 3,
    }
    identity = encoder_identity(settings)
    encoder = build_encoder(settings)
    add_encoder_features(store, settings, identity, dataset.videos, progress=False, encoder=encoder)
    # a frame without masklets has nothing to pool, so it is not encoded
    with_masklets = sum(len(np.unique(store.frame[store.rows(v.id)])) for v in dataset.videos)
    assert encoder.calls == with_masklets < sum(len(v) for v in dataset.videos)
    base_dir = write_noisy_base(dataset, tmp_path / "base")
    hist_settings = {
        "name": "base_histogram",
        "_target_": "isam2.encoders.histogram.BaseHistogramEncoder",
        "base_predictions": str(base_dir),
        "num_classes": 124,
        "device": "cpu",
    }
    hist_identity = encoder_identity(hist_settings)
    add_encoder_features(store, hist_settings, hist_identity, dataset.videos, progress=False)
    both = MaskletStore(store.path, encoders=[identity, {"name": "sam2"}, hist_identity])
    assert both.dim == 3 + store.dim + 124
    mean = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
    from PIL import Image

    for video in dataset.videos:
        rows = both.rows(video.id)
        frames = video.load_frames()
        for t in range(len(frames)):
            frame_rows = [r for r in range(rows.start, rows.stop) if both.frame[r] == t]
            id_map = both.id_map(video.id, t)
            x = (torch.from_numpy(frames[t]).permute(2, 0, 1).float() / 255 - mean) / std
            expected = brute_force_eq3(torch.nn.functional.avg_pool2d(x[None], 4)[0], 4, id_map, frame_rows)
            got = both.features[frame_rows].astype(np.float32)
            np.testing.assert_allclose(got[:, :3], expected, atol=2e-3)
            np.testing.assert_array_equal(got[:, 3 : 3 + store.dim], store.features[frame_rows])
            base = np.asarray(Image.open(base_dir / video.id / f"{video.frame_names[t]}.png"))
            one_hot = torch.from_numpy((base[None] == np.arange(124)[:, None, None]).astype(np.float32))
            np.testing.assert_allclose(
                got[:, 3 + store.dim :], brute_force_eq3(one_hot, 1, id_map, frame_rows), atol=1e-3
            )
    # the concatenation reads rows and row indices alike, and the record decides the folder
    np.testing.assert_array_equal(both.features[np.array([0, 2])], both.features[:3][[0, 2]])
    assert (store.path / "encoders" / encoder_key(identity) / "encoder.json").is_file()


def test_histogram_encoder_refuses_a_missing_folder(tmp_path):
    with pytest.raises(ISAM2Error, match="base_predictions"):
        BaseHistogramEncoder(base_predictions=None)
    with pytest.raises(ISAM2Error, match="not a folder"):
        BaseHistogramEncoder(base_predictions=str(tmp_path / "none"))


def test_module_encoder_checks_declared_widths(tmp_path):
    enc = ModuleEncoder(
        module={"_target_": "torch.nn.AvgPool2d", "kernel_size": 4},
        widths=[5],
        strides=[4],
        input_size=32,
        device="cpu",
    )
    with pytest.raises(ISAM2Error, match="widths"):
        enc.maps(np.zeros((1, 32, 32, 3), np.uint8), None, [0])


TINY_SEGFORMER = [
    "encoder=segformer",
    "encoder.segformer.variant=b0",
    "encoder.segformer.input_size=64",
    "++encoder.segformer.config={depths:[1,1,1,1],hidden_sizes:[8,16,24,32],num_attention_heads:[1,1,1,1]}",
    "encoder.segformer.device=cpu",
]
TINY_SAM2_DINOV2 = [
    "encoder=[sam2,dinov2]",
    "encoder.dinov2.input_size=56",
    "++encoder.dinov2.config={hidden_size:16,num_hidden_layers:1,num_attention_heads:2,intermediate_size:32,patch_size:14}",
    "encoder.dinov2.device=cpu",
]


@pytest.mark.parametrize(
    ("name", "encoders", "dim"),
    [("segformer", TINY_SEGFORMER, 80), ("sam2_dinov2", TINY_SAM2_DINOV2, 256 + 16)],
)
def test_train_end_to_end_with_other_encoders(tmp_path_factory, name, encoders, dim):
    """python -m isam2.train with random-weight encoders; both runs share one masklet store (made once)."""
    import json

    from tests.train_helpers import run_cli, tiny_overrides

    shared = tmp_path_factory.getbasetemp() / "encoders_shared"
    run = tmp_path_factory.mktemp(name)
    overrides = [
        *tiny_overrides(run, shared),
        "trainer.max_epochs=1",
        "masklets.pooling.levels=[0]",
        *encoders,
    ]
    run_cli("isam2.train", overrides)
    metrics = json.loads((run / "run" / "metrics.json").read_text())
    assert metrics["method"] == "I-SAM2" and 0.0 <= metrics["miou"] <= 1.0
    ckpt = next((run / "run" / "checkpoints").glob("*.ckpt"))
    hparams = torch.load(ckpt, map_location="cpu", weights_only=True)["hyper_parameters"]
    assert hparams["feature_dim"] == dim
    assert [e["name"] for e in hparams["feature_identity"]["encoders"]] == [e for e in name.split("_")]
    stores = list((shared / "stores").iterdir())
    # train (its held-out videos are the selection split) and test
    assert all((s / "manifest.json").is_file() for s in stores) and len(stores) == 2


def test_experiments_compose_with_their_encoders():
    """The I-CFFM rows and the beyond-the-paper experiments select their encoders (train's default: [sam2])."""
    from hydra import compose, initialize_config_dir

    from tests.train_helpers import REPO

    conf = REPO / "conf"
    expected = {
        "isam2_fusion": (["sam2", "base_histogram"], "none"),
        "isam2_dinov2": (["sam2", "dinov2"], "none"),
        **{f"paper/icffm_{b}": (["segformer"], "none") for b in ("b0", "b1", "b2")},
        **{f"paper/icffm_base_{b}": (["segformer"], "base") for b in ("b0", "b1", "b2")},
    }
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        assert list(compose("train").encoder) == ["sam2"]
        for experiment, (encoders, fill) in expected.items():
            cfg = compose("train", overrides=[f"experiment={experiment}"])
            assert list(cfg.encoder) == encoders and cfg.segment.fill == fill, experiment
            if "icffm" in experiment:
                assert cfg.encoder.segformer.variant == experiment[-2:] and cfg.data.name == "vspw"
                first = (conf / "experiment" / f"{experiment}.yaml").read_text().splitlines()[1]
                assert first.startswith(
                    f'# Table 3, row "I-CFFM{"_base" if fill == "base" else ""} (MiT-B{experiment[-1]})"'
                )
        assert compose("train", overrides=["experiment=isam2_fusion"]).model.head._target_.endswith(
            "FusionHead"
        )
