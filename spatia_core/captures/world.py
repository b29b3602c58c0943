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
from dataclasses import replace

import numpy as np

from ..errors import InputError
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


#: Capture formats whose units are not metres (SfM, RE10K's SLAM, NeRF datasets' own frames).
NON_METRIC_FORMATS = ("colmap", "llff", "transforms_json", "re10k", "sfm")


def units_note(fmt: str | None, metric_scale: float = 1.0) -> str:
    """What a world's length unit is: ``metres``, or why it is not (for ``spatia info``)."""
    if fmt is None:
        return "metres"
    if metric_scale != 1.0:
        return f"metres ({fmt} units x world.metric_scale {metric_scale:g})"
    if fmt in NON_METRIC_FORMATS:
        what = "structure from motion recovers the scene up to scale" if fmt in ("sfm", "colmap") else "not metres"
        return f"{fmt} units, scale unknown ({what}): set world.metric_scale to metres per unit"
    return "metres"


def capture_info(path: str, metric_scale: float = 1.0) -> dict:
    """A capture's format, photos, units and the reader's notes (runs SfM on a folder of photos
    that has no model yet)."""
    capture = scale_capture(read_capture(path), metric_scale)
    k = capture.images[0].intrinsics
    return {"format": capture.format, "photos": len(capture), "camera": [k.fx, k.fy, k.cx, k.cy, k.width, k.height],
            "sparse_points": 0 if capture.points is None else int(len(capture.points)),
            "metric": capture.metric, "units": units_note(capture.format, metric_scale), "notes": capture.notes}


def scale_capture(capture, factor: float):
    """``capture`` with its positions (poses, points, depth ranges) times ``factor`` (metres per
    capture unit, ``world.metric_scale``); a factor other than 1 makes a non-metric capture metric."""
    from dataclasses import replace

    if factor == 1.0:
        return capture
    if not (np.isfinite(factor) and factor > 0):
        raise InputError(f"world.metric_scale must be a positive number, got {factor}")
    images = []
    for img in capture.images:
        pose = img.pose.copy()
        pose[:3, 3] *= factor
        rng = None if img.depth_range is None else (img.depth_range[0] * factor, img.depth_range[1] * factor)
        images.append(replace(img, pose=pose, depth_range=rng))
    points = None if capture.points is None else capture.points * factor
    notes = [*capture.notes, f"scaled by world.metric_scale={factor:g} (metres per capture unit)"]
    return replace(capture, images=images, points=points, metric=True, notes=notes)


def capture_views_and_depths(path: str, max_size: int, settings: BuildSettings, device: str = "cpu",
                             metric_scale: float = 1.0):
    """``(capture, views, stereo depths, (near, far))`` of the capture at ``path``, its positions
    times ``metric_scale``."""
    capture = scale_capture(read_capture(path), metric_scale)
    views = views_from_capture(capture, max_size)
    near_far = capture_depth_range(capture, views)
    log.info("capture %s (%s, %d photos): depth range %.3g .. %.3g", path, capture.format, len(views), *near_far)
    return capture, views, mvs_depths(views, near_far, settings, device), near_far


def load_capture_world(cfg, memory, device: str = "cpu"):
    """Fill ``memory`` from the capture ``cfg.path`` (a WorldConfig); returns the ``WorldInit``."""
    from ..worlds import RGBDFrame, WorldInit, upright_transform

    settings = BuildSettings()
    capture, views, depths, _ = capture_views_and_depths(cfg.path, cfg.capture_size, settings, device,
                                                         getattr(cfg, "metric_scale", 1.0))
    tf = upright_transform(views[0].pose)
    views = [replace(v, pose=tf @ v.pose) for v in views]
    built = build_memory(views, depths, settings, memory)
    log.info("capture memory: %s", built.info)
    if not capture.metric:
        log.warning("capture %s is in %s units, not metres: the memory has its scale (set world.metric_scale to "
                    "metres per unit)", cfg.path, capture.format)
    frames = [RGBDFrame(v.rgb, d, v.pose, v.intrinsics, v.name) for v, d in zip(views, depths)]
    return WorldInit("capture", frames[0].pose, frames=frames, map_from_source=tf, camera=views[0].intrinsics)
