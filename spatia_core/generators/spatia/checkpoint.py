"""Our Spatia checkpoint layout: one local folder, safetensors weights only.

::

    ckpt/
      spatia.json       our metadata: format version + sampling defaults
      transformer/      SpatiaTransformer3DModel   (config.json + *.safetensors)
      vae/              diffusers AutoencoderKLWan
      text_encoder/     transformers UMT5EncoderModel
      tokenizer/        umT5 tokenizer
      scheduler/        SpatiaFlowUniPCScheduler (the release's FlowUniPC: flow sigmas from 0.999, shift 5)
      lora/             optional peft adapter (adapter_config.json + adapter_model.safetensors)

Writing is atomic: everything goes to a hidden sibling folder that is renamed into place at the
end, so a crash never leaves a half-written checkpoint and never destroys an existing one.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Iterable, Mapping

from spatia_core.errors import BackendUnavailableError, FileFormatError

__all__ = [
    "COMPONENTS",
    "DEFAULT_METADATA",
    "FORMAT_VERSION",
    "default_scheduler",
    "load_checkpoint",
    "read_metadata",
    "save_checkpoint",
]

FORMAT_VERSION = 1
METADATA_FILE = "spatia.json"
COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler", "lora")

#: Official sampling defaults of the Spatia release.
DEFAULT_METADATA: dict[str, Any] = {
    "format": "spatia_ros checkpoint",
    "format_version": FORMAT_VERSION,
    "sampling": {
        "steps": 40,
        "guidance_scale": 3.5,
        "shift": 5.0,
        "history_frames": 9,
        "first_clip_frames": 121,
        "later_clip_frames": 81,
        "fps": 24,
        "width": 1248,
        "height": 704,
    },
}


def default_scheduler():
    """The release's sampler: Wan's FlowUniPC (UniPC bh2 on flow sigmas from 0.999, shift 5)."""
    from .scheduler import release_scheduler

    return release_scheduler(5.0)


def _merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _merge(out[key], value) if isinstance(value, Mapping) and isinstance(out.get(key), Mapping) else value
    return out


def _has_adapter(model: Any) -> bool:
    return bool(getattr(model, "peft_config", None))


def _save_transformer(transformer: Any, folder: Path) -> None:
    """``save_pretrained``; with an unmerged peft adapter, the base weights only."""
    if not _has_adapter(transformer):
        transformer.save_pretrained(folder, safe_serialization=True)
        return
    from safetensors.torch import save_file

    folder.mkdir(parents=True)
    transformer.save_config(folder)
    state = {
        k.replace(".base_layer.", "."): v.detach().contiguous()
        for k, v in transformer.state_dict().items()
        if ".lora_" not in k
    }
    save_file(state, str(folder / "diffusion_pytorch_model.safetensors"), metadata={"format": "pt"})


def _save_lora(model: Any, folder: Path, adapter_name: str = "default") -> None:
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import save_file

    if not _has_adapter(model) or adapter_name not in model.peft_config:
        raise FileFormatError(f"no peft adapter {adapter_name!r} to save")
    folder.mkdir(parents=True)
    config = model.peft_config[adapter_name].to_dict()
    config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
    (folder / "adapter_config.json").write_text(json.dumps(config, indent=2, default=str))
    weights = {k: v.detach().contiguous() for k, v in get_peft_model_state_dict(model, adapter_name=adapter_name).items()}
    save_file(weights, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})


def save_checkpoint(
    path: str | Path,
    *,
    transformer: Any = None,
    vae: Any = None,
    text_encoder: Any = None,
    tokenizer: Any = None,
    scheduler: Any = None,
    metadata: Mapping[str, Any] | None = None,
    lora_from: Any = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint folder atomically; returns its path.

    Args:
        path: the checkpoint folder to create.
        transformer, vae, text_encoder, tokenizer, scheduler: components to write (any may be
            ``None``). A transformer carrying an unmerged peft adapter is written as its base
            weights in ``transformer/`` plus the adapter in ``lora/``.
        metadata: merged over :data:`DEFAULT_METADATA` into ``spatia.json``.
        lora_from: a model carrying the peft adapter to write to ``lora/`` (default: the
            transformer, when it has one).
        overwrite: replace an existing checkpoint (it is kept until the new one is in place).

    Raises:
        FileFormatError: ``path`` exists (without ``overwrite``) or is not a folder.
    """
    path = Path(path)
    if lora_from is None and transformer is not None and _has_adapter(transformer):
        lora_from = transformer
    if path.exists() and not overwrite:
        raise FileFormatError(f"checkpoint folder already exists: {path}")
    if path.exists() and not path.is_dir():
        raise FileFormatError(f"not a folder: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        if transformer is not None:
            _save_transformer(transformer, tmp / "transformer")
        if vae is not None:
            vae.save_pretrained(tmp / "vae", safe_serialization=True)
        if text_encoder is not None:
            text_encoder.save_pretrained(tmp / "text_encoder", safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp / "tokenizer")
        if scheduler is not None:
            scheduler.save_pretrained(tmp / "scheduler")
        if lora_from is not None:
            _save_lora(lora_from, tmp / "lora")
        meta = _merge(DEFAULT_METADATA, metadata or {})
        meta["format_version"] = FORMAT_VERSION
        meta["components"] = sorted(p.name for p in tmp.iterdir() if p.is_dir())
        (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
        if path.exists():
            old = path.parent / f".{path.name}.old-{uuid.uuid4().hex[:8]}"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """``spatia.json`` of a checkpoint folder.

    Raises:
        FileFormatError: missing folder / file, invalid JSON, or an unsupported format version.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileFormatError(f"checkpoint folder not found: {path}")
    file = path / METADATA_FILE
    if not file.is_file():
        raise FileFormatError(f"{path} is not a Spatia checkpoint (no {METADATA_FILE})")
    try:
        meta = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"cannot read {file}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise FileFormatError(
            f"{file}: unsupported format version {meta.get('format_version') if isinstance(meta, dict) else None!r} "
            f"(this code reads {FORMAT_VERSION})"
        )
    return meta


def _load_lora(transformer: Any, folder: Path) -> None:
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    config = json.loads((folder / "adapter_config.json").read_text())
    allowed = set(LoraConfig.__dataclass_fields__)
    lora_config = LoraConfig(**{k: v for k, v in config.items() if k in allowed and k not in ("peft_type", "task_type")})
    transformer.add_adapter(lora_config, adapter_name="default")
    result = set_peft_model_state_dict(transformer, load_file(str(folder / "adapter_model.safetensors")))
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise FileFormatError(f"{folder}: adapter weights not used: {unexpected[:5]}")


def load_checkpoint(
    path: str | Path,
    components: Iterable[str] = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"),
    device: str = "cpu",
    dtype: Any = None,
) -> dict[str, Any]:
    """Load components of a checkpoint folder; returns ``{name: object, "metadata": dict}``.

    ``"lora"`` loads ``lora/`` as a peft adapter onto the transformer (so it needs
    ``"transformer"`` too); it is skipped silently when the checkpoint has no ``lora/``.
    Models are put on ``device`` in ``dtype`` (default float32).

    Raises:
        FileFormatError: missing folder or component, or a corrupt / non-safetensors file.
        BackendUnavailableError: diffusers / transformers / peft not installed.
    """
    import torch

    dtype = torch.float32 if dtype is None else dtype
    path = Path(path)
    meta = read_metadata(path)
    components = list(components)
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown:
        raise FileFormatError(f"unknown checkpoint components {unknown}; known: {list(COMPONENTS)}")
    if "lora" in components and "transformer" not in components:
        raise FileFormatError("loading 'lora' needs 'transformer' too")
    out: dict[str, Any] = {"metadata": meta}
    for name in components:
        folder = path / name
        if not folder.is_dir():
            if name == "lora":
                continue
            raise FileFormatError(f"checkpoint {path} has no {name}/ (it has: {meta.get('components')})")
        try:
            out[name] = _load_component(name, folder, out, device, dtype)
        except (FileFormatError, BackendUnavailableError):
            raise
        except ImportError as exc:
            raise BackendUnavailableError(f"loading {name} needs {exc.name or exc}") from exc
        except Exception as exc:  # corrupt / incomplete files surface as many error types
            raise FileFormatError(f"cannot load {name} from {folder}: {type(exc).__name__}: {exc}") from exc
    return out


def _load_component(name: str, folder: Path, loaded: dict[str, Any], device: str, dtype: Any) -> Any:
    if name == "transformer":
        from .transformer import SpatiaTransformer3DModel

        return SpatiaTransformer3DModel.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True).to(device)
    if name == "vae":
        from diffusers import AutoencoderKLWan

        return AutoencoderKLWan.from_pretrained(folder, torch_dtype=dtype, use_safetensors=True).to(device)
    if name == "text_encoder":
        from transformers import UMT5EncoderModel

        return UMT5EncoderModel.from_pretrained(folder, dtype=dtype, use_safetensors=True).to(device)
    if name == "tokenizer":
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(folder)
    if name == "scheduler":
        from .scheduler import SpatiaFlowUniPCScheduler

        return SpatiaFlowUniPCScheduler.from_pretrained(folder)
    if name == "lora":
        _load_lora(loaded["transformer"], folder)
        return True
    raise FileFormatError(f"unknown component {name}")  # pragma: no cover
