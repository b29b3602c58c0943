"""Edits of the spatial memory: remove or recolour what lies in a box, add points.

Boxes are axis-aligned in the map frame, given by their lower and upper corners (metres).
Each edit bumps the memory's revision so renderers and publishers see the change.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from .spatial_memory import FuseResult, SpatialMemory


def _box(lo, hi, device) -> tuple[torch.Tensor, torch.Tensor]:
    lo = np.asarray(lo, dtype=np.float64).reshape(-1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise InputError("a box needs finite lower and upper corners of 3 values each")
    if np.any(hi < lo):
        raise InputError(f"box upper corner {hi.tolist()} is below its lower corner {lo.tolist()}")
    return torch.tensor(lo, dtype=torch.float32, device=device), torch.tensor(hi, dtype=torch.float32, device=device)


def in_box(memory: SpatialMemory, lo, hi) -> torch.Tensor:
    """bool (N,): voxels whose point lies inside the box [lo, hi]."""
    lo_t, hi_t = _box(lo, hi, memory.device)
    return ((memory.xyz >= lo_t) & (memory.xyz <= hi_t)).all(1)


def remove_box(memory: SpatialMemory, lo, hi) -> int:
    """Remove every voxel inside the box; returns how many were removed."""
    return memory.keep_only(~in_box(memory, lo, hi))


def recolor_box(memory: SpatialMemory, lo, hi, rgb) -> int:
    """Set the colour (uint8 triple or floats in [0, 1]) of every voxel inside the box."""
    colour = np.asarray(rgb, dtype=np.float64).reshape(-1)
    if colour.shape != (3,) or not np.all(np.isfinite(colour)):
        raise InputError("a colour needs 3 finite values")
    if colour.max() > 1.0:
        colour = colour / 255.0
    if colour.min() < 0 or colour.max() > 1:
        raise InputError("colour values must lie in [0, 255] (or [0, 1])")
    inside = in_box(memory, lo, hi)
    n = int(inside.sum())
    if n:
        memory._rgb[: len(memory)][inside] = torch.tensor(colour, dtype=torch.float32, device=memory.device)
        memory.revision += 1
    return n


def add_points(memory: SpatialMemory, xyz, rgb) -> FuseResult:
    """Add coloured points (float (N, 3) metres, uint8 or [0, 1] (N, 3) colours) to the memory."""
    return memory.insert_points(xyz, rgb)
