"""Our Spatia checkpoint layout: one local folder, safetensors weights only.

::

    ckpt/
      model_index.json  diffusers' pipeline index (SpatiaPipeline and its five components)
      spatia.json       our metadata: format version + sampling defaults
      transformer/      SpatiaTransformer3DModel   (config.json + *.safetensors)
      vae/              diffusers AutoencoderKLWan
      text_encoder/     transformers UMT5EncoderModel
      tokenizer/        umT5 tokenizer
      scheduler/        SpatiaFlowUniPCScheduler (the release's FlowUniPC: flow sigmas from 0.999, shift 5)
      lora/             optional peft adapter (adapter_config.json + adapter_model.safetensors)

A complete set is written by diffusers (:meth:`.pipeline.SpatiaPipeline.save_pretrained`) and reads
back with ``SpatiaPipeline.from_pretrained(folder)``; a partial set (e.g. a converted transformer
without a tokenizer) is written component by component, without ``model_index.json``, and reads
with :func:`load_checkpoint`. Folders written before ``model_index.json`` was added still load.

Writing is atomic: everything goes to a hidden sibling folder that is checked and then renamed
into place, so a crash or a failed write never leaves a half-written checkpoint and never destroys
an existing one.
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
    "MODEL_INDEX",
    "PIPELINE_COMPONENTS",
    "default_scheduler",
    "load_checkpoint",
    "read_metadata",
    "save_checkpoint",
    "verify_checkpoint",
    "write_metadata",
]

FORMAT_VERSION = 1
METADATA_FILE = "spatia.json"
MODEL_INDEX = "model_index.json"
#: The components of a :class:`~.pipeline.SpatiaPipeline` (the folders ``model_index.json`` names).
PIPELINE_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
#: Every folder a checkpoint may hold.
COMPONENTS = PIPELINE_COMPONENTS + ("lora",)

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


def _component_files(name: str) -> tuple[str, bool]:
    """(config file name, whether safetensors weights are expected) of a component folder."""
    from .lora import ADAPTER_CONFIG

    return {
        "tokenizer": ("tokenizer_config.json", False),
        "scheduler": ("scheduler_config.json", False),
        "lora": (ADAPTER_CONFIG, True),
    }.get(name, ("config.json", True))


def write_metadata(folder: Path, metadata: Mapping[str, Any] | None = None,
                   sampling: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Write ``spatia.json`` into ``folder``; returns its content.

    The content is :data:`DEFAULT_METADATA`, with ``sampling`` merged into its "sampling" and then
    ``metadata`` merged over all; ``components`` lists the sub-folders present.
    """
    folder = Path(folder)
    meta = _merge(_merge(DEFAULT_METADATA, {"sampling": dict(sampling or {})}), metadata or {})
    meta["format_version"] = FORMAT_VERSION
    meta["components"] = sorted(p.name for p in folder.iterdir() if p.is_dir())
    (folder / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True, ensure_ascii=False), encoding="utf-8")
    return meta


def _save_components(folder: Path, parts: Mapping[str, Any], metadata: Mapping[str, Any] | None) -> None:
    """A partial set, each component by its own ``save_pretrained`` (what diffusers' pipeline save
    does per component); a transformer's unmerged peft adapter goes to ``lora/``."""
    from .lora import base_layers_only, has_lora, save_lora

    folder.mkdir()
    for name, part in parts.items():
        if name == "transformer":
            with base_layers_only(part):
                part.save_pretrained(folder / name, safe_serialization=True)
            if has_lora(part):
                save_lora(part, folder / "lora")
        elif name in ("tokenizer", "scheduler"):
            part.save_pretrained(folder / name)
        else:
            part.save_pretrained(folder / name, safe_serialization=True)
    write_metadata(folder, metadata)


