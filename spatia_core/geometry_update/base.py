"""Interfaces of the geometry update: depth sources and pose refiners."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from ..geometry import Intrinsics


class DepthSource(Protocol):
    """Depth for generated frames the backend gave no depth for.

    ``scene`` is the clip's scene projection as NumPy (``rgb`` (T, H, W, 3) uint8, ``depth``
    (T, H, W) float32 metres, ``mask`` (T, H, W) bool); ``history`` are the clean frames that
    preceded the clip (``ConditionFrame``: image, pose, intrinsics), oldest first.
    Returns float32 (T, H, W) metres, 0 where unknown.
    """

    def estimate(self, frames: np.ndarray, scene: dict, poses: np.ndarray, intrinsics: Intrinsics,
                 history: Sequence = ()) -> np.ndarray: ...


class RenderedDepth:
    """Default depth source: the memory's rendered depth (0 where it shows nothing)."""

    depth_is_memory = True  # nothing it gives can contradict the memory (no free-space carving needed)

    def estimate(self, frames, scene, poses, intrinsics, history=()):
        return np.where(scene["mask"], scene["depth"], 0.0).astype(np.float32)


@dataclass
class PoseCorrection:
    """What a pose refiner did to one frame."""

    delta: np.ndarray  # float64 (4, 4): refined = delta @ commanded (a map-frame correction)
    translation_m: float  # size of the correction
    rotation_deg: float
    accepted: bool  # False when the correction exceeded the bounds (the commanded pose was kept)
    reason: str = ""


class PoseRefiner(Protocol):
    """Aligns generated frames to the memory before fusing.

    Returns the poses to fuse with (T, 4, 4) and one :class:`PoseCorrection` per frame.
    """

    def refine(self, frames: np.ndarray, depth: np.ndarray, poses: np.ndarray, scene: dict,
               intrinsics: Intrinsics) -> tuple[np.ndarray, list[PoseCorrection]]: ...
