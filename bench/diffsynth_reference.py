"""Load DiffSynth-Studio 1.1.9's Wan modules as a *reference implementation* (tests, benchmarks).

``import diffsynth`` fails in a CPU-only environment (its package ``__init__`` imports every
model and pipeline, which pulls torchvision and modelscope). This module makes only what the
Spatia release uses importable, from the installed package, without copying any of its code:

* :func:`load_modules` registers bare ``diffsynth`` / ``diffsynth.models`` package modules whose
  ``__path__`` points at the installed folders, then imports ``wan_video_dit`` (``WanModel``,
  ``sinusoidal_embedding_1d``, ``precompute_freqs_cis``) and ``wan_video_vace``
  (``VaceWanModel``); these need only torch, einops, safetensors and numpy.
* :func:`load_base_modules` imports ``wan_video_text_encoder`` (``WanTextEncoder``, the umT5
  encoder that loads ``models_t5_umt5-xxl-enc-bf16.pth`` unchanged) and ``wan_video_vae``
  (``WanVideoVAE38``, whose ``model`` is a ``VideoVAE38_`` that loads ``Wan2.2_VAE.pth`` unchanged
  under a ``model.`` prefix); these need torch, einops and tqdm.
* :func:`load_model_fn` returns the official forward ``model_fn_wan_video`` from
  ``diffsynth/pipelines/wan_video_new.py``: that module imports modelscope, PIL, the VAE, the
  text encoder, ... at top level, so the function's definition alone is compiled from the
  installed file (located with :mod:`ast`) in a namespace holding the real DiffSynth objects it
  uses and inert placeholders for the unused ones (those are only referenced in annotations and in
  branches for other model families).

Usage::

    ref = load_modules()
    dit = ref.WanModel(...); vace = ref.VaceWanModel(...)
    model_fn = load_model_fn()
    out = model_fn(dit=dit, vace=vace, latents=..., timestep=..., context=..., vace_context=...,
                   fuse_vae_embedding_in_latents=True)
"""

from __future__ import annotations

import ast
import importlib
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any, Callable

__all__ = ["DiffSynthUnavailable", "diffsynth_root", "load_base_modules", "load_model_fn", "load_modules"]


class DiffSynthUnavailable(ImportError):
    """``diffsynth`` 1.1.9 (or one of einops/safetensors) is not installed."""


def diffsynth_root() -> Path:
    """The installed ``diffsynth`` package folder (found without importing it)."""
    loaded = sys.modules.get("diffsynth")
    if loaded is not None and getattr(loaded, "__path__", None):
        return Path(list(loaded.__path__)[0])
    spec = importlib.util.find_spec("diffsynth")
    if spec is None or not spec.submodule_search_locations:
        raise DiffSynthUnavailable("diffsynth is not installed (pip install --no-deps diffsynth==1.1.9)")
    return Path(list(spec.submodule_search_locations)[0])


def _bare_package(name: str, path: Path) -> None:
    """Register ``name`` as an empty package whose submodules are searched in ``path``."""
    module = sys.modules.get(name)
    if module is not None and getattr(module, "__path__", None):
        return
    module = types.ModuleType(name)
    module.__path__ = [str(path)]
    module.__package__ = name
    module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
    module.__spec__.submodule_search_locations = [str(path)]
    sys.modules[name] = module


def _import_models(modules: tuple[str, ...], needs: tuple[str, ...]) -> list[types.ModuleType]:
    """Import ``diffsynth.models.<module>`` for each name, past DiffSynth's package ``__init__``."""
    root = diffsynth_root()
    for package in needs:
        try:
            importlib.import_module(package)
        except ImportError as exc:  # pragma: no cover - environment problem
            raise DiffSynthUnavailable(f"DiffSynth's {', '.join(modules)} need {package}") from exc
    _bare_package("diffsynth", root)
    _bare_package("diffsynth.models", root / "models")
    return [importlib.import_module(f"diffsynth.models.{m}") for m in modules]


def load_modules() -> types.SimpleNamespace:
    """Import DiffSynth's Wan DiT and VACE modules; returns a namespace of what tests need."""
    dit, vace = _import_models(("wan_video_dit", "wan_video_vace"), needs=("einops", "safetensors"))
    return types.SimpleNamespace(
        dit_module=dit,
        vace_module=vace,
        WanModel=dit.WanModel,
        DiTBlock=dit.DiTBlock,
        VaceWanModel=vace.VaceWanModel,
        sinusoidal_embedding_1d=dit.sinusoidal_embedding_1d,
        precompute_freqs_cis=dit.precompute_freqs_cis,
        precompute_freqs_cis_3d=dit.precompute_freqs_cis_3d,
        rope_apply=dit.rope_apply,
    )


def load_base_modules() -> types.SimpleNamespace:
    """Import DiffSynth's umT5 text encoder and Wan VAE modules (the release's base files)."""
    text, vae = _import_models(("wan_video_text_encoder", "wan_video_vae"), needs=("einops", "tqdm"))
    return types.SimpleNamespace(
        text_encoder_module=text,
        vae_module=vae,
        WanTextEncoder=text.WanTextEncoder,
        WanVideoVAE38=vae.WanVideoVAE38,
        VideoVAE38_=vae.VideoVAE38_,
    )


class _Unused:
    """Placeholder for names the official forward only mentions for other model families."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("this DiffSynth feature is not loaded by bench/diffsynth_reference.py")


_model_fn_cache: dict[str, Callable] = {}


def load_model_fn(name: str = "model_fn_wan_video") -> Callable:
    """The official forward function ``name`` of ``diffsynth/pipelines/wan_video_new.py``.

    Only the function's own definition is compiled (from the installed file); it runs against
    the real ``WanModel`` / ``VaceWanModel`` / ``sinusoidal_embedding_1d`` of :func:`load_modules`.
    Branches for other families (LongCat, S2V, VAP, animate, sliding windows, sequence parallel)
    are not supported.
    """
    if name in _model_fn_cache:
        return _model_fn_cache[name]
    ref = load_modules()
    source_path = diffsynth_root() / "pipelines" / "wan_video_new.py"
    source = source_path.read_text()
    tree = ast.parse(source, filename=str(source_path))
    defs = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == name]
    if not defs:
        raise DiffSynthUnavailable(f"{name} not found in {source_path} (is this diffsynth 1.1.9?)")
    module = ast.Module(body=defs, type_ignores=[])

    import torch
    from einops import rearrange, reduce, repeat

    namespace: dict[str, Any] = {
        "__name__": "diffsynth_reference_model_fn",
        "torch": torch,
        "rearrange": rearrange,
        "repeat": repeat,
        "reduce": reduce,
        "Optional": __import__("typing").Optional,
        "Union": __import__("typing").Union,
        "WanModel": ref.WanModel,
        "VaceWanModel": ref.VaceWanModel,
        "sinusoidal_embedding_1d": ref.sinusoidal_embedding_1d,
    }
    # Every other global the function reads becomes an inert placeholder class.
    loaded = {n.id for n in ast.walk(defs[0]) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    local = {a.arg for a in ast.walk(defs[0]) if isinstance(a, ast.arg)}
    local |= {n.id for n in ast.walk(defs[0]) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    builtins = set(dir(__import__("builtins")))
    for missing in sorted(loaded - local - builtins - set(namespace)):
        namespace[missing] = type(missing, (_Unused,), {})
    exec(compile(module, str(source_path), "exec"), namespace)  # noqa: S102 - installed reference code
    _model_fn_cache[name] = namespace[name]
    return namespace[name]
