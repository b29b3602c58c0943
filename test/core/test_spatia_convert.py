"""Converter (DiffSynth names -> ours), ``spatia convert`` on fake release files, checkpoint I/O."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from spatia_core.errors import FileFormatError
from spatia_core.generators.spatia import checkpoint as ckpt
from spatia_core.generators.spatia import convert
from spatia_core.generators.spatia.lora import add_lora, load_official_lora
from spatia_core.generators.spatia.transformer import SpatiaTransformer3DModel, tiny_config

CFG = tiny_config()


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return SpatiaTransformer3DModel(**CFG).eval()


def diffsynth_state(model) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in model.state_dict().items():
        ds = convert.diffusers_to_diffsynth_key(name)
        assert ds is not None, name
        out[ds] = tensor.clone()
    return out


def sample_inputs(batch=1):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(batch, CFG["in_channels"], 3, 4, 6, generator=g)
    ctl = torch.randn(batch, CFG["vace_in_channels"], 3, 4, 6, generator=g)
    ref = torch.randn(batch, CFG["in_channels"], 1, 4, 6, generator=g)
    text = torch.randn(batch, 5, CFG["text_dim"], generator=g)
    t = torch.tensor([[0.0, 500.0, 500.0]] * batch)
    return x, t, text, ctl, ref


def forward(m, inputs):
    with torch.no_grad():
        return m(*inputs).sample


def test_key_mapping_round_trip(model):
    ds = diffsynth_state(model)
    assert "head.modulation" in ds and "vace_blocks.0.before_proj.weight" in ds
    assert "blocks.1.self_attn.o.weight" in ds and "blocks.0.norm3.weight" in ds
    assert "text_embedding.2.bias" in ds and "time_projection.1.weight" in ds
    back = convert.convert_diffsynth_state_dict(ds, convert.expected_shapes(CFG))
    ours = model.state_dict()
    assert back.keys() == ours.keys()
    assert all(torch.equal(back[k], ours[k]) for k in ours)
    # prefixed keys (release LoRA-style or original Wan files) map too
    assert convert.diffsynth_to_diffusers_key("pipe.dit.blocks.3.ffn.0.weight") == "blocks.3.ffn.net.0.proj.weight"
    assert convert.diffsynth_to_diffusers_key("model.diffusion_model.head.head.bias") == "proj_out.bias"
    assert convert.diffsynth_to_diffusers_key("blocks.0.bogus.weight") is None


def test_clear_errors_for_missing_extra_misshaped(model):
    ds = diffsynth_state(model)
    del ds["blocks.0.self_attn.q.weight"]
    ds["blocks.0.extra_thing.weight"] = torch.zeros(3)
    ds["head.head.bias"] = torch.zeros(7)
    with pytest.raises(FileFormatError) as info:
        convert.convert_diffsynth_state_dict(ds, convert.expected_shapes(CFG), "test file")
    msg = str(info.value)
    assert "test file" in msg
    assert "missing 1 (blocks.0.attn1.to_q.weight)" in msg
    assert "unexpected 1 (blocks.0.extra_thing.weight)" in msg
    assert "mis-shaped 1 (proj_out.bias (7,) != (32,))" in msg


def write_release(tmp: Path, model, lora: dict | None = None) -> dict[str, Path]:
    ds = diffsynth_state(model)
    base = {k: v for k, v in ds.items() if not k.startswith("vace")}
    control = {k: v for k, v in ds.items() if k.startswith("vace")}
    base_dir = tmp / "Wan2.2-TI2V-5B"
    base_dir.mkdir()
    names = sorted(base)
    for i, shard in enumerate(convert.BASE_SHARDS):
        save_file({k: base[k].contiguous() for k in names[i::3]}, str(base_dir / shard))
    save_file({k: v.contiguous() for k, v in control.items()}, str(tmp / "control.safetensors"))
    paths = {"base": base_dir, "control": tmp / "control.safetensors"}
    if lora is not None:
        save_file(lora, str(tmp / "lora.safetensors"))
        paths["lora"] = tmp / "lora.safetensors"
    (tmp / "config.json").write_text(json.dumps(CFG))
    paths["config"] = tmp / "config.json"
    return paths


def random_official_lora(model, rank=2, seed=4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name in ("blocks.0.self_attn.q", "blocks.1.cross_attn.o", "blocks.3.ffn.2"):
        layer = model.get_submodule(convert.diffsynth_to_diffusers_key(name + ".weight")[: -len(".weight")])
        out[f"pipe.dit.{name}.lora_A.default.weight"] = torch.randn(rank, layer.in_features, generator=g)
        out[f"pipe.dit.{name}.lora_B.default.weight"] = torch.randn(layer.out_features, rank, generator=g)
    return out


def cli_args(paths: dict[str, Path], out: Path, **extra) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    convert.add_arguments(parser)
    argv = ["--base", str(paths["base"]), "--control", str(paths["control"]), "--config", str(paths["config"])]
    argv += ["--out", str(out), "--dtype", "float32"]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return parser.parse_args(argv)


def test_cli_converts_release_files_with_merged_lora(tmp_path, model):
    lora = random_official_lora(model)
    paths = write_release(tmp_path, model, lora)
    out = tmp_path / "ckpt"
    assert convert.run(cli_args(paths, out, lora=paths["lora"], merge_lora=True)) == 0
    loaded = ckpt.load_checkpoint(out, components=("transformer", "scheduler"))
    meta = loaded["metadata"]
    assert meta["sampling"]["steps"] == 40 and meta["sampling"]["shift"] == 5.0
    assert loaded["scheduler"].config.prediction_type == "flow_prediction"
    assert loaded["scheduler"].config.use_flow_sigmas and loaded["scheduler"].config.flow_shift == 5.0
    # merged weight = W + B @ A (DiffSynth's rule)
    w = loaded["transformer"].blocks[0].attn1.to_q.weight
    a = lora["pipe.dit.blocks.0.self_attn.q.lora_A.default.weight"]
    b = lora["pipe.dit.blocks.0.self_attn.q.lora_B.default.weight"]
    assert torch.allclose(w, model.blocks[0].attn1.to_q.weight + b @ a, atol=1e-5)
    assert not (out.parent / ".ckpt.partial").exists()


def test_cli_reports_missing_and_corrupt_files(tmp_path, model):
    paths = write_release(tmp_path, model)
    (paths["base"] / convert.BASE_SHARDS[1]).unlink()
    with pytest.raises(FileFormatError, match="missing file"):
        convert.run(cli_args(paths, tmp_path / "o1"))
    (tmp_path / "b").mkdir()
    paths = write_release(tmp_path / "b", model)
    paths["control"].write_bytes(b"not a safetensors file")
    with pytest.raises(FileFormatError, match="cannot read"):
        convert.run(cli_args(paths, tmp_path / "o2"))
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_checkpoint_round_trip_with_lora_adapter(tmp_path, model):
    from diffusers import AutoencoderKLWan

    m = SpatiaTransformer3DModel(**CFG).eval()
    m.load_state_dict(model.state_dict())
    add_lora(m, rank=4)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if "lora_B" in name:
                p.normal_()
    assert not any("lora" in n for n, _ in m.named_parameters() if n.startswith("vace_blocks"))
    vae = AutoencoderKLWan(
        base_dim=16, z_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
        temperal_downsample=[False, True, True],
    )
    path = ckpt.save_checkpoint(
        tmp_path / "ck", transformer=m, vae=vae, scheduler=ckpt.default_scheduler(),  # adapter -> lora/
        metadata={"sampling": {"steps": 8}},
    )
    meta = ckpt.read_metadata(path)
    assert meta["sampling"]["steps"] == 8 and meta["sampling"]["guidance_scale"] == 3.5
    assert meta["components"] == ["lora", "scheduler", "transformer", "vae"]
    assert all(f.suffix != ".bin" for f in path.rglob("*"))
    loaded = ckpt.load_checkpoint(path, components=("transformer", "lora", "vae"))
    inputs = sample_inputs()
    assert torch.allclose(forward(loaded["transformer"].eval(), inputs), forward(m, inputs), atol=1e-5)
    base_only = ckpt.load_checkpoint(path, components=("transformer",))["transformer"]
    assert torch.allclose(forward(base_only.eval(), inputs), forward(model, inputs), atol=1e-5)
    assert isinstance(loaded["vae"], AutoencoderKLWan)


class _Exploding:
    def save_pretrained(self, *args, **kwargs):
        raise RuntimeError("disk full")


def test_checkpoint_writes_are_atomic(tmp_path, model):
    path = ckpt.save_checkpoint(tmp_path / "ck", transformer=model)
    before = sorted(p.relative_to(path) for p in path.rglob("*"))
    with pytest.raises(FileFormatError, match="already exists"):
        ckpt.save_checkpoint(path, transformer=model)
    with pytest.raises(RuntimeError, match="disk full"):
        ckpt.save_checkpoint(path, transformer=model, vae=_Exploding(), overwrite=True)
    assert sorted(p.relative_to(path) for p in path.rglob("*")) == before  # old one intact
    with pytest.raises(RuntimeError):
        ckpt.save_checkpoint(tmp_path / "new", vae=_Exploding())
    assert not (tmp_path / "new").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ck"]  # no partial folders left
    ckpt.save_checkpoint(path, transformer=model, scheduler=ckpt.default_scheduler(), overwrite=True)
    assert ckpt.read_metadata(path)["components"] == ["scheduler", "transformer"]


def test_checkpoint_load_errors(tmp_path, model):
    with pytest.raises(FileFormatError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "nope")
    path = ckpt.save_checkpoint(tmp_path / "ck", transformer=model)
    with pytest.raises(FileFormatError, match="no vae/"):
        ckpt.load_checkpoint(path, components=("vae",))
    weights = next((path / "transformer").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(FileFormatError, match="cannot load transformer"):
        ckpt.load_checkpoint(path, components=("transformer",))
    (path / "spatia.json").write_text("{broken")
    with pytest.raises(FileFormatError, match="cannot read"):
        ckpt.read_metadata(path)


def test_official_lora_errors(model):
    m = SpatiaTransformer3DModel(**CFG)
    lora = random_official_lora(model)
    bad = dict(lora)
    bad["pipe.dit.vace_blocks.0.self_attn.q.lora_A.default.weight"] = torch.zeros(2, 64)
    with pytest.raises(FileFormatError, match="not LoRA weights of main-block"):
        load_official_lora(m, bad)
    unpaired = {k: v for k, v in lora.items() if "blocks.0.self_attn.q.lora_B" not in k}
    with pytest.raises(FileFormatError, match="incomplete"):
        load_official_lora(m, unpaired)
    misfit = dict(lora)
    misfit["pipe.dit.blocks.3.ffn.2.lora_A.default.weight"] = torch.zeros(2, 5)
    with pytest.raises(FileFormatError, match="does not fit"):
        load_official_lora(m, misfit)


def test_checkpoint_text_encoder_round_trip(tmp_path):
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(0)
    enc = UMT5EncoderModel(UMT5Config(vocab_size=64, d_model=16, d_kv=8, d_ff=32, num_layers=1, num_heads=2)).eval()
    path = ckpt.save_checkpoint(tmp_path / "ck", text_encoder=enc)
    loaded = ckpt.load_checkpoint(path, components=("text_encoder",))["text_encoder"].eval()
    ids = torch.tensor([[3, 7, 11, 1]])
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=ids).last_hidden_state, enc(input_ids=ids).last_hidden_state)
    assert list((path / "text_encoder").glob("*.safetensors"))
