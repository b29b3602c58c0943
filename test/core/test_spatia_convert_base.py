"""``Wan2.2_VAE.pth`` / ``models_t5_umt5-xxl-enc-bf16.pth`` conversion, checked against DiffSynth 1.1.9.

Tiny DiffSynth modules (``WanTextEncoder``, ``VideoVAE38_``: the classes DiffSynth loads the two
release files into, unchanged) get random weights; their state dicts go through our converters into
transformers' ``UMT5EncoderModel`` / diffusers' ``AutoencoderKLWan`` and the outputs must agree
(fp32, max abs diff <= 1e-4). The full-size names and shapes are checked on the ``meta`` device.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import inspect
import json
import sys
from pathlib import Path

import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)
import torch
from safetensors.torch import save_file

from spatia_core.errors import FileFormatError
from spatia_core.generators.spatia import checkpoint as ckpt
from spatia_core.generators.spatia import convert
from spatia_core.generators.spatia.tiny import tiny_tokenizer
from spatia_core.generators.spatia.transformer import SpatiaTransformer3DModel, tiny_config

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-4

T5_DS = dict(vocab=64, dim=32, dim_attn=32, dim_ffn=48, num_heads=4, num_layers=2, num_buckets=8)
T5_CFG = convert.umt5_xxl_config(
    vocab_size=64, d_model=32, d_kv=8, d_ff=48, num_layers=2, num_heads=4, relative_attention_num_buckets=8
)
VAE_DS = dict(dim=8, z_dim=4, dec_dim=12, dim_mult=[1, 2, 2, 2], num_res_blocks=1)
_g = torch.Generator().manual_seed(7)
VAE_CFG = convert.wan22_vae_config(
    base_dim=8, decoder_base_dim=12, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
    latents_mean=(0.1 * torch.randn(4, generator=_g)).tolist(),
    latents_std=(0.8 + 0.4 * torch.rand(4, generator=_g)).tolist(),
)


@pytest.fixture(scope="module")
def ref():
    if importlib.util.find_spec("diffsynth") is None:
        _prereq.missing("diffsynth==1.1.9 is not installed (pip install --no-deps diffsynth==1.1.9)")
    spec = importlib.util.spec_from_file_location("diffsynth_reference", REPO / "bench" / "diffsynth_reference.py")
    module = sys.modules.get("diffsynth_reference")
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules["diffsynth_reference"] = module
        spec.loader.exec_module(module)
    return module.load_base_modules()


def _randomize(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random weights everywhere (default inits leave norms at 1 and the attention output at 0)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name or "gamma" in name or name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return module.eval()


@pytest.fixture(scope="module")
def ds_t5(ref):
    return _randomize(ref.WanTextEncoder(**T5_DS), 1)


@pytest.fixture(scope="module")
def ds_vae(ref):
    vae = _randomize(ref.VideoVAE38_(**VAE_DS), 2)
    with torch.no_grad():  # keep decoded pixels mostly inside [-1, 1] so the final clamp hides nothing
        for p in vae.decoder.head[2].parameters():
            p.mul_(0.05)
    return vae


def _tokens():
    ids = torch.randint(2, 64, (2, 20), generator=torch.Generator().manual_seed(3))
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[1, 13:] = 0  # padded second prompt
    ids[1, 13:] = 0
    return ids, mask


def _t5_max_diff(ds_t5, ours) -> float:
    ids, mask = _tokens()
    with torch.no_grad():
        want = ds_t5(ids, mask)
        got = ours(input_ids=ids, attention_mask=mask).last_hidden_state
    return (want - got).abs().max().item()


def _vae_diffs(ds_vae, ours) -> tuple[float, float]:
    """(encode, decode) max abs differences on a 5-frame 32x32 video, normalised latents."""
    mean = torch.tensor(VAE_CFG["latents_mean"]).view(1, -1, 1, 1, 1)
    std = torch.tensor(VAE_CFG["latents_std"]).view(1, -1, 1, 1, 1)
    video = torch.rand(1, 3, 5, 32, 32, generator=torch.Generator().manual_seed(5)) * 2 - 1
    with torch.no_grad():
        want_z = ds_vae.encode(video, [mean.flatten(), 1.0 / std.flatten()])
        got_z = (ours.encode(video).latent_dist.mode() - mean) / std
        want_x = ds_vae.decode(want_z, [mean.flatten(), 1.0 / std.flatten()]).clamp(-1, 1)
        got_x = ours.decode(want_z * std + mean).sample
    assert want_z.shape == got_z.shape == (1, 4, 2, 2, 2)
    assert want_x.shape == got_x.shape == video.shape
    assert (want_x.abs() < 1).float().mean() > 0.9  # the comparison is not hidden by clamping
    return (want_z - got_z).abs().max().item(), (want_x - got_x).abs().max().item()


# ----------------------------------------------------------------------------- umT5
def test_umt5_matches_diffsynth_text_encoder(ds_t5):
    state = convert.convert_umt5_state_dict(ds_t5.state_dict(), convert.umt5_expected_shapes(T5_CFG))
    ours = convert.build_umt5_encoder(T5_CFG).eval()
    ours.load_state_dict(state, strict=True)
    diff = _t5_max_diff(ds_t5, ours)
    print(f"umT5 max abs diff {diff:.2e}")
    assert diff <= TOL


def test_umt5_full_size_names_and_shapes(ref):
    with torch.device("meta"):
        full = ref.WanTextEncoder()  # DiffSynth's defaults = the released umT5-XXL encoder
    cfg = convert.umt5_xxl_config()
    assert (cfg["vocab_size"], cfg["d_model"], cfg["d_ff"], cfg["num_layers"], cfg["num_heads"]) == (
        full.token_embedding.num_embeddings, full.dim, full.dim_ffn, full.num_layers, full.num_heads)
    assert cfg["d_kv"] * cfg["num_heads"] == full.dim_attn
    state = convert.convert_umt5_state_dict(full.state_dict(), convert.umt5_expected_shapes())
    assert len(state) == len(full.state_dict()) + 1  # the token embedding feeds two tied names


# ----------------------------------------------------------------------------- VAE
def test_wan22_vae_matches_diffsynth(ds_vae):
    state = convert.convert_wan22_vae_state_dict(ds_vae.state_dict(), convert.wan22_vae_expected_shapes(VAE_CFG))
    ours = convert.build_wan22_vae(VAE_CFG).eval()
    ours.load_state_dict(state, strict=True)
    enc, dec = _vae_diffs(ds_vae, ours)
    print(f"VAE max abs diff encode {enc:.2e} decode {dec:.2e}")
    assert enc <= TOL and dec <= TOL


def test_wan22_vae_full_size_names_shapes_and_statistics(ref):
    with torch.device("meta"):
        full = ref.VideoVAE38_()  # what WanVideoVAE38 (DiffSynth's class for Wan2.2_VAE.pth) wraps
    prefixed = {"model." + k: v for k, v in full.state_dict().items()}  # DiffSynth's own naming
    state = convert.convert_wan22_vae_state_dict(prefixed, convert.wan22_vae_expected_shapes())
    assert len(state) == len(prefixed)
    # latent statistics: the literals of DiffSynth's WanVideoVAE38.__init__
    tree = ast.parse(inspect.getsource(ref.WanVideoVAE38.__init__).lstrip())
    lists = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) and node.targets[0].id in ("mean", "std")
    }
    cfg = convert.wan22_vae_config()
    assert lists["mean"] == cfg["latents_mean"] and lists["std"] == cfg["latents_std"]


def test_state_dict_errors_list_every_problem(ds_vae, ds_t5):
    vae = dict(ds_vae.state_dict())
    del vae["encoder.head.2.bias"]
    vae["encoder.bogus.weight"] = torch.zeros(1)
    vae["conv2.weight"] = torch.zeros(3, 3, 1, 1, 1)
    with pytest.raises(FileFormatError) as info:
        convert.convert_wan22_vae_state_dict(vae, convert.wan22_vae_expected_shapes(VAE_CFG), "vae file")
    msg = str(info.value)
    assert "vae file does not match the Wan2.2 VAE" in msg
    assert "missing 1 (encoder.conv_out.bias)" in msg
    assert "unexpected 1 (encoder.bogus.weight)" in msg
    assert "mis-shaped 1 (post_quant_conv.weight (3, 3, 1, 1, 1) != (4, 4, 1, 1, 1))" in msg
    # a text-encoder file given as the VAE: every name is unexpected
    with pytest.raises(FileFormatError, match=r"missing \d+ .*unexpected \d+ \(blocks\.0\.attn"):
        convert.convert_wan22_vae_state_dict(ds_t5.state_dict(), convert.wan22_vae_expected_shapes(VAE_CFG))
    t5 = dict(ds_t5.state_dict())
    del t5["blocks.1.ffn.fc1.weight"]
    with pytest.raises(FileFormatError, match=r"missing 1 \(encoder\.block\.1\.layer\.1\.DenseReluDense\.wi_1"):
        convert.convert_umt5_state_dict(t5, convert.umt5_expected_shapes(T5_CFG))


# ----------------------------------------------------------------------------- CLI
def _write_release(tmp: Path, ds_vae, ds_t5, in_base: bool) -> dict[str, Path]:
    cfg = tiny_config()
    torch.manual_seed(0)
    dit = SpatiaTransformer3DModel(**cfg)
    base = tmp / "base"
    base.mkdir()
    ds = {convert.diffusers_to_diffsynth_key(k): v.contiguous() for k, v in dit.state_dict().items()}
    control = {k: v for k, v in ds.items() if k.startswith("vace_")}
    main = sorted(k for k in ds if k not in control)
    for i, shard in enumerate(convert.BASE_SHARDS):
        save_file({k: ds[k] for k in main[i::3]}, str(base / shard))
    save_file(control, str(tmp / "control.safetensors"))
    folder = base if in_base else tmp
    torch.save(ds_vae.state_dict(), folder / convert.VAE_FILE)
    torch.save({k: v.to(torch.bfloat16) for k, v in ds_t5.state_dict().items()}, folder / convert.T5_FILE)
    for name, data in (("config.json", cfg), ("vae.json", VAE_CFG), ("t5.json", T5_CFG)):
        (tmp / name).write_text(json.dumps(data))
    tiny_tokenizer().save_pretrained(tmp / "tokenizer")
    return {"base": base, "control": tmp / "control.safetensors", "vae": folder / convert.VAE_FILE,
            "t5": folder / convert.T5_FILE, "tmp": tmp}


def _args(paths: dict[str, Path], out: Path, *extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    convert.add_arguments(parser)
    tmp = paths["tmp"]
    argv = ["--base", str(paths["base"]), "--control", str(paths["control"]), "--config", str(tmp / "config.json"),
            "--vae-config", str(tmp / "vae.json"), "--t5-config", str(tmp / "t5.json"), "--out", str(out),
            "--dtype", "float32", *extra]
    return parser.parse_args(argv)


def test_cli_converts_pth_files_from_base_folder(tmp_path, ds_vae, ds_t5):
    paths = _write_release(tmp_path, ds_vae, ds_t5, in_base=True)
    out = tmp_path / "ckpt"
    assert convert.run(_args(paths, out, "--tokenizer", str(tmp_path / "tokenizer"))) == 0
    loaded = ckpt.load_checkpoint(out, components=("vae", "text_encoder", "tokenizer"), dtype=torch.float32)
    enc, dec = _vae_diffs(ds_vae, loaded["vae"].eval())
    assert enc <= TOL and dec <= TOL
    # the text encoder file was bf16: compare with DiffSynth running those bf16-rounded weights in fp32
    rounded = type(ds_t5)(**T5_DS).eval()
    rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in ds_t5.state_dict().items()})
    assert _t5_max_diff(rounded, loaded["text_encoder"].eval()) <= TOL
    assert loaded["tokenizer"]("a room").input_ids


def test_cli_explicit_pth_flags_and_clear_errors(tmp_path, ds_vae, ds_t5):
    paths = _write_release(tmp_path, ds_vae, ds_t5, in_base=False)
    # truncated VAE file
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(paths["vae"].read_bytes()[:2000])
    with pytest.raises(FileFormatError, match="cannot read .*truncated.pth"):
        convert.run(_args(paths, tmp_path / "o1", "--vae-pth", str(truncated)))
    # the text encoder file given as the VAE
    with pytest.raises(FileFormatError, match="does not match the Wan2.2 VAE: missing"):
        convert.run(_args(paths, tmp_path / "o2", "--vae-pth", str(paths["t5"])))
    with pytest.raises(FileFormatError, match="missing file"):
        convert.run(_args(paths, tmp_path / "o3", "--t5-pth", str(tmp_path / "nope.pth")))
    with pytest.raises(FileFormatError, match="local copy of google/umt5-xxl"):
        convert.run(_args(paths, tmp_path / "o4", "--tokenizer", str(tmp_path / "no_tokenizer")))
    with pytest.raises(FileFormatError, match="not both"):
        convert.run(_args(paths, tmp_path / "o5", "--vae-pth", str(paths["vae"]), "--vae", str(tmp_path)))
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))
    # explicit flags work (no tokenizer: allowed, with a warning)
    out = tmp_path / "ckpt"
    assert convert.run(_args(paths, out, "--vae-pth", str(paths["vae"]), "--t5-pth", str(paths["t5"]))) == 0
    loaded = ckpt.load_checkpoint(out, components=("vae", "text_encoder"), dtype=torch.float32)
    assert loaded["vae"].config.z_dim == 4 and loaded["text_encoder"].config.num_layers == 2
