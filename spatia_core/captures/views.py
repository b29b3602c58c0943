"""Captures as lists of views in memory: colour, pose, camera and (sensor or estimated) depth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..geometry import Intrinsics
from .base import Capture, load_image
from .padding import Box, content_box


@dataclass
class View:
    """One posed photo at its working resolution."""

    rgb: np.ndarray  # uint8 (H, W, 3)
    pose: np.ndarray  # float64 (4, 4) camera-to-world, OpenCV axes
    intrinsics: Intrinsics  # at H x W
    name: str
    depth: np.ndarray | None = None  # float32 (H, W) metres, 0 = unknown; None: not measured
    content_box: Box | None = None  # the photo inside a constant-colour padding frame (:mod:`.padding`); None: all


def views_from_capture(capture: Capture, max_size: int = 0) -> list[View]:
    """Decode every photo of ``capture`` with its long side at most ``max_size`` (0: full size)."""
    out = []
    for img in capture.images:
        rgb, k = load_image(img, max_size)
        out.append(View(rgb, img.pose, k, img.name, content_box=content_box(rgb)))
    return out


def views_from_rgbd(frames) -> list[View]:
    """:class:`~spatia_core.worlds.rgbd_folder.RGBDFrame` list -> views with sensor depth."""
    return [View(f.rgb, f.pose, f.intrinsics, f.name, f.depth, content_box(f.rgb)) for f in frames]


def nearest_order(poses, pose: np.ndarray, scene_depth: float) -> list[int]:
    """Indices of camera-to-world ``poses`` from the nearest to ``pose`` to the farthest: by
    camera-centre distance plus the viewing-angle difference in radians times ``scene_depth``
    (how far a turn moves the content), so a view that stands close but looks elsewhere comes
    late. Ties keep the input order."""
    scores = []
    for p in poses:
        p = np.asarray(p, np.float64)
        dist = float(np.linalg.norm(p[:3, 3] - pose[:3, 3]))
        angle = float(np.arccos(np.clip(p[:3, 2] @ pose[:3, 2], -1.0, 1.0)))
        scores.append(dist + angle * scene_depth)
    return [int(i) for i in np.argsort(np.asarray(scores), kind="stable")]


def nearest_photo(train: list[View], pose: np.ndarray, scene_depth: float) -> int:
    """Index of the training view nearest to ``pose`` (:func:`nearest_order`)."""
    return nearest_order([v.pose for v in train], pose, scene_depth)[0]
