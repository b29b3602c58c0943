"""LoRA on the Spatia transformer's main blocks (peft, through diffusers), and the official LoRA file.

Stage 2 of Spatia's training adds rank-64 LoRA to the 30 main DiT blocks (not to the control
blocks). The release's LoRA file holds peft weights trained inside DiffSynth, keyed
``pipe.dit.<DiffSynth module>.lora_A.default.weight`` / ``...lora_B.default.weight``; DiffSynth
merges them as ``W += alpha · B @ A`` (no rank scaling, ``alpha`` = 1 by default, see
``diffsynth/lora/__init__.py::GeneralLoRALoader``). :func:`load_official_lora` maps the module
names to diffusers' and loads them as a peft adapter with the same scale (``lora_alpha = r·alpha``).

Loading, switching and fusing are diffusers' own (the transformer is a ``ModelMixin`` with
``PeftAdapterMixin``: ``load_lora_adapter``, ``enable_adapters`` / ``disable_adapters``,
``fuse_lora`` / ``unload_lora``); what this module adds is a strict check first
(:func:`check_lora_fits`: every name and shape that does not fit the model, in one error) and the
checkpoint's ``lora/`` folder (:func:`save_lora` / :func:`load_lora`: peft's
``adapter_config.json`` + ``adapter_model.safetensors``).
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from spatia_core.errors import FileFormatError

__all__ = [
    "ADAPTER_CONFIG",
    "ADAPTER_WEIGHTS",
    "MAIN_BLOCK_TARGETS",
    "add_lora",
    "base_layers_only",
    "check_lora_fits",
    "has_lora",
    "load_lora",
    "load_official_lora",
    "lora_state_dict",
    "merge_lora",
    "official_lora_to_peft",
    "save_lora",
]

#: peft ``target_modules`` regex: attention projections and FFN of the main blocks only.
MAIN_BLOCK_TARGETS = r"^blocks\.\d+\.(attn1\.(to_q|to_k|to_v|to_out\.0)|attn2\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.0\.proj|ffn\.net\.2)$"

#: File names of a ``lora/`` folder (peft's adapter layout).
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"

_LORA_KEY = re.compile(r"^(?P<module>.+?)\.(?P<kind>lora_A|lora_B|lora_down|lora_up)(?:\.[A-Za-z_]\w*)?\.weight$")


def add_lora(
    model: nn.Module,
    rank: int = 64,
    alpha: float | None = None,
    target_modules: str | list[str] = MAIN_BLOCK_TARGETS,
    adapter_name: str = "default",
    dropout: float = 0.0,
) -> nn.Module:
    """Add a trainable peft LoRA adapter (``B = 0`` at start) to the main blocks; returns ``model``.

    ``alpha`` defaults to ``rank`` (scale 1, as DiffSynth trains it).
    """
    from peft import LoraConfig

    if rank <= 0:
        raise ValueError(f"LoRA rank must be positive, got {rank}")
    config = LoraConfig(
        r=rank,
        lora_alpha=float(rank if alpha is None else alpha),
        target_modules=target_modules,
        lora_dropout=dropout,
        init_lora_weights=True,
    )
    model.add_adapter(config, adapter_name=adapter_name)
    return model


def has_lora(model: nn.Module, adapter_name: str | None = None) -> bool:
    """Whether ``model`` carries a peft adapter (``adapter_name``, or any)."""
    config = getattr(model, "peft_config", None) or {}
    return bool(config) if adapter_name is None else adapter_name in config


def _read(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(source, Mapping):
        return dict(source)
    from .convert.state_dicts import read_safetensors

    return read_safetensors([source])


def official_lora_to_peft(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Map release LoRA keys to diffusers module names.

    Returns ``({"blocks.0.attn1.to_q.lora_A.weight": A, ...}, rank)``.

    Raises:
        FileFormatError: a key that is not a LoRA weight of a main-block linear layer, an A
            without its B (or the reverse), or mixed ranks.
    """
    from .convert.dit import diffsynth_to_diffusers_key
    from .convert.state_dicts import listing

    out: dict[str, torch.Tensor] = {}
    bad: list[str] = []
    ranks: set[int] = set()
    for key, tensor in state_dict.items():
        match = _LORA_KEY.match(key)
        target = diffsynth_to_diffusers_key(match["module"] + ".weight") if match else None
        if target is None or not re.match(MAIN_BLOCK_TARGETS, target[: -len(".weight")]):
            bad.append(key)
            continue
        kind = {"lora_down": "lora_A", "lora_up": "lora_B"}.get(match["kind"], match["kind"])
        if tensor.ndim != 2:
            bad.append(f"{key} (shape {tuple(tensor.shape)})")
            continue
        ranks.add(tensor.shape[0] if kind == "lora_A" else tensor.shape[1])
        out[f"{target[: -len('.weight')]}.{kind}.weight"] = tensor
    if bad:
        raise FileFormatError(f"LoRA file: not LoRA weights of main-block layers: {listing(sorted(bad))}")
    modules = {k.rsplit(".", 2)[0] for k in out}
    unpaired = sorted(m for m in modules if f"{m}.lora_A.weight" not in out or f"{m}.lora_B.weight" not in out)
    if unpaired:
        raise FileFormatError(f"LoRA file: A/B pair incomplete for {listing(unpaired)}")
    if len(ranks) != 1:
        raise FileFormatError(f"LoRA file: expected one rank, found {sorted(ranks) or 'none'}")
    return out, ranks.pop()


