"""View-ordered compositing: render a capture's view from its nearest photos first, the memory second.

The fused memory mixes every view's points: where views disagree slightly (pose error, depth
noise, exposure), the nearest point wins pixel by pixel and the render is speckled, even at a
training view's own pose. A photo's own points, seen from near its own pose, reproduce that photo
(exactly at its pose). So a view is composited in layers, nearest first
(:func:`render_ordered`):

1. the single-view layer of the nearest training view (:func:`~.views.nearest_order`): its own
   measured points that went into the memory, rendered alone;
2. the layers of the next nearest views, then the whole memory: each draws where nothing is yet
   drawn, and *over* what is drawn only where it is nearer by more than ``override_rel``
   (relative depth), so a surface the nearer photos miss in front still occludes, but depth noise
   and small pose errors do not flip the winner;
3. with ``fallback``, where still nothing is drawn: the nearest photo warped by its own depth
   as it was before the consistency check (flying pixels at depth edges removed), then by that
   depth with its holes completed
   (:func:`~spatia_core.geometry_update.fusion.complete_depth`), each only into empty pixels, so
   interpolated depth never hides measured content and a hole of the memory shows that photo's
   content at a plausible place instead of a blur;
4. (in :func:`~.build.render_view`) the depth-aware hole fill
   (:func:`~spatia_core.render_fill.fill_holes_depth_aware`).

A layer is a depth map of a training view plus the view itself; its points are back-projected
when it is rendered, so keeping layers costs a few float maps per view. The memory is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..cameras import backproject
from ..geometry import Intrinsics
from ..render import SceneProjection, render_memory, render_points
from .padding import box_mask
from .views import View, nearest_order


@dataclass
class ViewLayer:
    """One training view's own points: its photo, pose, camera and fused depth."""

    view: View  # the photo at its working size (rgb, pose, intrinsics)
    depth: np.ndarray  # float32 (H, W): depth of the measured pixels that entered the memory, 0 elsewhere
    raw_depth: np.ndarray | None = None  # float32 (H, W): its own depth before the consistency check (fallback)
    _completed: np.ndarray | None = field(default=None, repr=False)  # raw depth with its holes filled (cached)

    def completed_depth(self) -> np.ndarray:
        """The view's own depth (raw, else fused) with its holes completed (not into a padding
        frame, :mod:`.padding`): float32 (H, W)."""
        if self._completed is None:
            from ..geometry_update.fusion import complete_depth

            done = complete_depth(self.raw_depth if self.raw_depth is not None else self.depth)[0]
            self._completed = np.where(box_mask(done.shape, self.view.content_box), done, 0.0).astype(np.float32)
        return self._completed


def render_layer(layer: ViewLayer, k: Intrinsics, pose: np.ndarray, voxel_size: float, splat_scale: float,
                 part: str = "fused") -> SceneProjection:
    """The points of ``layer`` rendered at ``pose`` with camera ``k``: ``part`` ``fused`` (its
    pixels that entered the memory, measured ones only), ``raw`` (its own depth before the
    consistency check, flying pixels out)
    or ``completed`` (only the pixels :meth:`ViewLayer.completed_depth` filled in)."""
    if part == "fused":
        d = layer.depth
    elif part == "raw":
        d = layer.raw_depth if layer.raw_depth is not None else layer.depth
    else:
        own = layer.raw_depth if layer.raw_depth is not None else layer.depth
        d = np.where(own > 0, 0.0, layer.completed_depth())
    valid = d > 0
    xyz = torch.from_numpy(backproject(d, layer.view.intrinsics, layer.view.pose, valid).astype(np.float32))
    rgb = torch.from_numpy(np.ascontiguousarray(layer.view.rgb[valid]))
    return render_points(xyz, rgb, k, pose, voxel_size, splat_scale=splat_scale)


def fill_only(base: SceneProjection, over: SceneProjection) -> SceneProjection:
    """``over`` drawn into ``base`` only where ``base`` has nothing."""
    return composite(base, SceneProjection(over.rgb, over.depth, over.mask & ~base.mask, over.index), 0.0)


def composite(base: SceneProjection | None, over: SceneProjection, override_rel: float) -> SceneProjection:
    """``over`` drawn into ``base`` where ``base`` is empty or ``over`` is nearer by more than
    ``override_rel`` of ``base``'s depth (see the module docstring)."""
    if base is None:
        return over
    take = over.mask & (~base.mask | (over.depth < base.depth * (1.0 - override_rel)))
    return SceneProjection(rgb=torch.where(take[..., None], over.rgb, base.rgb),
                           depth=torch.where(take, over.depth, base.depth), mask=base.mask | over.mask,
                           index=torch.where(take, over.index, base.index))  # the drawing layer's index


def render_ordered(memory, layers: list[ViewLayer], k: Intrinsics, pose: np.ndarray, scene_depth: float,
                   n_layers: int = 2, override_rel: float = 0.1, fallback: bool = True,
                   splat_scale: float = 1.25) -> tuple[SceneProjection, dict]:
    """The view-ordered composite at ``pose`` (module docstring, steps 1-3) and what each step
    drew: ``{"order": nearest layer indices, "layer_px", "memory_px", "fallback_px"}`` (pixels)."""
    order = nearest_order([l.view.pose for l in layers], pose, scene_depth)[:max(0, n_layers)] if layers else []
    out, info = None, {"order": order}
    vs = memory.voxel_size
    for i in order:
        out = composite(out, render_layer(layers[i], k, pose, vs, splat_scale), override_rel)
    info["layer_px"] = int(out.mask.sum()) if out is not None else 0
    mem = render_memory(memory, k, pose, splat_scale=splat_scale)
    before = out.mask.clone() if out is not None else torch.zeros_like(mem.mask)
    out = composite(out, mem, override_rel)
    info["memory_px"] = int((out.mask & ~before).sum())
    if fallback and order:  # into what is left: the nearest photo by its own depth, then by its completed depth
        before = out.mask.clone()
        for part in ("raw", "completed"):
            out = fill_only(out, render_layer(layers[order[0]], k, pose, vs, splat_scale, part))
        info["fallback_px"] = int((out.mask & ~before).sum())
    return out, info


__all__ = ["ViewLayer", "composite", "fill_only", "render_layer", "render_ordered"]
