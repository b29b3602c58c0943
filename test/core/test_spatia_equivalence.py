"""Our Spatia transformer vs DiffSynth 1.1.9 (the official release's implementation), fp32.

The same tiny model (the 5B model's structure scaled down: per-token timesteps
``seperated_timestep=True``, ``fuse_vae_embedding_in_latents=True``, no image input, control
blocks at main blocks 0 and 2) is built in DiffSynth (``WanModel`` + ``VaceWanModel``) with random
weights; its state dict is converted with our converter and loaded into
:class:`SpatiaTransformer3DModel`; outputs must agree to 1e-4.

1. History frames + control input, against DiffSynth's own official forward
   ``model_fn_wan_video``: it holds latent frame 0 at t=0; the other history frames get t=0
   through its per-frame timestep broadcast (``timestep`` of shape ``(F-1, 1)``).
2. Reference frames: DiffSynth 1.1.9 has no Spatia reference-frame handling (it is in the Spatia
   release), so the reference side is assembled here from DiffSynth's own building blocks (its
   patch embedding, float64 sinusoid, time MLPs, rotary tables, DiT blocks, VACE blocks, head),
   following the method description: reference latents prepended on the time axis at t=0, rotary
   temporal positions -K..-1 (conjugates of DiffSynth's table entries K..1), rows h..2h-1, the
   control branch run on the clip tokens only (the release's ``model_fn_wan_video`` slices the
   reference tokens off its input, time modulation and rotary table) and hints added to the
   history/target tokens only. The release's own forward is checked in
   ``test_spatia_release_dit.py``. With K=0 this assembly is first checked against
   ``model_fn_wan_video`` itself.
3. The same after merging a random LoRA given in the release's naming (``pipe.dit.`` keys),
   merged in DiffSynth with its ``GeneralLoRALoader`` and in ours through peft.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)
import torch

from spatia_core.generators.spatia.convert import convert_diffsynth_state_dict, expected_shapes
from spatia_core.generators.spatia.lora import load_official_lora, merge_lora
from spatia_core.generators.spatia.transformer import SpatiaTransformer3DModel, tiny_config

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-4


def _load_reference():
    if importlib.util.find_spec("diffsynth") is None:
        _prereq.missing("diffsynth==1.1.9 is not installed (pip install --no-deps diffsynth==1.1.9)")
    spec = importlib.util.spec_from_file_location("diffsynth_reference", REPO / "bench" / "diffsynth_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("diffsynth_reference", module)
    spec.loader.exec_module(module)
    return module


CFG = tiny_config(num_layers=4, vace_layers=[0, 2])


def _build(cfg):
    """DiffSynth WanModel + VaceWanModel with random weights, and ours loaded from them."""
    ref = _load_reference()
    mods = ref.load_modules()
    torch.manual_seed(0)
    dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
    dit = mods.WanModel(
        dim=dim, in_dim=cfg["in_channels"], ffn_dim=cfg["ffn_dim"], out_dim=cfg["out_channels"],
        text_dim=cfg["text_dim"], freq_dim=cfg["freq_dim"], eps=cfg["eps"], patch_size=tuple(cfg["patch_size"]),
        num_heads=cfg["num_attention_heads"], num_layers=cfg["num_layers"], has_image_input=False,
        seperated_timestep=True, require_vae_embedding=False, require_clip_embedding=False,
        fuse_vae_embedding_in_latents=True,
    )
    vace = mods.VaceWanModel(
        vace_layers=tuple(cfg["vace_layers"]), vace_in_dim=cfg["vace_in_channels"],
        patch_size=tuple(cfg["patch_size"]), has_image_input=False, dim=dim,
        num_heads=cfg["num_attention_heads"], ffn_dim=cfg["ffn_dim"], eps=cfg["eps"],
    )
    with torch.no_grad():  # random norm gains too (default init leaves them at 1)
        for name, p in list(dit.named_parameters()) + list(vace.named_parameters()):
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
    dit.eval()
    vace.eval()
    state = {**dit.state_dict(), **vace.state_dict()}
    ours = SpatiaTransformer3DModel(**cfg)
    ours.load_state_dict(convert_diffsynth_state_dict(state, expected_shapes(cfg)), strict=True)
    ours.eval()
    return ref, mods, dit, vace, ours


@pytest.fixture(scope="module")
def models():
    return _build(CFG)


def _inputs(frames=4, history=2, refs=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    h, w = 6, 8
    latents = torch.randn(1, CFG["in_channels"], frames, h, w, generator=g)
    control = torch.randn(1, CFG["vace_in_channels"], frames, h, w, generator=g)
    reference = torch.randn(1, CFG["in_channels"], refs, h, w, generator=g)
    context = torch.randn(1, 7, CFG["text_dim"], generator=g)
    t = torch.full((frames,), 731.25)
    t[:history] = 0.0
    return latents, t, context, control, reference


def _official(model_fn, dit, vace, latents, t, context, control, scale):
    """DiffSynth's ``model_fn_wan_video``: frame 0 at t=0, frames 1.. via a (F-1, 1) timestep."""
    with torch.no_grad():
        return model_fn(
            dit=dit, vace=vace, latents=latents, timestep=t[1:].reshape(-1, 1), context=context,
            vace_context=control, vace_scale=scale, fuse_vae_embedding_in_latents=True,
        )


