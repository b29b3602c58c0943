"""Tiny random components of the Spatia backend, for tests and smoke runs (nothing is downloaded).

:func:`tiny_components` builds a complete, randomly initialised set with the real model's
geometry: a Wan2.2-style VAE (residual blocks, 2x2 pixel patchify, so time is compressed by 4 and
space by 16, exactly like the released 48-channel VAE), a tiny Spatia transformer (the transformer
module's :func:`tiny_config`, 2x2 latent patches, control input = 2 x VAE channels), a tiny UMT5
text encoder and an offline word-level tokenizer. :func:`save_tiny_checkpoint` writes the set in
the checkpoint layout of :mod:`.checkpoint`, so loaders and the world loop can be exercised end
to end on a CPU in seconds.
"""

from __future__ import annotations

from pathlib import Path

import torch

TINY_Z_DIM = 16  # VAE latent channels of the tiny set (the real Wan2.2 VAE has 48)
TINY_TEXT_DIM = 32  # hidden size of the tiny text encoder (the real UMT5-XXL has 4096)
TINY_MAX_SEQUENCE_LENGTH = 32  # prompt tokens (the release uses 512)

# A small English vocabulary for the offline tokenizer; unknown words map to <unk>.
_WORDS = (
    "a an the of in on at to and with from into through over under near by is are this that "
    "room kitchen living bedroom office hallway corridor street house building garden park city "
    "table chair sofa bed door window wall floor ceiling lamp light plant tree car road sky "
    "camera moves forward backward left right up down slowly quickly turns walks around looks "
    "bright dark sunny cloudy warm cold wooden white black red green blue yellow grey brown "
    "modern old small large big empty clean cozy realistic photo video scene view indoor outdoor"
).split()


def tiny_tokenizer():
    """A word-level ``PreTrainedTokenizerFast`` built offline (<pad>=0, </s>=1, <unk>=2; appends </s>)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for w in _WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
        model_max_length=TINY_MAX_SEQUENCE_LENGTH,
    )


def tiny_vae(seed: int = 0, z_dim: int = TINY_Z_DIM):
    """A tiny Wan2.2-style ``AutoencoderKLWan`` (temporal x4, spatial x16) with random weights and
    random per-channel latent statistics (so the pipeline's normalisation is exercised)."""
    from diffusers import AutoencoderKLWan

    g = torch.Generator().manual_seed(seed + 1)
    mean = (0.1 * torch.randn(z_dim, generator=g)).tolist()
    std = (1.0 + 0.2 * torch.rand(z_dim, generator=g)).tolist()
    torch.manual_seed(seed + 2)
    return AutoencoderKLWan(
        base_dim=8, decoder_base_dim=8, z_dim=z_dim, dim_mult=[1, 2, 2, 2], num_res_blocks=1, attn_scales=[],
        temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
        scale_factor_temporal=4, scale_factor_spatial=16, latents_mean=mean, latents_std=std,
    ).eval()


def tiny_text_encoder(seed: int = 0, vocab_size: int = 256, d_model: int = TINY_TEXT_DIM):
    """A tiny random ``UMT5EncoderModel`` (2 layers)."""
    from transformers import UMT5Config, UMT5EncoderModel

    cfg = UMT5Config(
        vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=16, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )
    torch.manual_seed(seed + 3)
    return UMT5EncoderModel(cfg).eval()


def tiny_transformer(seed: int = 0, z_dim: int = TINY_Z_DIM, text_dim: int = TINY_TEXT_DIM, **overrides):
    """A tiny random :class:`SpatiaTransformer3DModel` matching the tiny VAE and text encoder."""
    from .transformer import SpatiaTransformer3DModel, tiny_config

    cfg = tiny_config(in_channels=z_dim, out_channels=z_dim, vace_in_channels=2 * z_dim, text_dim=text_dim, **overrides)
    torch.manual_seed(seed + 4)
    model = SpatiaTransformer3DModel(**cfg).eval()
    # diffusers zero-initialises some projections; random weights everywhere make outputs depend on inputs
    g = torch.Generator().manual_seed(seed + 5)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2 and not p.abs().any():
                p.copy_(0.02 * torch.randn(p.shape, generator=g))
    return model


def tiny_scheduler(shift: float = 5.0):
    """The release's sampler (Wan's FlowUniPC) with ``shift``."""
    from .scheduler import release_scheduler

    return release_scheduler(shift)


def tiny_components(seed: int = 0, z_dim: int = TINY_Z_DIM, text_dim: int = TINY_TEXT_DIM, **transformer_overrides) -> dict:
    """A complete tiny random component set: ``transformer``, ``vae``, ``text_encoder``, ``tokenizer``,
    ``scheduler`` (the keys :class:`~.pipeline.SpatiaPipeline` takes). Same seed, same weights."""
    tokenizer = tiny_tokenizer()
    return {
        "transformer": tiny_transformer(seed, z_dim=z_dim, text_dim=text_dim, **transformer_overrides),
        "vae": tiny_vae(seed, z_dim=z_dim),
        "text_encoder": tiny_text_encoder(seed, vocab_size=max(256, len(tokenizer)), d_model=text_dim),
        "tokenizer": tokenizer,
        "scheduler": tiny_scheduler(),
    }


def tiny_metadata() -> dict:
    """``spatia.json`` content of a tiny checkpoint: sampling defaults sized for the tiny models."""
    return {"tiny": True, "sampling": {"max_sequence_length": TINY_MAX_SEQUENCE_LENGTH}}


def save_tiny_checkpoint(path: str | Path, seed: int = 0, **transformer_overrides) -> Path:
    """Write a tiny random checkpoint folder at ``path`` (our layout) and return its path."""
    from .checkpoint import save_checkpoint

    c = tiny_components(seed, **transformer_overrides)
    save_checkpoint(path, transformer=c["transformer"], vae=c["vae"], text_encoder=c["text_encoder"],
                    tokenizer=c["tokenizer"], scheduler=c["scheduler"], metadata=tiny_metadata())
    return Path(path)
