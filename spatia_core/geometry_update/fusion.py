"""Depth-map fusion that agrees with itself: multi-view geometric consistency before fusing.

The classic depth-map fusion test (as in COLMAP's and Gipuma's fusion): a pixel of view ``i``
with depth ``d`` is a world point; projected into another view ``j`` it lands on pixel ``q`` at
depth ``z``. View ``j`` *agrees* when its own depth at ``q`` is within ``rel_tol * z`` of ``z``;
it *contradicts* (free-space violation) when its depth there is clearly larger, ``d_j > z (1 +
free_tol)``: ``j`` looked through the point, so the point is a floater. A pixel survives when at
least ``min_agree`` views agree and no more views contradict it than agree. Pixels that no other
view can check (outside every other view, or where no other view has depth) are kept only with
``keep_unverified`` (sensor depth: yes; stereo depth: no). The number of views that agree plus
one is the pixel's confidence, the weight it enters the memory with.

Completed pixels (``measured`` False: depth interpolated into a hole by :func:`complete_depth`)
are kept only where no other view contradicts them, with confidence 1: they give colour a plausible
place where no view measured depth (sensor holes, untextured walls, slanted ground), never in
front of what another view saw.

Depth discontinuities are removed first: where a pixel's 3x3 neighbourhood spans more than
``edge_rel`` in relative depth, the pixel is a mix of foreground and background (a flying pixel
of a depth sensor, a bilinear blend of an upsampled stereo map) and is dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..cameras import backproject, pixel_index, project
from ..geometry import Intrinsics


@dataclass
class ConsistencyResult:
    """Per view: the depth that survived (float32 (H, W), 0 = dropped or unknown) and its confidence."""

    depths: list[np.ndarray]
    confidence: list[np.ndarray]  # int32 (H, W): 1 + agreeing views where kept, 0 elsewhere
    stats: dict  # pixels in, dropped at edges, dropped as inconsistent, kept unverified


def depth_edges(depth: np.ndarray | torch.Tensor, edge_rel: float = 0.05) -> torch.Tensor:
    """bool (H, W): valid pixels whose 3x3 valid neighbourhood spans max/min > 1 + ``edge_rel``."""
    d = torch.as_tensor(np.asarray(depth, np.float32) if not torch.is_tensor(depth) else depth).float()
    valid = d > 0
    big = torch.where(valid, d, torch.zeros_like(d))[None, None]
    small = torch.where(valid, d, torch.full_like(d, float("inf")))[None, None]
    hi = F.max_pool2d(big, 3, stride=1, padding=1)[0, 0]
    lo = -F.max_pool2d(-small, 3, stride=1, padding=1)[0, 0]
    return valid & (hi > lo * (1.0 + edge_rel))


def _world_points(depth: torch.Tensor, k: Intrinsics, pose: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Valid pixel indices (int64 (M,)) and their world points float64 (M, 3)."""
    flat = depth.reshape(-1)
    idx = (flat > 0).nonzero(as_tuple=True)[0]
    return idx, backproject(depth.double(), k, torch.as_tensor(pose, dtype=torch.float64), depth > 0)


