"""The Wan2.2 VAE: ``Wan2.2_VAE.pth`` (original Wan names) -> diffusers ``AutoencoderKLWan``.

DiffSynth loads the original names unchanged into its ``VideoVAE38_`` (under a ``model.`` prefix);
:func:`convert_wan22_vae_state_dict` maps them to diffusers' names for :func:`wan22_vae_config`.
Verified numerically against DiffSynth on tiny models in ``test/core/test_spatia_convert_base.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from spatia_core.errors import FileFormatError

from .state_dicts import check_renamed, load_on_meta, read_torch_file, rename_all, unwrap

__all__ = [
    "VAE_FILE",
    "build_wan22_vae",
    "convert_wan22_vae_file",
    "convert_wan22_vae_state_dict",
    "wan22_vae_config",
    "wan22_vae_expected_shapes",
    "wan22_vae_key",
]

VAE_FILE = "Wan2.2_VAE.pth"


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


def build_wan22_vae(config: Mapping[str, Any] | None = None, device: str = "cpu"):
    """An ``AutoencoderKLWan`` of ``config`` (default :func:`wan22_vae_config`) on ``device``."""
    import torch
    from diffusers import AutoencoderKLWan

    with torch.device(device):
        return AutoencoderKLWan(**dict(config or wan22_vae_config()))


def wan22_vae_expected_shapes(config: Mapping[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the diffusers VAE of ``config`` (built on ``meta``: no memory)."""
    return {k: tuple(t.shape) for k, t in build_wan22_vae(config, "meta").state_dict().items()}


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
    src = unwrap(state_dict, "model.", what)
    out, unknown = rename_all(src, wan22_vae_key)
    return check_renamed(out, unknown, src, expected, what, "the Wan2.2 VAE")


def convert_wan22_vae_file(path: Path | str, config: Mapping[str, Any] | None = None):
    """Read ``Wan2.2_VAE.pth`` and return a float32 diffusers ``AutoencoderKLWan``."""
    import torch

    config = dict(config or wan22_vae_config())
    what = f"VAE file {path}"
    state = convert_wan22_vae_state_dict(read_torch_file(path), wan22_vae_expected_shapes(config), what)
    state = {k: v.to(torch.float32) for k, v in state.items()}
    return load_on_meta(build_wan22_vae(config, "meta"), state, what)
