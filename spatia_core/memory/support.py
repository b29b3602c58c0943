"""Free-space evidence against the memory: voxels a new observation sees through lose support.

When a frame is fused at a pose the memory was rendered at, each covered pixel names its front
voxel (the render's ``index``) and that voxel's depth along the ray (the render's ``depth``). If
the frame's own depth there is clearly *farther*, ``d > z (1 + rel_tol) + abs_tol``, the camera
saw through the voxel: free space where the memory says a surface is (a floater, a ghost of
something that moved, a wrong depth fused earlier).

A voxel covers several pixels (splats), and at silhouettes a splat overreaches onto background,
so one voxel's verdict is the majority of its pixels that can vote: it *loses support* in this
frame when more of them see through it than not. Nearer depth (something in front) is no
evidence against the voxel. :meth:`SpatialMemory.insert_frame` then takes one observation from
the voxel instead of adding one (its count is first capped at ``max_weight``, so that a voxel
seen very often is not immortal) and removes it at zero.

With the ``projection`` backend the frame's depth *is* the rendered depth where the memory
covers a pixel, so nothing is ever seen through and the closed loop stays exact.
"""

from __future__ import annotations

import torch


def through_voxels(index: torch.Tensor, depth: torch.Tensor, rendered: torch.Tensor, rel_tol: float, abs_tol: float,
                   voting: torch.Tensor | None = None) -> torch.Tensor:
    """Voxel indices (int64, unique) that lose support in this frame.

    ``index`` int64 (H, W) front voxel per pixel (-1: none), ``rendered`` float (H, W) its depth,
    ``depth`` float (H, W) the new observation (0: none), ``voting`` bool (H, W) pixels allowed
    to vote (e.g. not dynamic; default all).
    """
    idx = index.reshape(-1)
    d = depth.reshape(-1).to(rendered.dtype)
    z = rendered.reshape(-1)
    can = (idx >= 0) & (z > 0)  # d > 0 follows from d > z (1 + rel_tol) + abs_tol
    if voting is not None:
        can &= voting.reshape(-1)
    if not bool((can & (d > z * (1.0 + rel_tol) + abs_tol)).any()):  # the common case: nothing seen through
        return idx.new_zeros(0)
    can &= d > 0
    p = can.nonzero(as_tuple=True)[0]
    through = d[p] > z[p] * (1.0 + rel_tol) + abs_tol
    ids, inv = torch.unique(idx[p], return_inverse=True)
    n_through = torch.zeros(ids.numel(), dtype=torch.int64, device=idx.device).index_add_(0, inv, through.long())
    n_all = torch.bincount(inv, minlength=ids.numel())
    return ids[2 * n_through > n_all]


__all__ = ["through_voxels"]
