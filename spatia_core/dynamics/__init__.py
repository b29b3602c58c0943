"""Dynamic–static disentanglement: masks of moving things in generated frames.

Masked pixels never enter the spatial memory. Sources are picked by ``update.dynamics``.
"""

from __future__ import annotations

from .base import DynamicsSource

DYNAMICS_SOURCES = ("none", "residual", "sam2")


def make_dynamics(update, device="cpu") -> DynamicsSource | None:
    """The dynamic-mask source named by ``update.dynamics``; ``None`` for ``none``."""
    from ..errors import InputError

    if update.dynamics == "none":
        return None
    if update.dynamics == "residual":
        from .residual import make_residual_dynamics

        return make_residual_dynamics(update)
    if update.dynamics == "sam2":
        from .sam2 import make_sam2_dynamics

        return make_sam2_dynamics(update, device=device)
    raise InputError(f"unknown dynamics source {update.dynamics!r}; choose one of {', '.join(DYNAMICS_SOURCES)}")


__all__ = ["DYNAMICS_SOURCES", "DynamicsSource", "make_dynamics"]
