"""Reading the release's weight files and checking a renamed state dict against its target model.

Shared by the per-model converters (:mod:`.dit`, :mod:`.vae`, :mod:`.umt5`): every converter renames
a file's tensors with a name function, then :func:`check_renamed` raises one
:class:`~spatia_core.errors.FileFormatError` that lists all missing, unexpected and mis-shaped tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping

from spatia_core.errors import FileFormatError

__all__ = [
    "check_renamed",
    "check_state_dict",
    "listing",
    "load_on_meta",
    "read_safetensors",
    "read_torch_file",
    "rename_all",
    "unwrap",
]


def listing(names: list[str], limit: int = 5) -> str:
    """``"N (a, b, c, ...)"``: a count and the first ``limit`` names."""
    shown = ", ".join(names[:limit])
    return f"{len(names)} ({shown}{', ...' if len(names) > limit else ''})"


def check_state_dict(
    state_dict: Mapping[str, Any],
    expected: Mapping[str, tuple[int, ...]],
    what: str = "state dict",
    target: str = "the Spatia transformer",
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
        problems.append(f"missing {listing(missing)}")
    if unexpected:
        problems.append(f"unexpected {listing(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped {listing(misshaped)}")
    if problems:
        raise FileFormatError(f"{what} does not match {target}: " + "; ".join(problems))


def rename_all(src: Mapping[str, Any], key_fn) -> tuple[dict[str, Any], list[str]]:
    """Apply ``key_fn`` (name -> new name, several names, or ``None`` if unknown) to every tensor."""
    out: dict[str, Any] = {}
    unknown: list[str] = []
    for name, tensor in src.items():
        new = key_fn(name)
        if new is None:
            unknown.append(name)
        else:
            out.update({n: tensor for n in ((new,) if isinstance(new, str) else new)})
    return out, unknown


def check_renamed(out: dict[str, Any], unknown: list[str], src: Mapping[str, Any], expected, what: str, target: str):
    """Return ``out`` (renamed from ``src``) after checking it: with ``expected`` (name -> shape),
    every missing / unexpected / mis-shaped tensor; without, only that no name was ``unknown``."""
    if expected is None:
        if unknown:
            raise FileFormatError(f"{what}: unexpected {listing(sorted(unknown))}")
        return out
    checked = dict(out)
    checked.update({name: src[name] for name in unknown})  # reported as unexpected
    check_state_dict(checked, expected, what, target)
    return out


def unwrap(state_dict: Mapping[str, Any], prefix: str, what: str) -> dict[str, Any]:
    """Undo the wrappers seen around original Wan state dicts (``{"model_state": ...}``,
    ``{"state_dict": ...}``, a ``prefix`` on every name) and require tensors only."""
    import torch

    for wrapper in ("model_state", "state_dict"):
        if set(state_dict) == {wrapper} and isinstance(state_dict[wrapper], Mapping):
            state_dict = state_dict[wrapper]
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        state_dict = {k[len(prefix) :]: v for k, v in state_dict.items()}
    bad = sorted(k for k, v in state_dict.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise FileFormatError(f"{what}: entries that are not tensors: {listing(bad)}")
    if not state_dict:
        raise FileFormatError(f"{what} is empty")
    return dict(state_dict)


def load_on_meta(model, state: Mapping[str, Any], what: str):
    """Load ``state`` into a ``meta``-device ``model`` (no second copy of the weights)."""
    model.load_state_dict(dict(state), strict=True, assign=True)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise FileFormatError(f"{what}: tensors left unset: {listing(left)}")
    return model.eval()


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
            raise FileFormatError(f"{path} repeats tensors of earlier files: {listing(dup)}")
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