def _assembled(mods, dit, vace, latents, t, context, control, reference, scale):
    """Spatia's forward with reference frames, from DiffSynth's building blocks (see docstring)."""
    from einops import rearrange

    k = 0 if reference is None else reference.shape[2]
    with torch.no_grad():
        x = latents if not k else torch.cat([reference, latents], dim=2)
        x = dit.patch_embedding(x)
        f, h, w = x.shape[2:]
        x = rearrange(x, "b c f h w -> b (f h w) c")
        t_tok = torch.cat([torch.zeros(k), t]).repeat_interleave(h * w)
        temb = dit.time_embedding(mods.sinusoidal_embedding_1d(dit.freq_dim, t_tok).unsqueeze(0))
        t_mod = dit.time_projection(temb).unflatten(2, (6, dit.dim))
        ctx = dit.text_embedding(context)
        f_t, f_h, f_w = dit.freqs
        target = torch.cat([
            f_t[: f - k].view(f - k, 1, 1, -1).expand(f - k, h, w, -1),
            f_h[:h].view(1, h, 1, -1).expand(f - k, h, w, -1),
            f_w[:w].view(1, 1, w, -1).expand(f - k, h, w, -1),
        ], dim=-1).reshape((f - k) * h * w, 1, -1)
        parts = [target]
        if k:
            ref_t = f_t[torch.arange(k, 0, -1)].conj()  # positions -K..-1
            parts.insert(0, torch.cat([
                ref_t.view(k, 1, 1, -1).expand(k, h, w, -1),
                f_h[h : 2 * h].view(1, h, 1, -1).expand(k, h, w, -1),
                f_w[:w].view(1, 1, w, -1).expand(k, h, w, -1),
            ], dim=-1).reshape(k * h * w, 1, -1))
        freqs = torch.cat(parts, dim=0)
        n_ref = k * h * w
        # The control branch sees the clip tokens only (the release slices the references off).
        c = vace.vace_patch_embedding(control).flatten(2).transpose(1, 2)
        for block in vace.vace_blocks:
            c = block(c, x[:, n_ref:], ctx, t_mod[:, n_ref:], freqs[n_ref:])
        hints = torch.unbind(c)[:-1]
        for i, block in enumerate(dit.blocks):
            x = block(x, ctx, t_mod, freqs)
            if i in vace.vace_layers_mapping:
                hint = hints[vace.vace_layers_mapping[i]]
                x = torch.cat([x[:, :n_ref], x[:, n_ref:] + hint * scale], dim=1)
        x = dit.head(x, temb)[:, n_ref:]
        return dit.unpatchify(x, (f - k, h, w))


def _ours(model, latents, t, context, control, reference, scale):
    with torch.no_grad():
        return model(latents, t[None], context, control, reference, control_scale=scale).sample


