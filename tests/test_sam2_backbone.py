"""The frozen SAM2: random-weight warning, checkpoint round trip and mismatch, settings, one forward per encode."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from isam2.errors import ISAM2Error
from isam2.files import cached_sha256
from isam2.masklets.sam2_backbone import SAM2Backbone
from tests.conftest import pooling_levels, toy_video


def test_random_weights_warn_loudly_and_are_recorded(caplog):
    with caplog.at_level(logging.WARNING):
        bb = SAM2Backbone("hiera_t", image_size=64, device="cpu")
    assert any("RANDOM WEIGHTS" in r.getMessage() for r in caplog.records)
    meta = bb.metadata()
    assert meta["checkpoint_sha256"] == "random" and meta["checkpoint"] is None and meta["random_weights"]
    json.dumps(meta)  # JSON-able
    for key in ("variant", "version", "image_size", "sam2_C", "torch", "sam2", "device"):
        assert key in meta
    assert meta["variant"] == "hiera_t" and meta["image_size"] == 64 and meta["device"] == "cpu"


def test_frozen(tiny_backbone):
    m = tiny_backbone.model
    assert not m.training
    assert not any(p.requires_grad for p in m.parameters())
    enc = tiny_backbone.encode(toy_video(1)[0][0])
    assert enc.maps[0].is_inference() and not enc.maps[0].requires_grad


def test_encode_counts_and_shapes(tiny_backbone):
    frame = toy_video(1)[0][0]
    before = tiny_backbone.encoder_calls
    enc = tiny_backbone.encode(frame)
    assert tiny_backbone.encoder_calls == before + 1
    assert tiny_backbone.feature_dim == 256
    assert [tuple(m.shape) for m in enc.maps] == [(256, 8, 8)]  # stride 16 at 128 px
    assert enc.orig_hw == frame.shape[:2]
    masks = torch.zeros(2, *frame.shape[:2], dtype=torch.bool)
    masks[0, :10, :10] = True
    v = tiny_backbone.pool(enc, masks)
    assert v.shape == (2, 256) and v.dtype == torch.float32 and torch.all(v[1] == 0)
    with pooling_levels(tiny_backbone, [0, 1, 2]):
        assert tiny_backbone.feature_dim == 768
        enc3 = tiny_backbone.encode(frame)
        assert [tuple(m.shape) for m in enc3.maps] == [(256, 8, 8), (256, 16, 16), (256, 32, 32)]
        assert tiny_backbone.pool(enc3, masks).shape == (2, 768)
    assert tiny_backbone.feature_dim == 256


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*:FutureWarning")  # sam2's own transforms
def test_same_features_as_sam2_own_forward(tiny_backbone):
    """Our preprocessing + encode equals sam2's SAM2ImagePredictor.set_image on the same frame."""
    from isam2.masklets.sam2_adapter import image_predictor, predictor_features

    frame = toy_video(1)[0][0]
    pred = image_predictor(tiny_backbone.model, tiny_backbone.image_size)
    with torch.inference_mode():
        pred.set_image(frame)
    theirs = predictor_features(pred)
    ours = tiny_backbone.encode(frame).backbone_out
    want = theirs["image_embed"] - tiny_backbone.model.no_mem_embed.view(1, -1, 1, 1)
    torch.testing.assert_close(ours["vision_features"], want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours["backbone_fpn"][0], theirs["high_res_feats"][0], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("size", [100, 0, "big"])
def test_image_size_must_be_a_multiple_of_32(size):
    with pytest.raises(ISAM2Error, match=r"sam2\.image_size"):
        SAM2Backbone("hiera_t", image_size=size, device="cpu")


def test_bad_variant_version_device():
    with pytest.raises(ISAM2Error, match="hiera_x"):
        SAM2Backbone("hiera_x", image_size=64, device="cpu")
    with pytest.raises(ISAM2Error, match="sam2.version"):
        SAM2Backbone("hiera_t", version="3.0", image_size=64, device="cpu")
    with pytest.raises(ISAM2Error, match="sam2.device"):
        SAM2Backbone("hiera_t", image_size=64, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ISAM2Error, match="CUDA"):
            SAM2Backbone("hiera_t", image_size=64, device="cuda")


def test_sam2_0_configs_build():
    # a float, as `sam2.version=2.0` gives
    bb = SAM2Backbone("hiera_t", version=2.0, image_size=64, device="cpu")
    assert bb.metadata()["config"] == "configs/sam2/sam2_hiera_t.yaml" and bb.version == "2.0"


def test_checkpoint_round_trip(tiny_backbone, tmp_path, caplog, capsys):
    # Random init is seeded (the same in every process), so the saved model is perturbed first: loading
    # must then reproduce the perturbed weights, not the default random ones.
    saved = SAM2Backbone("hiera_t", image_size=128, device="cpu")
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in saved.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    path = tmp_path / "tiny.pt"
    torch.save({"model": saved.model.state_dict()}, path)
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        loaded = SAM2Backbone("hiera_t", checkpoint=str(path), image_size=128, device="cpu")
    assert "RANDOM WEIGHTS" not in capsys.readouterr().err
    assert not any("RANDOM WEIGHTS" in r.getMessage() for r in caplog.records)
    meta = loaded.metadata()
    assert meta["checkpoint"] == str(path) and meta["checkpoint_sha256"] == cached_sha256(path)
    assert len(meta["checkpoint_sha256"]) == 64 and not meta["random_weights"]
    frame = toy_video(1)[0][0]
    masks = torch.from_numpy(toy_video(1)[1][0] == 7)[None]
    a, b = saved.encode(frame), loaded.encode(frame)
    torch.testing.assert_close(a.maps[0], b.maps[0], rtol=0, atol=0)
    torch.testing.assert_close(saved.pool(a, masks), loaded.pool(b, masks), rtol=0, atol=0)
    # the default random model differs (the round trip is not vacuous)
    assert not torch.allclose(tiny_backbone.encode(frame).maps[0], a.maps[0])


def test_mismatched_checkpoint_names_both(tiny_backbone, tmp_path):
    path = tmp_path / "tiny_t.pt"
    torch.save({"model": tiny_backbone.model.state_dict()}, path)
    with pytest.raises(ISAM2Error) as e:
        SAM2Backbone("hiera_s", checkpoint=path, image_size=128, device="cpu")
    assert str(path) in str(e.value) and "hiera_s" in str(e.value)
    with pytest.raises(ISAM2Error) as e:  # SAM 2.1 weights into the SAM 2.0 config
        SAM2Backbone("hiera_t", version="2.0", checkpoint=path, image_size=128, device="cpu")
    assert str(path) in str(e.value) and "2.0" in str(e.value)


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(ISAM2Error, match="does not exist"):
        SAM2Backbone("hiera_t", checkpoint=tmp_path / "missing.pt", image_size=64, device="cpu")
    not_sam = tmp_path / "plain.pt"
    torch.save({"state_dict": {}}, not_sam)
    with pytest.raises(ISAM2Error, match="no 'model'"):
        SAM2Backbone("hiera_t", checkpoint=not_sam, image_size=64, device="cpu")
    pickled = tmp_path / "pickled.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "obj": np.dtype("O").type}, pickled)
    with pytest.raises(ISAM2Error, match="weights_only=True"):
        SAM2Backbone("hiera_t", checkpoint=pickled, image_size=64, device="cpu")


def test_importing_sam2_leaves_hydra_main_working(tmp_path):
    """sam2 initialises a global Hydra on import; ours undoes it, so @hydra.main still works afterwards."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "c.yaml").write_text("a: 1\n")
    app = tmp_path / "app.py"
    app.write_text(
        textwrap.dedent(
            """
            import isam2.masklets.generator  # imports sam2
            import hydra

            @hydra.main(version_base="1.3", config_path="conf", config_name="c")
            def main(cfg):
                from isam2.masklets.sam2_backbone import SAM2Backbone
                SAM2Backbone("hiera_t", image_size=64, device="cpu")
                print("ok", cfg.a)

            main()
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(app), f"hydra.run.dir={tmp_path}/run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    assert "ok 1" in out.stdout


def test_random_weights_are_the_same_in_every_process_and_leave_the_rng_alone(tiny_backbone):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    other = SAM2Backbone("hiera_t", image_size=tiny_backbone.image_size, device="cpu")
    assert torch.equal(torch.rand(1), expected_next)  # the caller's RNG stream is untouched
    mine, theirs = tiny_backbone.model.state_dict(), other.model.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_an_unsupported_sam2_version_is_refused_or_opted_in(monkeypatch):
    from isam2.errors import ISAM2Error
    from isam2.masklets import sam2_adapter

    monkeypatch.setattr(sam2_adapter, "sam2_version", lambda: "9.9.9")
    monkeypatch.delenv(sam2_adapter.ALLOW_UNTESTED_ENV, raising=False)
    with pytest.raises(ISAM2Error, match=r"sam2 9\.9\.9 .*1\.1\.0.*ISAM2_ALLOW_UNTESTED_SAM2=1"):
        SAM2Backbone("hiera_t", image_size=64, device="cpu")
    monkeypatch.setenv(sam2_adapter.ALLOW_UNTESTED_ENV, "1")
    with pytest.warns(UserWarning, match="9.9.9"):
        SAM2Backbone("hiera_t", image_size=64, device="cpu")


def test_building_a_backbone_leaves_tf32_alone_and_the_entry_point_sets_it():
    from isam2.masklets.runtime import apply_tf32

    saved = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        bb = SAM2Backbone("hiera_t", image_size=64, device="cpu", tf32=True)
        assert torch.backends.cuda.matmul.allow_tf32 is False and bb.metadata()["tf32"] is False
        assert apply_tf32({"tf32": True}) is True and torch.backends.cuda.matmul.allow_tf32
        assert apply_tf32({"tf32": False}) is False and not torch.backends.cudnn.allow_tf32
        assert apply_tf32(None) is True  # default on
    finally:
        torch.backends.cuda.matmul.allow_tf32 = saved


def test_the_adapter_is_the_only_module_that_touches_sam2_private_names():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    private = re.compile(
        r"\._(?:predict|transforms|features|bb_feat_sizes|orig_hw|is_image_set|prepare_backbone_features"
        r"|run_single_frame_inference|run_memory_encoder|get_image_feature|forward_sam_heads"
        r"|get_orig_video_res_output|obj_id_to_idx)\b|svp\.tqdm|GlobalHydra\.instance"
    )
    offenders = []
    for folder in ("isam2", "benchmarks", "tests"):
        for file in (root / folder).rglob("*.py"):
            if file.name in ("sam2_adapter.py", "test_sam2_backbone.py"):
                continue
            if private.search(file.read_text()):
                offenders.append(str(file.relative_to(root)))
    assert offenders == []
