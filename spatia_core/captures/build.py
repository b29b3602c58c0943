"""From posed photos to a memory: depth for every view, a consistency check, fusion, rendering.

1. Depth: sensor depth where a view has it, else plane-sweep stereo (:class:`MultiViewDepth`)
   among the views, over the depth range the data gives (:mod:`.scale`), at a reduced size, then
   upsampled to the view's size without blending across depth edges.
2. Consistency (:func:`~spatia_core.geometry_update.fusion.check_consistency`): flying pixels at
   depth edges and points the other views contradict are dropped; the others carry a confidence.
3. Fusion into a :class:`SpatialMemory` whose voxel size and depth limits come from the data:
   the voxel is the footprint of one pixel at the median scene depth, and nothing is cut by a
   fixed maximum depth.
4. Rendering (:func:`render_view`): view-ordered compositing (:mod:`.layers`): the nearest
   training view's own points first, the memory over them only where it is clearly nearer, then
   holes filled by :func:`~spatia_core.render_fill.fill_holes_depth_aware`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from ..cameras import backproject
from ..geometry import Intrinsics
from ..geometry_update.fusion import check_consistency, complete_depth, depth_edges, upsample_depth
from ..memory import SpatialMemory
from ..render import render_memory
from .layers import ViewLayer, render_ordered
from .padding import box_mask
from .views import View

log = logging.getLogger(__name__)


@dataclass
class BuildSettings:
    """How a capture becomes a memory (the defaults are the tested ones)."""

    voxel_size: float = 0.0  # voxel edge; 0 = one pixel's footprint at the median scene depth
    voxel_scale: float = 0.5  # multiplies the data-derived voxel size (0.5: splats of one pixel, gaps filled)
    max_depth: float = 0.0  # memory.max_depth; 0 = no cut (the data decides)
    consistency: bool = True  # multi-view geometric consistency check before fusion
    rel_tol: float = 0.01  # consistency: relative depth agreement
    free_tol: float = 0.05  # consistency: relative margin of a free-space violation
    min_agree: int = 1  # consistency: other views that must agree
    edge_rel: float = 0.05  # depth edges spanning more than this (relative) are dropped; 0 = keep
    keep_unverified: bool = False  # keep pixels no other view can check (sensor depth: True)
    complete: bool = False  # fill depth holes by interpolation, kept where no view contradicts them into the memory
    confidence_weight: bool = True  # pixels enter with weight = 1 + agreeing views
    splat_scale: float = 1.25  # render.splat_scale
    fill: str = "depth"  # hole filling: depth (background-first, then push-pull) | pushpull | none
    layers: int = 2  # view-ordered compositing: the nearest views' own layers drawn first (0 = the memory alone)
    override_rel: float = 0.1  # a later layer / the memory draws over an earlier one where nearer by this (relative)
    fallback: bool = True  # where nothing is drawn, the nearest photo warped by its own (then completed) depth
    mvs_size: int = 384  # long side of the plane sweep, pixels
    mvs_planes: int = 128  # most planes of the sweep
    mvs_neighbors: int = 2  # neighbours per view in the sweep
    mvs_min_consistent: int = 1  # the sweep's own neighbour check


@dataclass
class BuiltMemory:
    memory: SpatialMemory
    info: dict = field(default_factory=dict)  # voxel size, views, consistency stats, scene_depth (median, metres)
    layers: list[ViewLayer] = field(default_factory=list)  # per training view: its own fused points (:mod:`.layers`)


def mvs_depths(views: list[View], near_far: tuple[float, float], settings: BuildSettings,
               device: str = "cpu") -> list[np.ndarray]:
    """Plane-sweep depth of every view at its own size (float32 (H, W), 0 = unknown)."""
    from ..geometry_update.multiview import MultiViewDepth

    lo, hi = near_far
    mvs = MultiViewDepth(max_size=settings.mvs_size, min_depth=lo, max_depth=hi, max_planes=settings.mvs_planes,
                         max_neighbors=settings.mvs_neighbors, min_consistent=settings.mvs_min_consistent,
                         min_baseline=0.0, device=device)
    low = mvs.sweep_views([v.rgb for v in views], [(v.pose, v.intrinsics) for v in views], lo, hi,
                          refs=list(range(len(views))))
    out = []
    for v, d in zip(views, low):
        h, w = v.rgb.shape[:2]
        out.append(np.zeros((h, w), np.float32) if d is None else upsample_depth(d, h, w, settings.edge_rel))
    return out


def data_voxel_size(views: list[View], depths: list[np.ndarray]) -> float:
    """The footprint of one pixel at the median depth of the views' depth maps, metres."""
    per_view = [float(np.median(d[d > 0])) / v.intrinsics.fx for v, d in zip(views, depths) if (d > 0).any()]
    if not per_view:
        raise ValueError("no view has any depth: cannot size the voxels")
    return float(np.median(per_view))


