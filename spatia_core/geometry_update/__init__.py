"""Geometry for new content: depth of generated frames and their alignment to the memory.

Two small interfaces, picked by ``config.update``:

* :class:`DepthSource` gives metric depth for generated frames (``update.depth``);
* :class:`PoseRefiner` aligns generated frames to the memory before they are fused
  (``update.pose_refine``).

Where the memory already covers a pixel its rendered depth is authoritative: the world loop
only fuses pixels the memory does not explain, whatever the depth source says there.
"""

from __future__ import annotations

from .base import DepthSource, PoseCorrection, PoseRefiner, RenderedDepth

DEPTH_SOURCES = ("rendered", "multiview", "mono", "mapanything")
POSE_REFINERS = ("none", "rgbd_odometry", "icp")


def make_depth_source(update, device="cpu") -> DepthSource:
    """The depth source named by ``update.depth`` (an :class:`~spatia_core.config.UpdateConfig`)."""
    from ..errors import InputError

    if update.depth == "rendered":
        return RenderedDepth()
    if update.depth == "multiview":
        from .multiview import MultiViewDepth

        return MultiViewDepth(device=device)
    if update.depth == "mono":
        from .mono import MonoDepth

        return MonoDepth(update.depth_checkpoint, device=device)
    if update.depth == "mapanything":
        from .mapanything import MapAnythingDepth

        return MapAnythingDepth(update.depth_checkpoint, device=device)
    raise InputError(f"unknown depth source {update.depth!r}; choose one of {', '.join(DEPTH_SOURCES)}")


def make_pose_refiner(update, device="cpu") -> PoseRefiner | None:
    """The pose refiner named by ``update.pose_refine``; ``None`` for ``none``."""
    from ..errors import InputError

    if update.pose_refine == "none":
        return None
    if update.pose_refine in ("rgbd_odometry", "icp"):
        from .pose_refine import make_memory_pose_refiner

        return make_memory_pose_refiner(update)
    raise InputError(f"unknown pose refiner {update.pose_refine!r}; choose one of {', '.join(POSE_REFINERS)}")


__all__ = ["DEPTH_SOURCES", "POSE_REFINERS", "DepthSource", "PoseCorrection", "PoseRefiner", "RenderedDepth",
           "make_depth_source", "make_pose_refiner"]
