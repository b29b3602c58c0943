"""Interface of dynamic-mask sources."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..geometry import Intrinsics


class DynamicsSource(Protocol):
    """Masks of dynamic pixels in generated frames (excluded from the memory).

    ``scene`` is the clip's scene projection as NumPy (``rgb``, ``depth``, ``mask``). Returns bool
    (T, H, W), True = dynamic, or ``None`` when nothing is dynamic. ``reset()`` forgets any state
    carried between clips (called when the world is reset). ``depth`` float32 (T, H, W) metres is
    the depth the world will fuse the frames with (0 = unknown), passed by keyword.
    """

    def masks(self, frames: np.ndarray, scene: dict, poses: np.ndarray, intrinsics: Intrinsics,
              depth: np.ndarray | None = None) -> np.ndarray | None: ...

    def reset(self) -> None: ...
