"""Generator backends behind one interface; pick one by name with :func:`make_generator`."""

from __future__ import annotations

from ..errors import BackendUnavailableError, InputError
from .base import ConditionFrame, GenerationRequest, GenerationResult, Generator
from .projection import ProjectionGenerator, fill_holes

BACKENDS = ("projection", "spatia")


def make_generator(name: str, device: str = "cpu", checkpoint: str = "", **options) -> Generator:
    """Build the generator backend ``name`` (``projection`` needs no weights, ``spatia`` loads
    its weights from the ``checkpoint`` directory)."""
    if name == "projection":
        return ProjectionGenerator(device=device)
    if name == "spatia":
        try:
            from .spatia import SpatiaGenerator
        except ImportError as exc:
            raise BackendUnavailableError(f"the 'spatia' diffusion backend is not available: {exc}") from exc
        return SpatiaGenerator(checkpoint=checkpoint, device=device, **options)
    raise InputError(f"unknown generator backend {name!r}; choose one of {', '.join(BACKENDS)}")


__all__ = [
    "BACKENDS",
    "ConditionFrame",
    "GenerationRequest",
    "GenerationResult",
    "Generator",
    "ProjectionGenerator",
    "fill_holes",
    "make_generator",
]
