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

VAE and text encoder: the original-format ``.pth`` files of Wan2.2 cannot be checked here (no
copy of them and no reference loader for the Wan2.2 VAE in diffusers 0.42), so the converter does
not rename them; it takes already-diffusers/transformers-format folders (``--vae``,
``--text-encoder``, ``--tokenizer``, e.g. from ``Wan-AI/Wan2.2-TI2V-5B-Diffusers``) and copies them
into the checkpoint after loading them once (which validates them).
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
    "check_state_dict",
    "convert_diffsynth_state_dict",
    "diffsynth_to_diffusers_key",
    "diffusers_to_diffsynth_key",
    "expected_shapes",
    "read_safetensors",
    "run",
]

log = logging.getLogger(__name__)

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

    from .transformer import SpatiaTransformer3DModel

    with torch.device("meta"):
        model = SpatiaTransformer3DModel(**config)
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def _listing(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return f"{len(names)} ({shown}{', ...' if len(names) > limit else ''})"


def check_state_dict(
    state_dict: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]], what: str = "state dict"
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
        raise FileFormatError(f"{what} does not match the Spatia transformer: " + "; ".join(problems))


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
    parser.add_argument("--vae", type=Path, default=None, help="diffusers AutoencoderKLWan folder")
    parser.add_argument("--text-encoder", type=Path, default=None, help="transformers UMT5EncoderModel folder")
    parser.add_argument("--tokenizer", type=Path, default=None, help="umT5 tokenizer folder")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--config", type=Path, default=None, help="transformer config JSON (default: the 5B model)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output checkpoint folder (must not exist)")


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
    config = None
    if args.config is not None:
        try:
            config = json.loads(Path(args.config).read_text())
        except (OSError, ValueError) as exc:
            raise FileFormatError(f"cannot read transformer config {args.config}: {exc}") from exc
    transformer = convert_release_transformer(args.base, args.control, config)
    if args.lora is not None:
        load_official_lora(transformer, args.lora)
        if args.merge_lora:
            merge_lora(transformer)
    transformer = transformer.to(dtype)
    parts: dict[str, Any] = {"transformer": transformer, "scheduler": default_scheduler()}
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

        parts["tokenizer"] = AutoTokenizer.from_pretrained(args.tokenizer)
    save_checkpoint(args.out, **parts)
    log.info("wrote %s", args.out)
    print(f"wrote {args.out}")
    return 0
