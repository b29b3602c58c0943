"""LoRA on the Spatia transformer's main blocks (peft), and the official LoRA file.

Stage 2 of Spatia's training adds rank-64 LoRA to the 30 main DiT blocks (not to the control
blocks). The release's LoRA file holds peft weights trained inside DiffSynth, keyed
``pipe.dit.<DiffSynth module>.lora_A.default.weight`` / ``...lora_B.default.weight``; DiffSynth
merges them as ``W += alpha · B @ A`` (no rank scaling, ``alpha`` = 1 by default, see
``diffsynth/lora/__init__.py::GeneralLoRALoader``). :func:`load_official_lora` maps the module
names to diffusers' and loads them as a peft adapter with the same scale (``lora_alpha = r``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from spatia_core.errors import FileFormatError

__all__ = ["MAIN_BLOCK_TARGETS", "add_lora", "load_official_lora", "merge_lora", "official_lora_to_peft"]

#: peft ``target_modules`` regex: attention projections and FFN of the main blocks only.
MAIN_BLOCK_TARGETS = r"^blocks\.\d+\.(attn1\.(to_q|to_k|to_v|to_out\.0)|attn2\.(to_q|to_k|to_v|to_out\.0)|ffn\.net\.0\.proj|ffn\.net\.2)$"

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


def _read(source: str | Path | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(source, Mapping):
        return dict(source)
    from .convert import read_safetensors

    return read_safetensors([source])


def official_lora_to_peft(state_dict: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], int]:
    """Map release LoRA keys to diffusers module names.

    Returns ``({"blocks.0.attn1.to_q.lora_A.weight": A, ...}, rank)``.

    Raises:
        FileFormatError: a key that is not a LoRA weight of a main-block linear layer, an A
            without its B (or the reverse), or mixed ranks.
    """
    from .convert import _listing, diffsynth_to_diffusers_key

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
        raise FileFormatError(f"LoRA file: not LoRA weights of main-block layers: {_listing(sorted(bad))}")
    modules = {k.rsplit(".", 2)[0] for k in out}
    unpaired = sorted(m for m in modules if f"{m}.lora_A.weight" not in out or f"{m}.lora_B.weight" not in out)
    if unpaired:
        raise FileFormatError(f"LoRA file: A/B pair incomplete for {_listing(unpaired)}")
    if len(ranks) != 1:
        raise FileFormatError(f"LoRA file: expected one rank, found {sorted(ranks) or 'none'}")
    return out, ranks.pop()


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
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    weights, rank = official_lora_to_peft(_read(source))
    modules = dict(model.named_modules())
    misfit = []
    for key, tensor in weights.items():
        name, kind = key.rsplit(".", 2)[0], key.split(".")[-2]
        layer = modules.get(name)
        if not isinstance(layer, nn.Linear):
            misfit.append(f"{name} (no such linear layer)")
            continue
        want = (rank, layer.in_features) if kind == "lora_A" else (layer.out_features, rank)
        if tuple(tensor.shape) != want:
            misfit.append(f"{key} {tuple(tensor.shape)} != {want}")
    if misfit:
        from .convert import _listing

        raise FileFormatError(f"LoRA file does not fit the transformer: {_listing(sorted(set(misfit)))}")
    targets = sorted({key.rsplit(".", 2)[0] for key in weights})
    config = LoraConfig(
        r=rank,
        lora_alpha=float(rank * alpha),
        target_modules="^(" + "|".join(re.escape(t) for t in targets) + ")$",
        init_lora_weights=False,
    )
    model.add_adapter(config, adapter_name=adapter_name)
    result = set_peft_model_state_dict(model, weights, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", None) or []
    if unexpected:
        raise FileFormatError(f"LoRA weights not used by peft: {unexpected[:5]}")
    return len(targets)


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every peft LoRA layer into its base weight and remove the adapters; returns ``model``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    replaced = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, BaseTunerLayer):
            module.merge()
            parent_name, _, child = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, child, module.get_base_layer())
            replaced += 1
    if hasattr(model, "peft_config"):
        del model.peft_config
    if hasattr(model, "_hf_peft_config_loaded"):
        model._hf_peft_config_loaded = False
    return model


def lora_state_dict(model: nn.Module, adapter_name: str = "default") -> dict[str, Any]:
    """The adapter's weights in peft naming (``blocks.0.attn1.to_q.lora_A.weight``)."""
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(model, adapter_name=adapter_name)
