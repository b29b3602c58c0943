"""spatia_core: the ROS-free library of spatia_ros.

Spatia's loop (arXiv 2512.15716) over an explicit 3D spatial memory: scene projection,
reference retrieval, generation, memory update. Start with :class:`SpatiaWorld`.

The names below are imported on first use (PEP 562), so ``import spatia_core.errors`` (or
the config, or the recorder) does not pull in torch, numba, OpenCV and scipy.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> submodule that defines it
_EXPORTS = {
    "SpatiaConfig": "config",
    "BackendUnavailableError": "errors",
    "EntityError": "errors",
    "FileFormatError": "errors",
    "InputError": "errors",
    "SpatiaError": "errors",
    "Intrinsics": "geometry",
    "look_at": "geometry",
    "validate_pose": "geometry",
    "SpatialMemory": "memory",
    "load_ply": "memory",
    "save_ply": "memory",
    "SceneProjection": "render",
    "render_memory": "render",
    "render_points": "render",
    "FrameBank": "retrieval",
    "retrieve_references": "retrieval",
    "ClipResult": "world",
    "SpatiaWorld": "world",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