def verify_checkpoint(path: str | Path) -> list[str]:
    """Check a written checkpoint folder without loading its weights; returns its components.

    ``spatia.json`` must read; each component folder must hold its config and, for models,
    safetensors files whose headers read; a ``model_index.json`` must name every component it
    lists, each present.

    Raises:
        FileFormatError: the first problem found.
    """
    from safetensors import safe_open

    path = Path(path)
    components = [c for c in read_metadata(path).get("components", []) if c in COMPONENTS]
    for name in components:
        config, weights = _component_files(name)
        if not (path / name / config).is_file():
            raise FileFormatError(f"checkpoint {path}: {name}/ has no {config}")
        files = sorted((path / name).glob("*.safetensors"))
        if weights and not files:
            raise FileFormatError(f"checkpoint {path}: {name}/ has no safetensors weights")
        for file in files:
            try:
                with safe_open(str(file), framework="pt"):
                    pass
            except Exception as exc:  # safetensors raises several error types
                raise FileFormatError(f"checkpoint {path}: unreadable {file.relative_to(path)}: {exc}") from exc
    index_file = path / MODEL_INDEX
    if index_file.is_file():
        try:
            index = json.loads(index_file.read_text())
        except (OSError, ValueError) as exc:
            raise FileFormatError(f"cannot read {index_file}: {exc}") from exc
        listed = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v[0]]
        absent = sorted(set(listed) - set(components)) + sorted(set(PIPELINE_COMPONENTS) - set(listed))
        if absent:
            raise FileFormatError(f"checkpoint {path}: {MODEL_INDEX} and the folder disagree on {', '.join(absent)}")
    return components


def save_checkpoint(
    path: str | Path,
    *,
    transformer: Any = None,
    vae: Any = None,
    text_encoder: Any = None,
    tokenizer: Any = None,
    scheduler: Any = None,
    metadata: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a checkpoint folder atomically; returns its path.

    All five components: diffusers writes them with ``model_index.json``
    (:meth:`.pipeline.SpatiaPipeline.save_pretrained`), so ``SpatiaPipeline.from_pretrained``
    reads the folder back. Fewer: each is written alone and :func:`load_checkpoint` reads them.
    Either way the new folder is checked (:func:`verify_checkpoint`) before it replaces ``path``.

    Args:
        path: the checkpoint folder to create.
        transformer, vae, text_encoder, tokenizer, scheduler: components to write (any may be
            ``None``). A transformer carrying an unmerged peft adapter is written as its base
            weights in ``transformer/`` plus the adapter in ``lora/``.
        metadata: merged over :data:`DEFAULT_METADATA` into ``spatia.json``.
        overwrite: replace an existing checkpoint (it is kept until the new one is in place).

    Raises:
        FileFormatError: ``path`` exists (without ``overwrite``) or is not a folder, or the
            written folder fails its check (``path`` is then left as it was).
    """
    path = Path(path)
    parts = {name: part for name, part in (("transformer", transformer), ("vae", vae), ("text_encoder", text_encoder),
                                          ("tokenizer", tokenizer), ("scheduler", scheduler)) if part is not None}
    if path.exists() and not overwrite:
        raise FileFormatError(f"checkpoint folder already exists: {path}")
    if path.exists() and not path.is_dir():
        raise FileFormatError(f"not a folder: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        if set(parts) == set(PIPELINE_COMPONENTS):
            from .pipeline import SamplingDefaults, SpatiaPipeline

            defaults = SamplingDefaults.from_metadata(_merge(DEFAULT_METADATA, metadata or {}))
            SpatiaPipeline(**parts, defaults=defaults).save_pretrained(tmp, metadata=metadata)
        else:
            _save_components(tmp, parts, metadata)
        verify_checkpoint(tmp)
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
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"cannot read {file}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise FileFormatError(
            f"{file}: unsupported format version {meta.get('format_version') if isinstance(meta, dict) else None!r} "
            f"(this code reads {FORMAT_VERSION})"
        )
    return meta


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
        from .lora import load_lora

        load_lora(loaded["transformer"], folder)
        return True
    raise FileFormatError(f"unknown component {name}")  # pragma: no cover
