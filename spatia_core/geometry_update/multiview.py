"""Weight-free multi-view depth: plane-sweep stereo between frames with known poses.

For each reference frame, fronto-parallel planes at depths uniform in inverse depth are swept
through the scene; every neighbour is warped onto the reference image for each plane with the
plane-induced mapping (``grid_sample``), and a windowed zero-mean normalised cross-correlation
(ZNCC) scores the match. Per plane the cost of a pixel is the mean of the best half of the
neighbours' costs (robust to occlusion in some of them). Winner-take-all over the planes with a
parabola fit around the minimum gives a sub-plane inverse depth.

A depth is kept only where

* the image is textured (windowed intensity standard deviation above ``min_texture``),
* the match is good (best ZNCC at least ``min_zncc``) and not at the end of the depth range,
* at least ``min_consistent`` neighbours agree geometrically: the reference point, projected
  into the neighbour, lands on the neighbour's own estimated depth within ``max_rel_diff``
  (the left-right check of two-view stereo, generalised to several views).

The sweep runs at a reduced resolution (long side at most ``max_size`` pixels); inverse depth is
upsampled bilinearly and only where all four contributing low-resolution pixels are valid.
The depth range comes from the memory's rendered depth when the clip shows some of it, else from
``min_depth`` / ``max_depth``. The number of planes follows from the largest disparity span
over the range (about ``plane_step_px`` pixels between planes, within ``[min_planes, max_planes]``).

Where the memory covers a pixel the rendered depth is returned (it is authoritative); the sweep
only fills the rest.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..cameras import scaled_matrix
from ..errors import InputError
from ..geometry import Intrinsics

log = logging.getLogger(__name__)


@dataclass
class _View:
    """One image of the sweep at working resolution."""

    gray: torch.Tensor  # float32 (1, 1, h, w) in [0, 1]
    pose: np.ndarray  # float64 (4, 4) camera-to-world
    k: np.ndarray  # float64 (3, 3) intrinsics at working resolution


def _k_matrix(k: Intrinsics, sx: float, sy: float) -> np.ndarray:
    """3x3 intrinsics scaled to a resized image (``cameras.resized_matrix``'s half-pixel rule)."""
    return scaled_matrix(k, sx, sy)


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over a (2r+1)^2 window of (N, 1, h, w), same size output (edges replicate); separable."""
    k = 2 * r + 1
    x = F.avg_pool2d(F.pad(x, (r, r, 0, 0), mode="replicate"), (1, k), stride=1)
    return F.avg_pool2d(F.pad(x, (0, 0, r, r), mode="replicate"), (k, 1), stride=1)


def _to_gray(rgb: np.ndarray, h: int, w: int, device: torch.device) -> torch.Tensor:
    """uint8 (H, W, 3) -> float32 (1, 1, h, w) luminance in [0, 1], area-resized."""
    t = torch.as_tensor(np.ascontiguousarray(rgb), device=device).float().div_(255.0)
    g = (t[..., 0] * 0.299 + t[..., 1] * 0.587 + t[..., 2] * 0.114)[None, None]
    if g.shape[-2:] != (h, w):
        g = F.interpolate(g, size=(h, w), mode="area")
    return g


def _pixel_rays(k: np.ndarray, h: int, w: int, device) -> torch.Tensor:
    """K^-1 [u v 1]^T for every pixel: float64 (3, h*w)."""
    v, u = torch.meshgrid(torch.arange(h, dtype=torch.float64, device=device),
                          torch.arange(w, dtype=torch.float64, device=device), indexing="ij")
    pix = torch.stack([u.reshape(-1), v.reshape(-1), torch.ones(h * w, dtype=torch.float64, device=device)])
    return torch.as_tensor(np.linalg.inv(k), device=device) @ pix


class MultiViewDepth:
    """Plane-sweep stereo depth for frames with known poses (no learned weights).

    Args:
        max_size: long side of the working resolution, pixels (the sweep runs there).
        window: half size r of the (2r+1)^2 ZNCC window at working resolution.
        min_depth, max_depth: depth range (metres) when the memory gives none.
        min_planes, max_planes, plane_step_px: plane count, from the disparity span.
        min_zncc: photometric check; the best aggregated ZNCC must reach this.
        min_texture: texture check; windowed intensity std (0..1 scale) below this gives 0.
        max_rel_diff: multi-view check; relative depth disagreement still counted consistent.
        min_consistent: neighbours that must agree for a depth to be kept.
        max_neighbors: neighbours per reference frame (nearest cameras with enough baseline).
        min_baseline: neighbours closer than this (metres) are skipped (no parallax).
        device: torch device of the sweep.
    """

    def __init__(self, max_size: int = 320, window: int = 3, min_depth: float = 0.3, max_depth: float = 12.0,
                 min_planes: int = 32, max_planes: int = 128, plane_step_px: float = 1.0, min_zncc: float = 0.6,
                 min_texture: float = 0.01, max_rel_diff: float = 0.03, min_consistent: int = 1,
                 max_neighbors: int = 2, min_baseline: float = 0.005, device="cpu"):
        if not 0 < min_depth < max_depth:
            raise InputError(f"multiview depth range must satisfy 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        if max_size < 32 or window < 1 or min_planes < 3 or max_planes < min_planes or max_neighbors < 1:
            raise InputError("multiview depth: max_size >= 32, window >= 1, 3 <= min_planes <= max_planes, "
                             "max_neighbors >= 1 are required")
        self.max_size = int(max_size)
        self.window = int(window)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.min_planes, self.max_planes, self.plane_step_px = int(min_planes), int(max_planes), float(plane_step_px)
        self.min_zncc, self.min_texture = float(min_zncc), float(min_texture)
        self.max_rel_diff, self.min_consistent = float(max_rel_diff), int(min_consistent)
        self.max_neighbors, self.min_baseline = int(max_neighbors), float(min_baseline)
        self.device = torch.device(device)

    # -- public ------------------------------------------------------------------------------
    def estimate(self, frames: np.ndarray, scene: dict | None, poses: np.ndarray, intrinsics: Intrinsics,
                 history: Sequence = ()) -> np.ndarray:
        """Depth of ``frames`` (T, H, W, 3) uint8 at c2w ``poses`` (T, 4, 4): float32 (T, H, W), 0 = unknown.

        Neighbours are the other frames of the clip and the ``history`` frames (ConditionFrame:
        image, pose, intrinsics). Where ``scene["mask"]`` is set, ``scene["depth"]`` is returned.
        """
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        poses = np.asarray(poses, dtype=np.float64)
        t, hh, ww = frames.shape[:3]
        if poses.shape != (t, 4, 4):
            raise InputError(f"poses must be ({t}, 4, 4), got {poses.shape}")
        if (intrinsics.width, intrinsics.height) != (ww, hh):
            raise InputError(f"intrinsics are {intrinsics.width}x{intrinsics.height}, frames are {ww}x{hh}")
        images = [frames[i] for i in range(t)]
        cams = [(poses[i], intrinsics) for i in range(t)]
        for h in history:
            img = np.asarray(h.image)
            if img.ndim == 3 and img.shape[-1] == 3 and img.dtype == np.uint8:
                images.append(img)
                cams.append((np.asarray(h.pose, dtype=np.float64), h.intrinsics))
        lo, hi = self._depth_range(scene)
        low = self.sweep_views(images, cams, lo, hi, refs=list(range(t)))
        out = np.zeros((t, hh, ww), np.float32)
        for i in range(t):
            if low[i] is not None:
                out[i] = self._upsample(low[i], hh, ww)
        if scene is not None and "mask" in scene and "depth" in scene:
            m = np.asarray(scene["mask"], dtype=bool)
            out = np.where(m, np.asarray(scene["depth"], np.float32), out).astype(np.float32)
        return out

    def sweep_views(self, images: list, cams: list, lo: float, hi: float, refs: list[int]) -> list:
        """Low-resolution depth (float32 torch (h, w), 0 = rejected) for the views ``refs``.

        ``images``: uint8 (H, W, 3) per view; ``cams``: (c2w pose, Intrinsics) per view. Every
        view can serve as a neighbour; views that are a neighbour of a reference get their own
        depth too (for the multi-view consistency check).
        """
        n = len(images)
        nbrs = {i: self._neighbours(i, cams) for i in range(n)}
        need = set(refs)
        if self.min_consistent > 0:
            for i in refs:
                need.update(nbrs[i])
        views = {i: self._view(images[i], *cams[i]) for i in need | {j for i in need for j in nbrs[i]}}
        raw: dict[int, torch.Tensor | None] = {}
        for i in sorted(need):
            raw[i] = self._sweep(views[i], [views[j] for j in nbrs[i]], lo, hi) if nbrs[i] else None
        out = []
        for i in refs:
            d = raw[i]
            if d is None:
                out.append(None)
                continue
            if self.min_consistent > 0:
                agree = torch.zeros_like(d, dtype=torch.int32)
                for j in nbrs[i]:
                    if raw.get(j) is not None:
                        agree += self._consistent(d, views[i], raw[j], views[j]).int()
                d = torch.where(agree >= self.min_consistent, d, torch.zeros_like(d))
            out.append(d)
        return out

    # -- internals ---------------------------------------------------------------------------
    def _depth_range(self, scene: dict | None) -> tuple[float, float]:
        """From the rendered depth of the clip when it shows enough of the memory."""
        if scene is not None and "mask" in scene and "depth" in scene:
            m = np.asarray(scene["mask"], bool) & (np.asarray(scene["depth"]) > 0)
            if m.sum() > 100:
                d = np.asarray(scene["depth"])[m]
                lo, hi = np.percentile(d, [1, 99])
                return max(0.5 * float(lo), 0.05), max(2.0 * float(hi), 0.5 * float(lo) + 0.1)
        return self.min_depth, self.max_depth

    def _neighbours(self, i: int, cams: list) -> list[int]:
        """Up to ``max_neighbors`` views nearest to view ``i`` that have parallax and look alike."""
        pi = cams[i][0]
        cand = []
        for j, (pj, _) in enumerate(cams):
            if j == i:
                continue
            base = float(np.linalg.norm(pj[:3, 3] - pi[:3, 3]))
            cos = float(np.clip(pi[:3, 2] @ pj[:3, 2], -1, 1))
            if base >= self.min_baseline and cos > np.cos(np.deg2rad(60.0)):
                cand.append((base, j))
        cand.sort()
        return [j for _, j in cand[: self.max_neighbors]]

    def _view(self, rgb: np.ndarray, pose: np.ndarray, k: Intrinsics) -> _View:
        hh, ww = rgb.shape[:2]
        s = min(1.0, self.max_size / max(hh, ww))
        h, w = max(int(round(hh * s)), 8), max(int(round(ww * s)), 8)
        if (k.width, k.height) != (ww, hh):
            raise InputError(f"intrinsics are {k.width}x{k.height}, image is {ww}x{hh}")
        return _View(_to_gray(rgb, h, w, self.device), pose, _k_matrix(k, w / ww, h / hh))

    def _plane_count(self, ref: _View, srcs: list[_View], lo: float, hi: float) -> int:
        base = max(float(np.linalg.norm(s.pose[:3, 3] - ref.pose[:3, 3])) for s in srcs)
        span_px = ref.k[0, 0] * base * (1.0 / lo - 1.0 / hi)
        return int(np.clip(np.ceil(span_px / self.plane_step_px), self.min_planes, self.max_planes))

    def _sweep(self, ref: _View, srcs: list[_View], lo: float, hi: float) -> torch.Tensor:
        """Winner-take-all inverse depth with sub-plane refinement; float32 (h, w) depth, 0 = rejected."""
        dev = self.device
        _, _, h, w = ref.gray.shape
        r = self.window
        nd = self._plane_count(ref, srcs, lo, hi)
        inv = torch.linspace(1.0 / hi, 1.0 / lo, nd, dtype=torch.float64, device=dev)  # (D,)
        depths = (1.0 / inv).float()
        rays = _pixel_rays(ref.k, h, w, dev)  # (3, hw) float64

        mu_r = _box(ref.gray, r)
        std_r = (_box(ref.gray * ref.gray, r) - mu_r * mu_r).clamp_min(0).sqrt()
        # per neighbour: p_src(d) = d * a + b in homogeneous source pixels
        warps = []
        for src in srcs:
            rel = np.linalg.inv(src.pose) @ ref.pose  # ref camera -> src camera
            ks = torch.as_tensor(src.k, device=dev)
            a = (ks @ (torch.as_tensor(rel[:3, :3], device=dev) @ rays)).float()  # (3, hw)
            b = (ks @ torch.as_tensor(rel[:3, 3], device=dev)).float()  # (3,)
            warps.append((src, a, b))
        agg = torch.empty((nd, h, w), dtype=torch.float32, device=dev)
        chunk = max(1, int(5e5 // (h * w)))  # planes per batch (~2 MB tensors stay in cache)
        for c0 in range(0, nd, chunk):
            dz = depths[c0:c0 + chunk]
            per_src = []
            for src, a, b in warps:
                _, _, hs, ws = src.gray.shape
                p = dz[:, None, None] * a[None] + b[None, :, None]  # (d, 3, hw)
                z = p[:, 2]
                zs = torch.where(z > 1e-6, z, torch.ones_like(z))
                gx = p[:, 0] / zs * (2.0 / max(ws - 1, 1)) - 1.0
                gy = p[:, 1] / zs * (2.0 / max(hs - 1, 1)) - 1.0
                inside = ((z > 1e-6) & (gx.abs() <= 1) & (gy.abs() <= 1)).float().view(-1, 1, h, w)
                grid = torch.stack([gx, gy], -1).view(-1, h, w, 2)
                warped = F.grid_sample(src.gray.expand(grid.shape[0], -1, -1, -1), grid, mode="bilinear",
                                       padding_mode="border", align_corners=True)  # (d, 1, h, w)
                stats = _box(torch.cat([warped, warped * warped, ref.gray * warped, inside], 1), r)
                mu_s = stats[:, :1]
                var_s = (stats[:, 1:2] - mu_s * mu_s).clamp_min(0)
                cov = stats[:, 2:3] - mu_r * mu_s
                cost = 1.0 - cov / (std_r * var_s.sqrt() + 1e-6)
                seen = stats[:, 3:4] > 0.999
                per_src.append(torch.where(seen, cost, torch.full_like(cost, float("inf")))[:, 0])
            if len(per_src) == 1:
                agg[c0:c0 + chunk] = per_src[0]
                continue
            # mean of the best half of the neighbours that see the point (robust to occlusion)
            srt = torch.sort(torch.stack(per_src), dim=0).values  # (S, d, h, w), inf last
            nvalid = torch.isfinite(srt).sum(0)
            keep = ((nvalid + 1) // 2).clamp_min(1)
            idx = torch.arange(srt.shape[0], device=dev).view(-1, 1, 1, 1)
            total = torch.where(idx < keep[None], srt, torch.zeros_like(srt)).sum(0) / keep
            agg[c0:c0 + chunk] = torch.where(nvalid > 0, total, torch.full_like(total, float("inf")))
        best, arg = agg.min(0)  # (h, w)
        # sub-plane refinement: parabola through the neighbouring planes' costs
        c_lo = agg.gather(0, (arg - 1).clamp(0, nd - 1)[None])[0]
        c_hi = agg.gather(0, (arg + 1).clamp(0, nd - 1)[None])[0]
        den = c_lo - 2 * best + c_hi
        off = torch.where(torch.isfinite(den) & (den > 1e-9), 0.5 * (c_lo - c_hi) / den, torch.zeros_like(den))
        off = torch.nan_to_num(off).clamp(-0.5, 0.5)
        step = (1.0 / lo - 1.0 / hi) / (nd - 1)
        inv_best = (1.0 / hi + (arg.double() + off.double()) * step).float()
        depth = 1.0 / inv_best.clamp_min(1e-9)
        keep_px = ((arg > 0) & (arg < nd - 1) & torch.isfinite(best) & (best <= 1.0 - self.min_zncc)
                   & (std_r[0, 0] >= self.min_texture))
        return torch.where(keep_px, depth, torch.zeros_like(depth))

    def _consistent(self, d: torch.Tensor, ref: _View, d_src: torch.Tensor, src: _View) -> torch.Tensor:
        """True where the neighbour's own depth agrees with the reference depth reprojected into it."""
        dev = self.device
        h, w = d.shape
        rays = _pixel_rays(ref.k, h, w, dev)
        rel = torch.as_tensor(np.linalg.inv(src.pose) @ ref.pose, device=dev)
        pts = rays * d.double().reshape(1, -1)
        ps = rel[:3, :3] @ pts + rel[:3, 3:4]
        z = ps[2]
        p = torch.as_tensor(src.k, device=dev) @ ps
        zs = torch.where(z > 1e-6, z, torch.ones_like(z))
        u = torch.round(p[0] / zs).long()
        v = torch.round(p[1] / zs).long()
        hs, ws = d_src.shape
        inside = (d.reshape(-1) > 0) & (z > 1e-6) & (u >= 0) & (u < ws) & (v >= 0) & (v < hs)
        ds = torch.zeros_like(z)
        ds[inside] = d_src[v[inside], u[inside]].double()
        ok = inside & (ds > 0) & ((ds - z).abs() <= self.max_rel_diff * z)
        return ok.view(h, w)

    @staticmethod
    def _upsample(d: torch.Tensor, hh: int, ww: int) -> np.ndarray:
        """Bilinear upsampling of inverse depth where every contributing low-res pixel is valid."""
        if d.shape == (hh, ww):
            return d.cpu().numpy().astype(np.float32)
        valid = (d > 0).float()[None, None]
        inv = torch.where(d > 0, 1.0 / d.clamp_min(1e-9), torch.zeros_like(d))[None, None]
        num = F.interpolate(inv, size=(hh, ww), mode="bilinear", align_corners=False)
        den = F.interpolate(valid, size=(hh, ww), mode="bilinear", align_corners=False)
        ok = den > 0.999
        out = torch.where(ok, 1.0 / num.clamp_min(1e-9), torch.zeros_like(num))[0, 0]
        return out.cpu().numpy().astype(np.float32)


__all__ = ["MultiViewDepth"]
