"""Convert the official Spatia release into our checkpoint layout (``spatia convert``).

The release (DiffSynth-Studio 1.1.9 naming) ships:

* the Wan2.2-TI2V-5B base DiT: ``diffusion_pytorch_model-0000{1,2,3}-of-00003.safetensors``
  (``WanModel`` names: ``blocks.N.self_attn.q.weight``, ``head.head.weight``, ...);
* the control blocks: one safetensors file (``vace_blocks.N.*``, ``vace_patch_embedding.*``;
  block 0 has ``before_proj``, every block ``after_proj``);
* the LoRA: one safetensors file with ``pipe.dit.``-prefixed peft keys
  (``pipe.dit.blocks.N.self_attn.q.lora_A.default.weight``), see ``lora.py``;
* ``Wan2.2_VAE.pth`` and ``models_t5_umt5-xxl-enc-bf16.pth`` (original Wan repository names).

:func:`convert_diffsynth_state_dict` maps DiffSynth names to diffusers' (the names of
:class:`~.transformer.SpatiaTransformer3DModel`) and checks the result against the model's
expected names and shapes, raising one :class:`FileFormatError` that lists missing, unexpected and
mis-shaped tensors. The mapping is verified numerically against DiffSynth in
``test/core/test_spatia_equivalence.py``.

VAE and text encoder: :func:`convert_wan22_vae_state_dict` maps ``Wan2.2_VAE.pth`` (the original
Wan names, which DiffSynth loads unchanged into its ``VideoVAE38_`` under a ``model.`` prefix) to
diffusers' ``AutoencoderKLWan`` with :func:`wan22_vae_config`; :func:`convert_umt5_state_dict` maps
``models_t5_umt5-xxl-enc-bf16.pth`` (DiffSynth's ``WanTextEncoder`` names, loaded unchanged) to
transformers' ``UMT5EncoderModel`` with :func:`umt5_xxl_config`. Both are verified numerically
against DiffSynth on tiny models in ``test/core/test_spatia_convert_base.py``. Already-converted
folders (``--vae``, ``--text-encoder``) are still accepted. The tokenizer cannot be derived from
any release file: ``--tokenizer`` must be a local copy of ``google/umt5-xxl``'s tokenizer.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

from spatia_core.errors import FileFormatError

__all__ = [
    "BASE_SHARDS",
    "add_arguments",
    "T5_FILE",
    "VAE_FILE",
    "build_umt5_encoder",
    "build_wan22_vae",
    "check_state_dict",
    "convert_diffsynth_state_dict",
    "convert_umt5_state_dict",
    "convert_wan22_vae_state_dict",
    "diffsynth_to_diffusers_key",
    "diffusers_to_diffsynth_key",
    "expected_shapes",
    "read_safetensors",
    "read_torch_file",
    "run",
    "umt5_expected_shapes",
    "umt5_xxl_config",
    "wan22_vae_config",
    "wan22_vae_expected_shapes",
]

log = logging.getLogger(__name__)

BASE_SHARDS = tuple(f"diffusion_pytorch_model-0000{i}-of-00003.safetensors" for i in (1, 2, 3))
VAE_FILE = "Wan2.2_VAE.pth"
T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"

# Inside a main or control block: DiffSynth name prefix -> diffusers name prefix.
_BLOCK_RULES: list[tuple[str, str]] = [
    ("modulation", "scale_shift_table"),
    ("self_attn.q.", "attn1.to_q."),
    ("self_attn.k.", "attn1.to_k."),
    ("self_attn.v.", "attn1.to_v."),
    ("self_attn.o.", "attn1.to_out.0."),
    ("self_attn.norm_q.", "attn1.norm_q."),
    ("self_attn.norm_k.", "attn1.norm_k."),
    ("cross_attn.q.", "attn2.to_q."),
    ("cross_attn.k.", "attn2.to_k."),
    ("cross_attn.v.", "attn2.to_v."),
    ("cross_attn.o.", "attn2.to_out.0."),
    ("cross_attn.norm_q.", "attn2.norm_q."),
    ("cross_attn.norm_k.", "attn2.norm_k."),
    ("norm3.", "norm2."),  # DiffSynth's norm3 is the (affine) cross-attention norm
    ("ffn.0.", "ffn.net.0.proj."),
    ("ffn.2.", "ffn.net.2."),
    ("before_proj.", "proj_in."),
    ("after_proj.", "proj_out."),
]

# Outside the blocks.
_TOP_RULES: list[tuple[str, str]] = [
    ("text_embedding.0.", "condition_embedder.text_embedder.linear_1."),
    ("text_embedding.2.", "condition_embedder.text_embedder.linear_2."),
    ("time_embedding.0.", "condition_embedder.time_embedder.linear_1."),
    ("time_embedding.2.", "condition_embedder.time_embedder.linear_2."),
    ("time_projection.1.", "condition_embedder.time_proj."),
    ("head.head.", "proj_out."),
    ("head.modulation", "scale_shift_table"),
    ("patch_embedding.", "patch_embedding."),
    ("vace_patch_embedding.", "vace_patch_embedding."),
]

_BLOCK = re.compile(r"^(blocks|vace_blocks)\.(\d+)\.(.+)$")


def _rename(name: str, block_rules, top_rules) -> str | None:
    match = _BLOCK.match(name)
    if match:
        kind, index, rest = match.groups()
        for old, new in block_rules:
            if rest == old or (old.endswith(".") and rest.startswith(old)):
                return f"{kind}.{index}.{new}{rest[len(old):]}"
        return None
    for old, new in top_rules:
        if name == old or (old.endswith(".") and name.startswith(old)):
            return new + name[len(old) :]
    return None


def diffsynth_to_diffusers_key(name: str) -> str | None:
    """diffusers name of a DiffSynth ``WanModel`` / ``VaceWanModel`` tensor, ``None`` if unknown.

    A leading ``model.diffusion_model.`` / ``diffusion_model.`` / ``pipe.dit.`` / ``pipe.vace.``
    is ignored.
    """
    for prefix in ("model.diffusion_model.", "diffusion_model.", "pipe.dit.", "pipe.vace."):
        if name.startswith(prefix):
            name = name[len(prefix) :]
            break
    return _rename(name, _BLOCK_RULES, _TOP_RULES)


def diffusers_to_diffsynth_key(name: str) -> str | None:
    """The inverse of :func:`diffsynth_to_diffusers_key` (our name -> DiffSynth name)."""
    swap = lambda rules: [(new, old) for old, new in rules]  # noqa: E731
    return _rename(name, swap(_BLOCK_RULES), swap(_TOP_RULES))


def expected_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Names and shapes of :class:`SpatiaTransformer3DModel` ``(**config)`` (built on ``meta``)."""
    import torch

    from .transformer import SpatiaTransformer3DModel

    with torch.device("meta"):
        model = SpatiaTransformer3DModel(**config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{len(names)} ({shown}{', ...' if len(names) > limit else ''})"


def check_state_dict(
    state_dict: Mapping[str, Any],
    expected: Mapping[str, tuple[int, ...]],
    what: str = "state dict",
    target: str = "the Spatia transformer",
) -> None:
    """Raise one :class:`FileFormatError` listing missing, unexpected and mis-shaped tensors."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshaped = sorted(
        f"{k} {tuple(state_dict[k].shape)} != {tuple(expected[k])}"
        for k in set(state_dict) & set(expected)
        if tuple(state_dict[k].shape) != tuple(expected[k])
    )
    problems = []
    if missing:
        problems.append(f"missing {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {_listing(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped {_listing(misshaped)}")
    if problems:
        raise FileFormatError(f"{what} does not match {target}: " + "; ".join(problems))


def convert_diffsynth_state_dict(
    state_dict: Mapping[str, Any],
    expected: Mapping[str, tuple[int, ...]] | None = None,
    what: str = "DiffSynth state dict",
) -> dict[str, Any]:
    """Rename a DiffSynth-naming DiT + control state dict to our transformer's names.

    Args:
        state_dict: base ``WanModel`` tensors and ``VaceWanModel`` tensors (one merged mapping).
        expected: name -> shape of the target model (:func:`expected_shapes`); ``None`` skips the
            check (names are still required to be known).
        what: how errors name the input.

    Raises:
        FileFormatError: unknown names, or (with ``expected``) missing / unexpected / mis-shaped
            tensors, all listed in one message.
    """
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for name, tensor in state_dict.items():
        new = diffsynth_to_diffusers_key(name)
        if new is None:
            unknown.append(name)
        else:
            out[new] = tensor
    if expected is None:
        if unknown:
            raise FileFormatError(f"{what}: unexpected {_listing(sorted(unknown))}")
        return out
    checked = dict(out)
    checked.update({name: state_dict[name] for name in unknown})  # reported as unexpected
    check_state_dict(checked, expected, what)
    return out


# ----------------------------------------------------------------------------- base VAE and umT5
# Per-channel statistics of the Wan2.2 VAE latents (the released model's values; the same numbers
# are in DiffSynth's ``WanVideoVAE38`` and in the diffusers-format release config).
_WAN22_LATENTS_MEAN = [
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557, -0.1382, 0.0542, 0.2813, 0.0891,
    0.1570, -0.0098, 0.0375, -0.1825, -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230, -0.0313, -0.1649, 0.0117, 0.0723,
    -0.2839, -0.2083, -0.0520, 0.3748, 0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
]
_WAN22_LATENTS_STD = [
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013, 0.8158, 1.0344, 0.5894, 1.0901,
    0.6885, 0.6165, 0.8454, 0.4978, 0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093, 0.5709, 0.6065, 0.6415, 0.4944,
    0.5726, 1.2042, 0.5458, 1.6887, 0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
]


def wan22_vae_config(**overrides: Any) -> dict[str, Any]:
    """``AutoencoderKLWan`` keyword arguments of the released Wan2.2 VAE (48 latent channels,
    residual up/down blocks, 2x2 pixel patchify: time /4, space /16); ``overrides`` replace keys."""
    config: dict[str, Any] = {
        "base_dim": 160,
        "decoder_base_dim": 256,
        "z_dim": 48,
        "dim_mult": [1, 2, 4, 4],
        "num_res_blocks": 2,
        "attn_scales": [],
        "temperal_downsample": [False, True, True],
        "dropout": 0.0,
        "latents_mean": list(_WAN22_LATENTS_MEAN),
        "latents_std": list(_WAN22_LATENTS_STD),
        "is_residual": True,
        "in_channels": 12,
        "out_channels": 12,
        "patch_size": 2,
        "scale_factor_temporal": 4,
        "scale_factor_spatial": 16,
    }
    unknown = sorted(set(overrides) - set(config))
    if unknown:
        raise FileFormatError(f"unknown VAE config keys: {', '.join(unknown)}")
    config.update(overrides)
    return config


def umt5_xxl_config(**overrides: Any) -> dict[str, Any]:
    """``UMT5Config`` keyword arguments of the umT5-XXL encoder used by Wan2.2 (DiffSynth's
    ``WanTextEncoder`` defaults: vocab 256384, dim 4096, ffn 10240, 24 layers, 64 heads, 32 buckets,
    one relative position bias per layer, tanh-GELU gated feed-forward, max distance 128)."""
    config: dict[str, Any] = {
        "vocab_size": 256384,
        "d_model": 4096,
        "d_kv": 64,
        "d_ff": 10240,
        "num_layers": 24,
        "num_heads": 64,
        "relative_attention_num_buckets": 32,
        "relative_attention_max_distance": 128,
        "dropout_rate": 0.1,
        "layer_norm_epsilon": 1e-6,
        "feed_forward_proj": "gated-gelu",
        "pad_token_id": 0,
        "eos_token_id": 1,
        "decoder_start_token_id": 0,
        "tie_word_embeddings": False,
    }
    config.update(overrides)
    return config


def build_wan22_vae(config: Mapping[str, Any] | None = None, device: str = "cpu"):
    """An ``AutoencoderKLWan`` of ``config`` (default :func:`wan22_vae_config`) on ``device``."""
    import torch
    from diffusers import AutoencoderKLWan

    with torch.device(device):
        return AutoencoderKLWan(**dict(config or wan22_vae_config()))


def build_umt5_encoder(config: Mapping[str, Any] | None = None, device: str = "cpu"):
    """A ``UMT5EncoderModel`` of ``config`` (default :func:`umt5_xxl_config`) on ``device``."""
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device(device):
        return UMT5EncoderModel(UMT5Config(**dict(config or umt5_xxl_config())))


def wan22_vae_expected_shapes(config: Mapping[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the diffusers VAE of ``config`` (built on ``meta``: no memory)."""
    return {k: tuple(t.shape) for k, t in build_wan22_vae(config, "meta").state_dict().items()}


def umt5_expected_shapes(config: Mapping[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the transformers umT5 encoder of ``config`` (built on ``meta``)."""
    return {k: tuple(t.shape) for k, t in build_umt5_encoder(config, "meta").state_dict().items()}


def _unwrap(state_dict: Mapping[str, Any], prefix: str, what: str) -> dict[str, Any]:
    """Undo the wrappers seen around original Wan state dicts (``{"model_state": ...}``,
    ``{"state_dict": ...}``, a ``prefix`` on every name) and require tensors only."""
    import torch

    for wrapper in ("model_state", "state_dict"):
        if set(state_dict) == {wrapper} and isinstance(state_dict[wrapper], Mapping):
            state_dict = state_dict[wrapper]
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    bad = sorted(k for k, v in state_dict.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise FileFormatError(f"{what}: entries that are not tensors: {_listing(bad)}")
    if not state_dict:
        raise FileFormatError(f"{what} is empty")
    return dict(state_dict)


def _finish(out: dict[str, Any], unknown: list[str], src: Mapping[str, Any], expected, what: str, target: str):
    if expected is None:
        if unknown:
            raise FileFormatError(f"{what}: unexpected {_listing(sorted(unknown))}")
        return out
    checked = dict(out)
    checked.update({name: src[name] for name in unknown})  # reported as unexpected
    check_state_dict(checked, expected, what, target)
    return out


# umT5: DiffSynth WanTextEncoder names (inside ``blocks.N.``) -> transformers (inside ``encoder.block.N.``).
_UMT5_BLOCK_RULES: dict[str, str] = {
    "norm1.weight": "layer.0.layer_norm.weight",
    "attn.q.weight": "layer.0.SelfAttention.q.weight",
    "attn.k.weight": "layer.0.SelfAttention.k.weight",
    "attn.v.weight": "layer.0.SelfAttention.v.weight",
    "attn.o.weight": "layer.0.SelfAttention.o.weight",
    "pos_embedding.embedding.weight": "layer.0.SelfAttention.relative_attention_bias.weight",
    "norm2.weight": "layer.1.layer_norm.weight",
    "ffn.gate.0.weight": "layer.1.DenseReluDense.wi_0.weight",  # the GELU branch
    "ffn.fc1.weight": "layer.1.DenseReluDense.wi_1.weight",  # the linear branch
    "ffn.fc2.weight": "layer.1.DenseReluDense.wo.weight",
}
_UMT5_BLOCK = re.compile(r"^blocks\.(\d+)\.(.+)$")


def umt5_key(name: str) -> list[str] | None:
    """transformers names of one DiffSynth ``WanTextEncoder`` tensor (the token embedding feeds
    both tied names ``shared`` and ``encoder.embed_tokens``); ``None`` if unknown."""
    if name == "token_embedding.weight":
        return ["shared.weight", "encoder.embed_tokens.weight"]
    if name == "norm.weight":
        return ["encoder.final_layer_norm.weight"]
    match = _UMT5_BLOCK.match(name)
    if match and match.group(2) in _UMT5_BLOCK_RULES:
        return [f"encoder.block.{match.group(1)}.{_UMT5_BLOCK_RULES[match.group(2)]}"]
    return None


def _rename_all(src: Mapping[str, Any], key_fn) -> tuple[dict[str, Any], list[str]]:
    """Apply ``key_fn`` (name -> new name, several names, or ``None`` if unknown) to every tensor."""
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for name, tensor in src.items():
        new = key_fn(name)
        if new is None:
            unknown.append(name)
        else:
            out.update({n: tensor for n in ((new,) if isinstance(new, str) else new)})
    return out, unknown


def convert_umt5_state_dict(
    state_dict: Mapping[str, Any],
    expected: Mapping[str, tuple[int, ...]] | None = None,
    what: str = "umT5 state dict",
) -> dict[str, Any]:
    """Rename ``models_t5_umt5-xxl-enc-bf16.pth`` (DiffSynth ``WanTextEncoder`` names) to
    transformers' ``UMT5EncoderModel`` names.

    Args:
        state_dict: the file's tensors (a ``model.`` prefix or ``model_state`` wrapper is accepted).
        expected: name -> shape of the target (:func:`umt5_expected_shapes`); ``None`` only
            requires every name to be known.
        what: how errors name the input.

    Raises:
        FileFormatError: unknown, missing or mis-shaped tensors, listed in one message.
    """
    src = _unwrap(state_dict, "model.", what)
    out, unknown = _rename_all(src, umt5_key)
    return _finish(out, unknown, src, expected, what, "the umT5 encoder")


# Wan2.2 VAE: original / DiffSynth ``VideoVAE38_`` names -> diffusers ``AutoencoderKLWan`` names.
_VAE_RESNET_RULES: list[tuple[str, str]] = [
    ("residual.0.", "norm1."),
    ("residual.2.", "conv1."),
    ("residual.3.", "norm2."),
    ("residual.6.", "conv2."),
    ("shortcut.", "conv_shortcut."),
]
_VAE_COMMON_RULES: list[tuple[str, str]] = [
    ("conv1.", "conv_in."),
    ("head.0.", "norm_out."),
    ("head.2.", "conv_out."),
]
_VAE_MIDDLE = re.compile(r"^middle\.(\d)\.(.+)$")
_VAE_STAGE = re.compile(r"^(downsamples|upsamples)\.(\d+)\.(downsamples|upsamples)\.(\d+)\.(.+)$")


def _vae_resnet(rest: str) -> str | None:
    for old, new in _VAE_RESNET_RULES:
        if rest.startswith(old):
            return new + rest[len(old) :]
    return None


def _vae_coder_key(part: str, rest: str) -> str | None:
    """Rename a tensor inside ``encoder.`` / ``decoder.`` (``rest`` excludes that prefix)."""
    for old, new in _VAE_COMMON_RULES:
        if rest.startswith(old):
            return new + rest[len(old) :]
    match = _VAE_MIDDLE.match(rest)
    if match:
        index, inner = int(match.group(1)), match.group(2)
        if index == 1 and inner.split(".")[0] in ("norm", "to_qkv", "proj"):
            return f"mid_block.attentions.0.{inner}"
        if index in (0, 2):
            renamed = _vae_resnet(inner)
            return None if renamed is None else f"mid_block.resnets.{index // 2}.{renamed}"
        return None
    match = _VAE_STAGE.match(rest)
    if match:
        outer, stage, inner_kind, layer, inner = match.groups()
        expected_outer = "downsamples" if part == "encoder" else "upsamples"
        if outer != expected_outer or inner_kind != expected_outer:
            return None
        blocks = "down_blocks" if part == "encoder" else "up_blocks"
        sampler = "downsampler" if part == "encoder" else "upsampler"
        if inner.startswith(("resample.", "time_conv.")):
            return f"{blocks}.{stage}.{sampler}.{inner}"
        renamed = _vae_resnet(inner)
        return None if renamed is None else f"{blocks}.{stage}.resnets.{layer}.{renamed}"
    return None


def wan22_vae_key(name: str) -> str | None:
    """diffusers name of one original Wan2.2 VAE tensor, ``None`` if unknown."""
    if name.startswith("conv1."):
        return "quant_conv." + name[len("conv1.") :]
    if name.startswith("conv2."):
        return "post_quant_conv." + name[len("conv2.") :]
    for part in ("encoder", "decoder"):
        if name.startswith(part + "."):
            renamed = _vae_coder_key(part, name[len(part) + 1 :])
            return None if renamed is None else f"{part}.{renamed}"
    return None


def convert_wan22_vae_state_dict(
    state_dict: Mapping[str, Any],
    expected: Mapping[str, tuple[int, ...]] | None = None,
    what: str = "Wan2.2 VAE state dict",
) -> dict[str, Any]:
    """Rename ``Wan2.2_VAE.pth`` (original Wan / DiffSynth ``VideoVAE38_`` names) to diffusers'
    ``AutoencoderKLWan`` names (encoder ``conv1`` -> ``conv_in``, ``downsamples.i.downsamples.j`` ->
    ``down_blocks.i.resnets.j`` / ``.downsampler``, ``middle.0/1/2`` -> ``mid_block.resnets.0`` /
    ``attentions.0`` / ``resnets.1``, ``head.0/2`` -> ``norm_out`` / ``conv_out``, residual
    ``residual.0/2/3/6`` -> ``norm1/conv1/norm2/conv2``, ``shortcut`` -> ``conv_shortcut``; top
    ``conv1/conv2`` -> ``quant_conv/post_quant_conv``; the decoder likewise with ``up_blocks``).

    Args:
        state_dict: the file's tensors (a ``model.`` prefix or ``model_state`` wrapper is accepted).
        expected: name -> shape of the target (:func:`wan22_vae_expected_shapes`); ``None`` only
            requires every name to be known.
        what: how errors name the input.

    Raises:
        FileFormatError: unknown, missing or mis-shaped tensors, listed in one message.
    """
    src = _unwrap(state_dict, "model.", what)
    out, unknown = _rename_all(src, wan22_vae_key)
    return _finish(out, unknown, src, expected, what, "the Wan2.2 VAE")


def _load_on_meta(model, state: Mapping[str, Any], what: str):
    """Load ``state`` into a ``meta``-device ``model`` (no second copy of the weights)."""
    model.load_state_dict(dict(state), strict=True, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise FileFormatError(f"{what}: tensors left unset: {_listing(left)}")
    return model.eval()


def convert_wan22_vae_file(path: Path | str, config: Mapping[str, Any] | None = None):
    """Read ``Wan2.2_VAE.pth`` and return a float32 diffusers ``AutoencoderKLWan``."""
    import torch

    config = dict(config or wan22_vae_config())
    what = f"VAE file {path}"
    state = convert_wan22_vae_state_dict(read_torch_file(path), wan22_vae_expected_shapes(config), what)
    state = {k: v.to(torch.float32) for k, v in state.items()}
    return _load_on_meta(build_wan22_vae(config, "meta"), state, what)


def convert_umt5_file(path: Path | str, config: Mapping[str, Any] | None = None, dtype: Any = None):
    """Read ``models_t5_umt5-xxl-enc-bf16.pth`` and return a transformers ``UMT5EncoderModel``
    (in ``dtype``; default: the file's dtype)."""
    config = dict(config or umt5_xxl_config())
    what = f"text encoder file {path}"
    state = convert_umt5_state_dict(read_torch_file(path), umt5_expected_shapes(config), what)
    if dtype is not None:
        cast: dict[int, Any] = {}  # keep tied names sharing one tensor
        state = {k: cast.setdefault(id(v), v.to(dtype)) for k, v in state.items()}
    return _load_on_meta(build_umt5_encoder(config, "meta"), state, what)


# ----------------------------------------------------------------------------- file reading
def read_safetensors(paths: Iterable[Path | str]) -> dict[str, Any]:
    """Read and merge safetensors files; a missing, corrupt or duplicate-key file is an error."""
    from safetensors.torch import load_file

    merged: dict[str, Any] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise FileFormatError(f"missing file: {path}")
        try:
            tensors = load_file(str(path))
        except Exception as exc:  # safetensors raises several error types
            raise FileFormatError(f"cannot read {path} as safetensors: {exc}") from exc
        dup = sorted(set(tensors) & set(merged))
        if dup:
            raise FileFormatError(f"{path} repeats tensors of earlier files: {_listing(dup)}")
        merged.update(tensors)
    return merged


def read_torch_file(path: Path | str) -> dict[str, Any]:
    """Read an original Wan ``.pth`` state dict with ``torch.load(weights_only=True)``."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"missing file: {path}")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise FileFormatError(f"cannot read {path} as a torch state dict: {exc}") from exc
    if not isinstance(data, dict):
        raise FileFormatError(f"{path} does not hold a state dict")
    return data


def convert_release_transformer(
    base_dir: Path | str, control_file: Path | str, config: Mapping[str, Any] | None = None
):
    """Build a :class:`SpatiaTransformer3DModel` from the release's base shards + control file."""
    import torch

    from .transformer import SPATIA_5B_CONFIG, SpatiaTransformer3DModel

    config = dict(config or SPATIA_5B_CONFIG)
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        raise FileFormatError(f"base model folder not found: {base_dir}")
    base = read_safetensors(base_dir / shard for shard in BASE_SHARDS)
    control = read_safetensors([control_file])
    clash = sorted(set(base) & set(control))
    if clash:
        raise FileFormatError(f"the control file repeats base tensors: {_listing(clash)}")
    state = convert_diffsynth_state_dict({**base, **control}, expected_shapes(config), "release DiT + control")
    with torch.device("meta"):
        model = SpatiaTransformer3DModel(**config)
    model.load_state_dict(state, strict=True, assign=True)
    model.rope = type(model.rope)(config["attention_head_dim"], config["patch_size"], config["rope_max_seq_len"])
    return model


# ----------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``spatia convert``: official release files -> our checkpoint folder."""
    parser.add_argument("--base", required=True, type=Path, help="folder with the Wan2.2-TI2V-5B DiT shards")
    parser.add_argument("--control", required=True, type=Path, help="control-block safetensors (DiffSynth names)")
    parser.add_argument("--lora", type=Path, default=None, help="LoRA safetensors with pipe.dit. keys")
    parser.add_argument("--merge-lora", action="store_true", help="merge the LoRA into the weights")
    parser.add_argument(
        "--vae-pth", type=Path, default=None,
        help=f"original Wan2.2 VAE file (default: {VAE_FILE} in --base when present)",
    )
    parser.add_argument(
        "--t5-pth", type=Path, default=None,
        help=f"original umT5-XXL encoder file (default: {T5_FILE} in --base when present)",
    )
    parser.add_argument("--vae", type=Path, default=None, help="already-converted diffusers AutoencoderKLWan folder")
    parser.add_argument(
        "--text-encoder", type=Path, default=None, help="already-converted transformers UMT5EncoderModel folder"
    )
    parser.add_argument(
        "--tokenizer", type=Path, default=None,
        help="LOCAL copy of the google/umt5-xxl tokenizer folder (no release file holds it; nothing is downloaded)",
    )
    parser.add_argument("--vae-config", type=Path, default=None, help="AutoencoderKLWan config JSON (default: Wan2.2)")
    parser.add_argument("--t5-config", type=Path, default=None, help="UMT5Config JSON (default: umT5-XXL)")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--config", type=Path, default=None, help="transformer config JSON (default: the 5B model)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output checkpoint folder (must not exist)")


def _read_json(path: Path | None, what: str) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise FileFormatError(f"{what} {path} is not a JSON object")
    return data


def _base_file_choices(args: argparse.Namespace) -> tuple[Path | None, Path | None]:
    """The VAE / umT5 ``.pth`` files to convert: given explicitly, or found in ``--base``."""
    chosen = []
    for pth, folder, name, pth_flag, folder_flag in (
        (args.vae_pth, args.vae, VAE_FILE, "--vae-pth", "--vae"),
        (args.t5_pth, args.text_encoder, T5_FILE, "--t5-pth", "--text-encoder"),
    ):
        if pth is not None and folder is not None:
            raise FileFormatError(f"give {pth_flag} or {folder_flag}, not both")
        if pth is None and folder is None and args.base is not None and (Path(args.base) / name).is_file():
            pth = Path(args.base) / name
        if pth is not None and not Path(pth).is_file():
            raise FileFormatError(f"missing file: {pth}")
        chosen.append(pth)
    return chosen[0], chosen[1]


def run(args: argparse.Namespace) -> int:
    """Convert and write the checkpoint; returns the exit status."""
    import torch

    from .checkpoint import default_scheduler, save_checkpoint
    from .lora import load_official_lora, merge_lora

    if args.merge_lora and args.lora is None:
        raise FileFormatError("--merge-lora needs --lora")
    if args.out.exists():
        raise FileFormatError(f"output folder already exists: {args.out}")
    dtype = getattr(torch, args.dtype)
    config = _read_json(args.config, "transformer config")
    vae_pth, t5_pth = _base_file_choices(args)
    if args.tokenizer is not None and not Path(args.tokenizer).is_dir():
        raise FileFormatError(
            f"tokenizer folder not found: {args.tokenizer} (it must be a local copy of google/umt5-xxl's "
            "tokenizer; nothing is downloaded)"
        )
    parts: dict[str, Any] = {}
    # The base VAE / text encoder first: a bad file fails before the long DiT conversion.
    if vae_pth is not None:
        vae_config = _read_json(args.vae_config, "VAE config") or wan22_vae_config()
        parts["vae"] = convert_wan22_vae_file(vae_pth, vae_config)
    if t5_pth is not None:
        t5_config = _read_json(args.t5_config, "text encoder config") or umt5_xxl_config()
        parts["text_encoder"] = convert_umt5_file(t5_pth, t5_config, dtype)
    transformer = convert_release_transformer(args.base, args.control, config)
    if args.lora is not None:
        load_official_lora(transformer, args.lora)
        if args.merge_lora:
            merge_lora(transformer)
    transformer = transformer.to(dtype)
    parts.update(transformer=transformer, scheduler=default_scheduler())
    if args.lora is not None and not args.merge_lora:
        parts["lora_from"] = transformer  # kept as a separate peft adapter in lora/
    if args.vae is not None:
        from diffusers import AutoencoderKLWan

        parts["vae"] = AutoencoderKLWan.from_pretrained(args.vae)
    if args.text_encoder is not None:
        from transformers import UMT5EncoderModel

        parts["text_encoder"] = UMT5EncoderModel.from_pretrained(args.text_encoder)
    if args.tokenizer is not None:
        from transformers import AutoTokenizer

        try:
            parts["tokenizer"] = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
        except (OSError, ValueError) as exc:
            raise FileFormatError(
                f"cannot load the tokenizer from {args.tokenizer} (a local copy of google/umt5-xxl's tokenizer "
                f"is needed): {exc}"
            ) from exc
    elif "text_encoder" in parts:
        log.warning("no --tokenizer: the checkpoint has a text encoder but no tokenizer (add google/umt5-xxl's)")
    save_checkpoint(args.out, **parts)
    log.info("wrote %s", args.out)
    print(f"wrote {args.out}")
    return 0