def _lookup(points: torch.Tensor, depth: torch.Tensor, k: Intrinsics, pose: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth of ``points`` in view (``pose``, ``k``) and that view's own depth at the nearest pixel
    (:func:`~spatia_core.cameras.pixel_index`, 0 outside the image or where it has none)."""
    uv, z = project(points, torch.as_tensor(pose, dtype=torch.float64), k.matrix())
    front = z > 1e-9
    q = pixel_index(torch.where(front[:, None], uv, torch.zeros_like(uv)))
    u, v = q[:, 0], q[:, 1]
    h, w = depth.shape
    inside = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    own = torch.zeros_like(z)
    ii = inside.nonzero(as_tuple=True)[0]
    own[ii] = depth[v[ii], u[ii]].double()
    return z, own


def check_consistency(depths: list, poses: list, intrinsics: list[Intrinsics], rel_tol: float = 0.01,
                      free_tol: float = 0.05, min_agree: int = 1, edge_rel: float = 0.05,
                      keep_unverified: bool = False, measured: list | None = None) -> ConsistencyResult:
    """Filter the depth maps of posed views against each other (see the module docstring).

    ``depths``: float32 (H, W) metres per view (0 = unknown); ``poses``: camera-to-world (4, 4);
    ``intrinsics``: per view, at its depth map's size. ``edge_rel`` <= 0 skips the edge test.
    ``measured``: bool (H, W) per view, False where the depth was completed (not checked against
    edges; kept where uncontradicted); None: all measured. Other views are checked against the
    measured depth only.
    """
    n = len(depths)
    ds = [torch.as_tensor(np.asarray(d, np.float32)) for d in depths]
    meas = None if measured is None else [torch.as_tensor(np.asarray(m, bool)) for m in measured]
    if meas is not None:  # completed pixels are candidates, never evidence
        cand = ds
        ds = [torch.where(m, d, torch.zeros_like(d)) for d, m in zip(ds, meas)]
    if edge_rel > 0:
        edges = [depth_edges(d, edge_rel) for d in ds]
        ds = [torch.where(e, torch.zeros_like(d), d) for d, e in zip(ds, edges)]
        n_edges = int(sum(int(e.sum()) for e in edges))
    else:
        n_edges = 0
    out_d, out_c = [], []
    n_in = n_bad = n_unver = 0
    for i in range(n):
        if meas is not None:
            own_i = torch.where(meas[i], ds[i], torch.where(cand[i] > 0, cand[i], torch.zeros_like(ds[i])))
        else:
            own_i = ds[i]
        idx, pts = _world_points(own_i, intrinsics[i], poses[i])
        agree = torch.zeros(idx.numel(), dtype=torch.int32)
        contra = torch.zeros(idx.numel(), dtype=torch.int32)
        checked = torch.zeros(idx.numel(), dtype=torch.bool)
        for j in range(n):
            if j == i:
                continue
            z, own = _lookup(pts, ds[j], intrinsics[j], poses[j])
            has = own > 0
            checked |= has
            agree += (has & ((own - z).abs() <= rel_tol * z)).int()
            contra += (has & (own > z * (1.0 + free_tol))).int()
        keep = (agree >= min_agree) & (contra <= agree)
        if keep_unverified:
            unver = ~checked
            keep |= unver
            n_unver += int(unver.sum())
        if meas is not None:
            completed = ~meas[i].reshape(-1)[idx]
            keep = torch.where(completed, contra == 0, keep)
            agree = torch.where(completed, torch.zeros_like(agree), agree)
        n_in += idx.numel()
        n_bad += int((~keep).sum())
        h, w = ds[i].shape
        flat = torch.zeros(h * w)
        conf = torch.zeros(h * w, dtype=torch.int32)
        kept = idx[keep]
        flat[kept] = own_i.reshape(-1)[kept]
        conf[kept] = agree[keep] + 1
        out_d.append(flat.view(h, w).numpy())
        out_c.append(conf.view(h, w).numpy())
    stats = {"pixels_in": n_in + n_edges, "dropped_edges": n_edges, "dropped_inconsistent": n_bad,
             "kept_unverified": n_unver}
    return ConsistencyResult(out_d, out_c, stats)


def complete_depth(depth: np.ndarray, max_rel_span: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Fill the holes of a depth map by push-pull interpolation of inverse depth (the projection
    backend's :func:`~spatia_core.generators.projection.fill_holes`). Returns ``(completed float32
    (H, W), measured bool (H, W))``; all zero when the map has no depth at all."""
    from ..generators.projection import fill_holes

    d = np.asarray(depth, np.float32)
    measured = d > 0
    if not measured.any() or measured.all():
        return d.copy(), measured
    inv = torch.as_tensor(np.where(measured, 1.0 / np.maximum(d, 1e-12), 0.0).astype(np.float32))
    filled = fill_holes(inv[None, :, :, None].expand(1, *inv.shape, 3).contiguous(), torch.as_tensor(measured)[None])
    inv_f = filled[0, :, :, 0].numpy()
    out = np.where(measured, d, 1.0 / np.maximum(inv_f, 1e-12)).astype(np.float32)
    return out, measured


def upsample_depth(depth: np.ndarray | torch.Tensor, height: int, width: int, edge_rel: float = 0.05) -> np.ndarray:
    """Low-resolution depth to ``height`` x ``width``: bilinear in inverse depth (pixel centres
    aligned), only where every contributing low-resolution pixel is valid and none lies on a depth
    edge (:func:`depth_edges`), so no pixel blends a foreground and a background."""
    d = torch.as_tensor(np.asarray(depth, np.float32) if not torch.is_tensor(depth) else depth).float()
    if edge_rel > 0:
        d = torch.where(depth_edges(d, edge_rel), torch.zeros_like(d), d)
    if tuple(d.shape) == (height, width):
        return d.numpy()
    valid = (d > 0).float()[None, None]
    inv = torch.where(d > 0, 1.0 / d.clamp_min(1e-12), torch.zeros_like(d))[None, None]
    num = F.interpolate(inv, size=(height, width), mode="bilinear", align_corners=False)
    den = F.interpolate(valid, size=(height, width), mode="bilinear", align_corners=False)
    out = torch.where(den > 0.999, 1.0 / num.clamp_min(1e-12), torch.zeros_like(num))[0, 0]
    return out.numpy().astype(np.float32)


__all__ = ["ConsistencyResult", "check_consistency", "complete_depth", "depth_edges", "upsample_depth"]
