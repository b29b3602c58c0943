"""The checkpoint folder through diffusers: ``SpatiaPipeline.save_pretrained`` / ``from_pretrained``,
``save_checkpoint``'s atomic write, older folders without ``model_index.json``, and LoRA loading
through diffusers' ``load_lora_adapter`` / ``fuse_lora`` (tiny random components, CPU)."""

from __future__ import annotations

import json

import pytest
import torch

from spatia_core.errors import FileFormatError, InputError
from spatia_core.generators.spatia import checkpoint as ckpt
from spatia_core.generators.spatia.convert import diffsynth_to_diffusers_key
from spatia_core.generators.spatia.lora import (
    add_lora,
    load_lora,
    load_official_lora,
    lora_state_dict,
    merge_lora,
    save_lora,
)
from spatia_core.generators.spatia.pipeline import SamplingDefaults, SpatiaPipeline
from spatia_core.generators.spatia.scheduler import SpatiaFlowUniPCScheduler
from spatia_core.generators.spatia.tiny import save_tiny_checkpoint, tiny_components, tiny_transformer
from spatia_core.generators.spatia.transformer import SpatiaTransformer3DModel, tiny_config


def _with_random_lora(transformer, rank=2, seed=3):
    add_lora(transformer, rank=rank)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g))
    return transformer


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_save_pretrained_round_trip_through_diffusers(tmp_path):
    parts = tiny_components(seed=1)
    _with_random_lora(parts["transformer"])
    pipe = SpatiaPipeline(**parts, defaults=SamplingDefaults(steps=7, max_sequence_length=32))
    pipe.save_pretrained(tmp_path / "ck", metadata={"note": "x"})
    index = json.loads((tmp_path / "ck" / "model_index.json").read_text())  # written by diffusers
    assert index["_class_name"] == "SpatiaPipeline"
    assert index["transformer"] == ["spatia_core.generators.spatia.transformer", "SpatiaTransformer3DModel"]
    meta = ckpt.read_metadata(tmp_path / "ck")
    assert meta["sampling"]["steps"] == 7 and meta["note"] == "x" and "lora" in meta["components"]
    weights = (tmp_path / "ck" / "transformer" / "diffusion_pytorch_model.safetensors").read_bytes()
    assert b"lora_" not in weights and b"base_layer" not in weights  # base weights under plain names

    loaded = SpatiaPipeline.from_pretrained(tmp_path / "ck", dtype=torch.float32)  # diffusers' signature
    assert loaded.defaults == pipe.defaults
    assert isinstance(loaded.scheduler, SpatiaFlowUniPCScheduler)
    assert _same_weights(loaded.transformer, pipe.transformer)  # base + adapter
    assert loaded.transformer.peft_config["default"].lora_alpha == pipe.transformer.peft_config["default"].lora_alpha
    assert loaded.set_lora(False) and loaded.set_lora(True)


def test_save_checkpoint_full_set_is_atomic_and_verified(tmp_path, monkeypatch):
    path = save_tiny_checkpoint(tmp_path / "ck", seed=0)
    assert (path / "model_index.json").is_file()
    assert ckpt.verify_checkpoint(path) == ["scheduler", "text_encoder", "tokenizer", "transformer", "vae"]
    before = {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()}

    def exploding(self, *args, **kwargs):
        raise RuntimeError("disk full")

    with monkeypatch.context() as m:  # a save that fails midway
        m.setattr(SpatiaFlowUniPCScheduler, "save_pretrained", exploding)
        with pytest.raises(RuntimeError, match="disk full"):
            ckpt.save_checkpoint(path, overwrite=True, **tiny_components(1))
    with monkeypatch.context() as m:  # a save that silently writes nothing: caught by the check
        m.setattr(SpatiaFlowUniPCScheduler, "save_pretrained", lambda self, *a, **k: None)
        with pytest.raises(FileFormatError, match="scheduler"):
            ckpt.save_checkpoint(path, overwrite=True, **tiny_components(1))
    assert {p.relative_to(path): p.read_bytes() for p in path.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no partial folders left


def test_checkpoint_without_model_index_still_loads(tmp_path):
    """Folders written before model_index.json existed: component folders + spatia.json only."""
    parts = tiny_components(seed=2)
    _with_random_lora(parts["transformer"])
    path = ckpt.save_checkpoint(tmp_path / "new", metadata={"sampling": {"steps": 5}}, **parts)
    (path / "model_index.json").unlink()
    (path / "spatia.json").write_text(json.dumps({"format_version": 1, "sampling": {"steps": 5}}))
    for pipe in (SpatiaPipeline.from_pretrained(path), SpatiaPipeline.from_checkpoint(path, device="cpu")):
        assert pipe.defaults.steps == 5
        assert _same_weights(pipe.transformer, parts["transformer"])
        assert pipe.set_lora(False)
    with pytest.raises(InputError, match="only dtype applies"):
        SpatiaPipeline.from_pretrained(path, device_map="cpu")


def test_lora_alpha_is_the_release_rule_through_diffusers():
    """load_official_lora + merge_lora (diffusers' load_lora_adapter / fuse_lora): W + alpha · B @ A."""
    model = tiny_transformer(seed=0)
    base = {k: v.clone() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(5)
    layer = model.blocks[1].attn2.to_v
    a, b = torch.randn(3, layer.in_features, generator=g), torch.randn(layer.out_features, 3, generator=g)
    lora = {"pipe.dit.blocks.1.cross_attn.v.lora_A.default.weight": a,
            "pipe.dit.blocks.1.cross_attn.v.lora_B.default.weight": b}
    assert diffsynth_to_diffusers_key("blocks.1.cross_attn.v.weight") == "blocks.1.attn2.to_v.weight"
    assert load_official_lora(model, lora, alpha=0.5) == 1
    merge_lora(model)
    assert not getattr(model, "peft_config", None)
    merged = model.state_dict()
    assert merged.keys() == base.keys()
    assert torch.allclose(merged["blocks.1.attn2.to_v.weight"], base["blocks.1.attn2.to_v.weight"] + 0.5 * b @ a,
                          atol=1e-5)
    assert all(torch.equal(merged[k], base[k]) for k in base if k != "blocks.1.attn2.to_v.weight")


def test_lora_folder_that_does_not_fit_lists_every_misfit(tmp_path):
    source = _with_random_lora(SpatiaTransformer3DModel(**tiny_config()))
    save_lora(source, tmp_path / "lora")
    other = SpatiaTransformer3DModel(**tiny_config(ffn_dim=64, num_layers=2, vace_layers=[0]))
    with pytest.raises(FileFormatError, match="does not fit the transformer") as info:
        load_lora(other, tmp_path / "lora")
    msg = str(info.value)  # 2 blocks x 10 layers absent + 2 blocks x 2 FFN weights mis-shaped, in one error
    assert "24 (blocks.0.ffn.net.0.proj.lora_B.weight (96, 2) != (64, 2), " in msg
    assert "blocks.2.attn1.to_k (no such linear layer)" in msg
    assert not getattr(other, "peft_config", None)  # nothing half-loaded
    same = SpatiaTransformer3DModel(**tiny_config())
    assert load_lora(same, tmp_path / "lora") == 4 * 10  # per main block: 4 + 4 attention projections, 2 FFN
    theirs, ours = lora_state_dict(source), lora_state_dict(same)
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)
