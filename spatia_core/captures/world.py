"""A capture as a world: read the photos, estimate depth, fuse the memory, start at the first view.

``spatia generate --world path/to/capture`` lands here (``world.source`` ``capture``, or ``auto``
when :func:`~spatia_core.captures.detect_format` recognises the path). The photos are decoded at
``world.capture_size`` (long side); depth comes from plane-sweep stereo over the depth range the
data gives (SfM points, LLFF bounds, else triangulated SIFT matches); the memory gets the voxel
size and depth limits of the data (:func:`~spatia_core.captures.build.build_memory`). The output
camera is the first photo's at that size.
"""

from __future__ import annotations

import logging

import numpy as np

from . import read_capture
from .build import BuildSettings, build_memory, mvs_depths
from .scale import depth_range_from_images, range_from_depths, view_depths
from .views import View, views_from_capture

log = logging.getLogger(__name__)


def capture_depth_range(capture, views: list[View]) -> tuple[float, float]:
    """The depth range of a capture's views, from what its format gives (module docstring)."""
    ranges = [img.depth_range for img in capture.images if img.depth_range is not None]
    if ranges:
        lo, hi = min(r[0] for r in ranges), max(r[1] for r in ranges)
        return lo / 1.5, hi * 1.5
    if capture.points is not None and len(capture.points) >= 10:
        d = np.concatenate([view_depths(capture.points, v.pose, v.intrinsics) for v in views])
        if d.size >= 10:
            return range_from_depths(d)
    return depth_range_from_images([v.rgb for v in views], [(v.pose, v.intrinsics) for v in views])[0]


def capture_views_and_depths(path: str, max_size: int, settings: BuildSettings, device: str = "cpu"):
    """``(capture, views, stereo depths, (near, far))`` of the capture at ``path``."""
    capture = read_capture(path)
    views = views_from_capture(capture, max_size)
    near_far = capture_depth_range(capture, views)
    log.info("capture %s (%s, %d photos): depth range %.3g .. %.3g", path, capture.format, len(views), *near_far)
    return capture, views, mvs_depths(views, near_far, settings, device), near_far


def load_capture_world(cfg, memory, device: str = "cpu"):
    """Fill ``memory`` from the capture ``cfg.path`` (a WorldConfig); returns the ``WorldInit``."""
    from ..worlds import RGBDFrame, WorldInit, upright_transform

    settings = BuildSettings()
    capture, views, depths, _ = capture_views_and_depths(cfg.path, cfg.capture_size, settings, device)
    tf = upright_transform(views[0].pose)
    views = [View(v.rgb, tf @ v.pose, v.intrinsics, v.name) for v in views]
    built = build_memory(views, depths, settings, memory)
    log.info("capture memory: %s", built.info)
    if not capture.metric:
        log.warning("capture %s is in %s units, not metres: the memory has its scale", cfg.path, capture.format)
    frames = [RGBDFrame(v.rgb, d, v.pose, v.intrinsics, v.name) for v, d in zip(views, depths)]
    return WorldInit("capture", frames[0].pose, frames=frames, map_from_source=tf, camera=views[0].intrinsics)
