"""The umT5-XXL text encoder: ``models_t5_umt5-xxl-enc-bf16.pth`` -> transformers ``UMT5EncoderModel``.

The file holds DiffSynth's ``WanTextEncoder`` names (loaded unchanged by DiffSynth);
:func:`convert_umt5_state_dict` maps them to transformers' names for :func:`umt5_xxl_config`.
Verified numerically against DiffSynth on tiny models in ``test/core/test_spatia_convert_base.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from .state_dicts import check_renamed, load_on_meta, read_torch_file, rename_all, unwrap

__all__ = [
    "T5_FILE",
    "build_umt5_encoder",
    "convert_umt5_file",
    "convert_umt5_state_dict",
    "umt5_expected_shapes",
    "umt5_key",
    "umt5_xxl_config",
]

T5_FILE = "models_t5_umt5-xxl-enc-bf16.pth"


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


def build_umt5_encoder(config: Mapping[str, Any] | None = None, device: str = "cpu"):
    """A ``UMT5EncoderModel`` of ``config`` (default :func:`umt5_xxl_config`) on ``device``."""
    import torch
    from transformers import UMT5Config, UMT5EncoderModel

    with torch.device(device):
        return UMT5EncoderModel(UMT5Config(**dict(config or umt5_xxl_config())))


def umt5_expected_shapes(config: Mapping[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the transformers umT5 encoder of ``config`` (built on ``meta``)."""
    return {k: tuple(t.shape) for k, t in build_umt5_encoder(config, "meta").state_dict().items()}


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
    src = unwrap(state_dict, "model.", what)
    out, unknown = rename_all(src, umt5_key)
    return check_renamed(out, unknown, src, expected, what, "the umT5 encoder")


def convert_umt5_file(path: Path | str, config: Mapping[str, Any] | None = None, dtype: Any = None):
    """Read ``models_t5_umt5-xxl-enc-bf16.pth`` and return a transformers ``UMT5EncoderModel``
    (in ``dtype``; default: the file's dtype)."""
    config = dict(config or umt5_xxl_config())
    what = f"text encoder file {path}"
    state = convert_umt5_state_dict(read_torch_file(path), umt5_expected_shapes(config), what)
    if dtype is not None:
        cast: dict[int, Any] = {}  # keep tied names sharing one tensor
        state = {k: cast.setdefault(id(v), v.to(dtype)) for k, v in state.items()}
    return load_on_meta(build_umt5_encoder(config, "meta"), state, what)