def build_memory(views: list[View], depths: list[np.ndarray], settings: BuildSettings,
                 memory: SpatialMemory | None = None) -> BuiltMemory:
    """Fuse ``views`` with their ``depths`` into a new memory (see the module docstring), or into
    ``memory``, cleared and given the voxel size and depth limits of the data."""
    voxel = settings.voxel_size or settings.voxel_scale * data_voxel_size(views, depths)
    far = settings.max_depth if settings.max_depth > 0 else float("inf")
    if memory is None:
        memory = SpatialMemory(voxel_size=voxel, min_depth=0.0, max_depth=far, block_size=max(0.5, 64 * voxel))
    else:
        memory.rescale(voxel, 0.0, far)
    info: dict = {"voxel_size": voxel, "views": len(views)}
    measured = None
    # a padding frame holds no image: no depth there (sensor depth has none; a sweep matches its flat colour)
    depths = [np.where(box_mask(d.shape, v.content_box), d, 0.0).astype(np.float32) for v, d in zip(views, depths)]
    raw_depths = [np.asarray(d, np.float32) for d in depths]  # the layers' own depth, flying pixels out
    if settings.edge_rel > 0:
        raw_depths = [np.where(depth_edges(d, settings.edge_rel).numpy(), 0.0, d).astype(np.float32) for d in raw_depths]
    if settings.complete:  # from the depth without flying pixels, so that they are not interpolated from
        done = [complete_depth(d) for d in raw_depths]
        depths = [np.where(box_mask(d.shape, v.content_box), d, 0.0).astype(np.float32) for v, (d, _) in zip(views, done)]
        measured = [m for _, m in done]
    if settings.consistency:
        res = check_consistency(depths, [v.pose for v in views], [v.intrinsics for v in views], settings.rel_tol,
                                settings.free_tol, settings.min_agree, settings.edge_rel, settings.keep_unverified,
                                measured)
        depths, conf = res.depths, res.confidence
        info["consistency"] = res.stats
    else:
        conf = [(d > 0).astype(np.int32) for d in depths]
    dropped = 0
    layers = []
    for v, d, raw, c in zip(views, depths, raw_depths, conf):
        valid = (d > 0) & (c > 0)
        too_far = valid & (d >= far)
        dropped += int(too_far.sum())
        valid &= ~too_far
        xyz = backproject(d, v.intrinsics, v.pose, valid)
        weight = c[valid].astype(np.float32) if settings.confidence_weight else None
        memory.insert_points(xyz.astype(np.float32), v.rgb[valid], counts=weight)
        own = valid if measured is None else valid & measured[len(layers)]  # completed pixels never occlude
        layers.append(ViewLayer(v, np.where(own, d, 0.0).astype(np.float32), raw))
    info["dropped_beyond_max_depth"] = dropped
    info["voxels"] = len(memory)
    info["scene_depth"] = float(np.median([np.median(l.depth[l.depth > 0]) for l in layers if (l.depth > 0).any()]
                                          or [1.0]))
    if dropped:
        log.warning("%d depth readings beyond max_depth %.3g were not fused", dropped, far)
    return BuiltMemory(memory, info, layers)


def render_view(built: BuiltMemory | SpatialMemory, k: Intrinsics, pose: np.ndarray, settings: BuildSettings) -> dict:
    """``{"rgb": uint8 (H, W, 3) filled, "mask": bool covered, "depth": float32}`` at ``pose``:
    view-ordered compositing when ``built`` has layers and ``settings.layers`` > 0 (:mod:`.layers`),
    else the memory alone; then hole filling (``settings.fill``)."""
    from ..generators.projection import fill_holes
    from ..render_fill import fill_holes_depth_aware

    if isinstance(built, BuiltMemory) and built.layers and settings.layers > 0:
        view, _ = render_ordered(built.memory, built.layers, k, pose, built.info.get("scene_depth", 1.0),
                                 settings.layers, settings.override_rel, settings.fallback, settings.splat_scale)
    else:
        memory = built.memory if isinstance(built, BuiltMemory) else built
        view = render_memory(memory, k, pose, splat_scale=settings.splat_scale)
    rgb, mask, depth = view.rgb, view.mask, view.depth
    if settings.fill == "depth":
        filled = fill_holes_depth_aware(rgb, mask, depth)
    elif settings.fill == "pushpull":
        filled = torch.where(mask[..., None], rgb, fill_holes(rgb, mask))
    else:
        filled = rgb
    out = (filled.clamp(0, 1) * 255 + 0.5).to(torch.uint8)[0].numpy()
    return {"rgb": out, "mask": mask[0].numpy(), "depth": depth[0].numpy()}