def check_lora_fits(model: nn.Module, weights: Mapping[str, torch.Tensor], what: str = "LoRA adapter") -> list[str]:
    """Check peft-named LoRA weights against ``model``; returns the target module names (sorted).

    Every key must be ``<module>.lora_A.weight`` (r, in_features) or ``<module>.lora_B.weight``
    (out_features, r) of a linear layer of ``model``, with A and B of one module sharing r.

    Raises:
        FileFormatError: every key that does not fit, listed in one message.
    """
    from .convert.state_dicts import listing

    modules = dict(model.named_modules())
    misfit = []
    for key, tensor in weights.items():
        name, _, kind = key.rpartition(".")[0].rpartition(".")
        layer = modules.get(name)
        layer = layer.get_base_layer() if hasattr(layer, "get_base_layer") else layer
        if kind not in ("lora_A", "lora_B") or not key.endswith(".weight"):
            misfit.append(f"{key} (not a LoRA A/B weight)")
            continue
        if not isinstance(layer, nn.Linear):
            misfit.append(f"{name} (no such linear layer)")
            continue
        partner = weights.get(f"{name}.{'lora_B' if kind == 'lora_A' else 'lora_A'}.weight")
        rank = tensor.shape[0] if kind == "lora_A" else (partner.shape[0] if partner is not None else tensor.shape[-1])
        want = (rank, layer.in_features) if kind == "lora_A" else (layer.out_features, rank)
        if tuple(tensor.shape) != want:
            misfit.append(f"{key} {tuple(tensor.shape)} != {want}")
    if misfit:
        raise FileFormatError(f"{what} does not fit the transformer: {listing(sorted(set(misfit)))}")
    return sorted({key.rsplit(".", 2)[0] for key in weights})


def _load_adapter(model: nn.Module, weights: Mapping[str, torch.Tensor], config: dict[str, Any], adapter_name: str) -> None:
    """diffusers' ``load_lora_adapter`` with an explicit ``LoraConfig`` (``config``, its keyword
    arguments), the weights sorted so that diffusers sees them as peft-named."""
    if has_lora(model, adapter_name):
        raise FileFormatError(f"the transformer already has a LoRA adapter named {adapter_name!r}")
    model.load_lora_adapter(dict(sorted(weights.items())), prefix=None, adapter_name=adapter_name, metadata=config)


def load_official_lora(
    model: nn.Module,
    source: str | Path | Mapping[str, torch.Tensor],
    alpha: float = 1.0,
    adapter_name: str = "default",
) -> int:
    """Load the release's ``pipe.dit.``-prefixed LoRA as a peft adapter; returns the module count.

    ``alpha`` multiplies the update like DiffSynth's ``alpha`` (``W + alpha · B @ A``).

    Raises:
        FileFormatError: unreadable file, foreign keys, or shapes that do not fit the model.
    """
    weights, rank = official_lora_to_peft(_read(source))
    targets = check_lora_fits(model, weights, "LoRA file")
    config = {
        "r": rank,
        "lora_alpha": float(rank * alpha),
        "target_modules": "^(" + "|".join(re.escape(t) for t in targets) + ")$",
        "init_lora_weights": False,
    }
    _load_adapter(model, weights, config, adapter_name)
    return len(targets)


