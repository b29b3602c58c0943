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

DEPTH_SOURCES = ("auto", "rendered", "multiview", "mono", "mapanything")
POSE_REFINERS = ("none", "rgbd_odometry", "icp")


def resolve_depth_source(name: str, world_has_depth: bool = True) -> str:
    """The concrete depth source of ``update.depth``: ``auto`` is ``mono`` for a world whose
    images come without depth (a test case without a depth file), else ``rendered``."""
    if name == "auto":
        return "rendered" if world_has_depth else "mono"
    return name


def make_depth_source(update, device="cpu", world_has_depth: bool = True) -> DepthSource:
    """The depth source named by ``update.depth`` (an :class:`~spatia_core.config.UpdateConfig`;
    ``auto`` as :func:`resolve_depth_source` says)."""
    from ..errors import InputError

    name = resolve_depth_source(update.depth, world_has_depth)
    if name == "rendered":
        return RenderedDepth()
    if name == "multiview":
        from .multiview import MultiViewDepth

        return MultiViewDepth(device=device)
    if name == "mono":
        from .mono import MonoDepth

        return MonoDepth(update.depth_checkpoint, device=device)
    if name == "mapanything":
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
           "make_depth_source", "make_pose_refiner", "resolve_depth_source"]
