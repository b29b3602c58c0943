"""The DiT + control blocks: DiffSynth ``WanModel`` / ``VaceWanModel`` names -> ours.

The release ships the Wan2.2-TI2V-5B base DiT as three shards (:data:`BASE_SHARDS`, ``WanModel``
names: ``blocks.N.self_attn.q.weight``, ``head.head.weight``, ...) and the control blocks as one
safetensors file (``vace_blocks.N.*``, ``vace_patch_embedding.*``; block 0 has ``before_proj``, every
block ``after_proj``). :func:`convert_diffsynth_state_dict` maps these names to diffusers' (those of
:class:`~..transformer.SpatiaTransformer3DModel`); the mapping is verified numerically against
DiffSynth in ``test/core/test_spatia_equivalence.py``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from spatia_core.errors import FileFormatError

from .state_dicts import check_renamed, listing, read_safetensors, rename_all

__all__ = [
    "BASE_SHARDS",
    "convert_diffsynth_state_dict",
    "convert_release_transformer",
    "diffsynth_to_diffusers_key",
    "diffusers_to_diffsynth_key",
    "expected_shapes",
]

BASE_SHARDS = tuple(f"diffusion_pytorch_model-0000{i}-of-00003.safetensors" for i in (1, 2, 3))


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

    from ..transformer import SpatiaTransformer3DModel

    with torch.device("meta"):
        model = SpatiaTransformer3DModel(**config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


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
    out, unknown = rename_all(state_dict, diffsynth_to_diffusers_key)
    return check_renamed(out, unknown, state_dict, expected, what, "the Spatia transformer")


def convert_release_transformer(
    base_dir: Path | str, control_file: Path | str, config: Mapping[str, Any] | None = None
):
    """Build a :class:`SpatiaTransformer3DModel` from the release's base shards + control file."""
    import torch

    from ..transformer import SPATIA_5B_CONFIG, SpatiaTransformer3DModel

    config = dict(config or SPATIA_5B_CONFIG)
    base_dir = Path(base_dir)
    if not base_dir.is_dir():
        raise FileFormatError(f"base model folder not found: {base_dir}")
    base = read_safetensors(base_dir / shard for shard in BASE_SHARDS)
    control = read_safetensors([control_file])
    clash = sorted(set(base) & set(control))
    if clash:
        raise FileFormatError(f"the control file repeats base tensors: {listing(clash)}")
    state = convert_diffsynth_state_dict({**base, **control}, expected_shapes(config), "release DiT + control")
    with torch.device("meta"):
        model = SpatiaTransformer3DModel(**config)
    model.load_state_dict(state, strict=True, assign=True)
    model.rope = type(model.rope)(config["attention_head_dim"], config["patch_size"], config["rope_max_seq_len"])
    return model