def save_lora(model: nn.Module, folder: str | Path, adapter_name: str = "default") -> Path:
    """Write ``model``'s adapter to ``folder`` (created) in peft's layout: ``adapter_config.json`` and
    ``adapter_model.safetensors`` (peft names, the config also in the file's metadata under diffusers'
    key, so ``load_lora_adapter(folder, weight_name=...)`` reads it alone).

    (diffusers' ``save_lora_adapter`` writes the same file but calls ``model.to(dtype=None)`` on the
    way, which logs a spurious float32-modules warning at every save.)

    Raises:
        FileFormatError: ``model`` has no adapter ``adapter_name``.
    """
    from diffusers.loaders.lora_base import LORA_ADAPTER_METADATA_KEY
    from safetensors.torch import save_file

    if not has_lora(model, adapter_name):
        raise FileFormatError(f"no peft adapter {adapter_name!r} to save")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = model.peft_config[adapter_name].to_dict()
    config = json.dumps({k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}, indent=2,
                        sort_keys=True, default=str)
    (folder / ADAPTER_CONFIG).write_text(config)
    weights = {k: v.detach().contiguous() for k, v in lora_state_dict(model, adapter_name).items()}
    save_file(weights, str(folder / ADAPTER_WEIGHTS), metadata={"format": "pt", LORA_ADAPTER_METADATA_KEY: config})
    return folder


def load_lora(model: nn.Module, folder: str | Path, adapter_name: str = "default") -> int:
    """Load a ``lora/`` folder (:func:`save_lora`, or an older checkpoint's) onto ``model`` through
    diffusers' ``load_lora_adapter``, after :func:`check_lora_fits`; returns the module count.

    Raises:
        FileFormatError: missing / corrupt files, or weights that do not fit the model.
    """
    from peft import LoraConfig

    from .convert.state_dicts import read_safetensors

    folder = Path(folder)
    try:
        config = json.loads((folder / ADAPTER_CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"cannot read {folder / ADAPTER_CONFIG}: {exc}") from exc
    allowed = set(LoraConfig.__dataclass_fields__) - {"peft_type", "task_type"}
    config = {k: v for k, v in config.items() if k in allowed}
    weights = read_safetensors([folder / ADAPTER_WEIGHTS])
    targets = check_lora_fits(model, weights, f"LoRA adapter {folder}")
    _load_adapter(model, weights, config, adapter_name)
    return len(targets)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fuse every LoRA adapter into its base weight (diffusers' ``fuse_lora``: ``W + scale · B @ A``)
    and remove the adapter layers (``unload_lora``); returns ``model``."""
    if has_lora(model):
        model.fuse_lora()
        model.unload_lora()
    return model


@contextlib.contextmanager
def base_layers_only(model: nn.Module):
    """Within the block, every (unmerged) peft LoRA layer of ``model`` is replaced by its base layer,
    so ``save_pretrained`` writes the base weights under their plain names; restored on exit.

    Raises:
        FileFormatError: an adapter is merged into its base weight (saving it would bake it in).
    """
    if not has_lora(model):
        yield model
        return
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    merged = [name for name, m in layers if m.merged]
    if merged:
        raise FileFormatError(f"LoRA merged into {len(merged)} layers (e.g. {merged[0]}); unmerge or merge_lora first")
    swapped = []
    try:
        for name, layer in layers:
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, layer.get_base_layer())
            swapped.append((parent, child, layer))
        yield model
    finally:
        for parent, child, layer in reversed(swapped):
            setattr(parent, child, layer)


def lora_state_dict(model: nn.Module, adapter_name: str = "default") -> dict[str, Any]:
    """The adapter's weights in peft naming (``blocks.0.attn1.to_q.lora_A.weight``)."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=adapter_name)
