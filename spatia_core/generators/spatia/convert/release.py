"""``spatia convert``: the official release files -> our checkpoint folder (:mod:`..checkpoint`)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from spatia_core.errors import FileFormatError

from .dit import convert_release_transformer
from .umt5 import T5_FILE, convert_umt5_file, umt5_xxl_config
from .vae import VAE_FILE, convert_wan22_vae_file, wan22_vae_config

__all__ = ["add_arguments", "run"]

log = logging.getLogger(__name__)


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

    from ..checkpoint import default_scheduler, save_checkpoint
    from ..lora import load_official_lora, merge_lora

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
    parts.update(transformer=transformer, scheduler=default_scheduler())  # an unmerged LoRA goes to lora/
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