def test_history_and_control_match_official_model_fn(models):
    ref, mods, dit, vace, ours = models
    model_fn = ref.load_model_fn()
    latents, t, context, control, _ = _inputs(frames=4, history=2)
    expected = _official(model_fn, dit, vace, latents, t, context, control, 0.7)
    got = _ours(ours, latents, t, context, control, None, 0.7)
    assert got.shape == expected.shape == latents.shape
    assert (got - expected).abs().max().item() <= TOL
    # the assembled reference path reproduces the official function when K = 0
    assembled = _assembled(mods, dit, vace, latents, t, context, control, None, 0.7)
    assert (assembled - expected).abs().max().item() <= TOL


def test_reference_frames_match_diffsynth_assembly(models):
    _, mods, dit, vace, ours = models
    latents, t, context, control, reference = _inputs(frames=4, history=2, refs=3)
    expected = _assembled(mods, dit, vace, latents, t, context, control, reference, 1.0)
    got = _ours(ours, latents, t, context, control, reference, 1.0)
    assert got.shape == latents.shape
    assert (got - expected).abs().max().item() <= TOL
    # the references do change the prediction (the comparison is not vacuous)
    without = _ours(ours, latents, t, context, control, None, 1.0)
    assert (without - got).abs().max().item() > 1e-3


def test_merged_random_lora_matches(models):
    ref, mods, dit, vace, ours = models
    import copy

    from diffsynth.lora import GeneralLoRALoader  # noqa: F401 - bare package set up by load_modules

    dit = copy.deepcopy(dit)
    ours = copy.deepcopy(ours)
    g = torch.Generator().manual_seed(5)
    rank = 4
    lora = {}
    for name, module in dit.blocks.named_modules():
        if isinstance(module, torch.nn.Linear) and name.split(".", 1)[1] in {
            "self_attn.q", "self_attn.k", "self_attn.v", "self_attn.o",
            "cross_attn.q", "cross_attn.k", "cross_attn.v", "cross_attn.o", "ffn.0", "ffn.2",
        }:
            lora[f"pipe.dit.blocks.{name}.lora_A.default.weight"] = torch.randn(rank, module.in_features, generator=g) * 0.1
            lora[f"pipe.dit.blocks.{name}.lora_B.default.weight"] = torch.randn(module.out_features, rank, generator=g) * 0.1
    stripped = {k[len("pipe.dit."):]: v for k, v in lora.items()}
    GeneralLoRALoader().load(dit, stripped, alpha=1.0)
    assert load_official_lora(ours, lora) == len(lora) // 2
    merge_lora(ours)
    assert not any("lora" in n for n, _ in ours.named_parameters())

    latents, t, context, control, reference = _inputs(frames=4, history=2, refs=2, seed=3)
    expected = _assembled(mods, dit, vace, latents, t, context, control, reference, 1.0)
    got = _ours(ours, latents, t, context, control, reference, 1.0)
    assert (got - expected).abs().max().item() <= TOL
    model_fn = ref.load_model_fn()
    expected = _official(model_fn, dit, vace, latents, t, context, control, 1.0)
    got = _ours(ours, latents, t, context, control, None, 1.0)
    assert (got - expected).abs().max().item() <= TOL


def test_head_dim_128_rotary_split_matches():
    """The 5B model's head dim (128: rotary split 44/42/42), one block + one control block."""
    ref, mods, dit, vace, ours = _build(tiny_config(num_attention_heads=1, attention_head_dim=128,
                                                    num_layers=2, vace_layers=[0], ffn_dim=64))
    latents, t, context, control, reference = _inputs(frames=3, history=1, refs=2, seed=7)
    expected = _official(ref.load_model_fn(), dit, vace, latents, t, context, control, 1.0)
    assert (_ours(ours, latents, t, context, control, None, 1.0) - expected).abs().max().item() <= TOL
    expected = _assembled(mods, dit, vace, latents, t, context, control, reference, 1.0)
    assert (_ours(ours, latents, t, context, control, reference, 1.0) - expected).abs().max().item() <= TOL
