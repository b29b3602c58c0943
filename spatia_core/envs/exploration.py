"""The exploration reward of SpatiaNav: map cells first seen in an episode.

A view's depth (every ``stride``-th pixel, 0 = nothing seen) is lifted to world points; the
cells of a ``cell`` metre grid they fall in are the cells seen. The reward of a step is the
number of cells no earlier frame of the episode saw, divided by ``scale``. Pure numpy, so one
env and the vector env compute exactly the same numbers.
"""

from __future__ import annotations

import numpy as np

from ..cameras import Intrinsics, backproject

CELL_M = 0.25  # grid edge, metres
STRIDE = 4  # pixel subsampling of the depth map
SCALE = 100.0  # reward = new cells / SCALE


def seen_cells(depth: np.ndarray, k: Intrinsics, pose: np.ndarray, cell: float = CELL_M,
               stride: int = STRIDE) -> np.ndarray:
    """Sorted unique int64 keys of the ``cell`` grid cells seen in ``depth`` (H, W) from c2w ``pose``."""
    world = backproject(np.asarray(depth), k, pose, stride=stride)
    if world.shape[0] == 0:
        return np.zeros(0, np.int64)
    ijk = np.floor(world / cell).astype(np.int64) + (1 << 20)  # +-262 km at 0.25 m fits 21 bits per axis
    return np.unique((ijk[:, 0] << 42) | (ijk[:, 1] << 21) | ijk[:, 2])


class SeenCells:
    """Cells seen so far in one episode."""

    def __init__(self):
        self.keys = np.zeros(0, np.int64)

    def reset(self) -> None:
        self.keys = np.zeros(0, np.int64)

    def add(self, depth: np.ndarray, k: Intrinsics, pose: np.ndarray) -> int:
        """Add a view; returns how many of its cells are new."""
        cells = seen_cells(depth, k, pose)
        new = np.setdiff1d(cells, self.keys, assume_unique=True)
        if new.size:
            self.keys = np.union1d(self.keys, new)
        return int(new.size)

    def __len__(self) -> int:
        return int(self.keys.size)
