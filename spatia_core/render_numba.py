"""The CPU kernel of the scene projection: :mod:`spatia_core.render`'s z-buffer as numba loops.

Same splat rules, the same packed depth/index keys and the same tie order as the torch kernel,
in two passes that touch every point and every pixel once: :func:`zbuffer` walks the points of
the visible culling blocks and keeps the smallest key per pixel; :func:`resolve` turns the keys
into point index, depth and colour. Both read a block-ordered copy of the points
(:meth:`~spatia_core.render.BlockIndex.sorted_points`), so the points of a block are contiguous
and the projection loop vectorises; numba's ``error_model="numpy"`` keeps divisions branch-free.
Arithmetic is float32 in the torch kernel's order, and depth-key ties between points break by
point order in both, so both give the same pixels. Both passes release the GIL, so the node's
other threads run meanwhile, and one view can be split over threads
(:func:`spatia_core.render._splat_numba`): each fills its own z-buffer from a share of the
blocks, :func:`merge` keeps the smallest key over the buffers and :func:`resolve` reads it,
both in row bands in parallel. The
smallest key does not depend on who found it, so the pixels are the same for any thread count.

``numba`` is optional: :data:`AVAILABLE` says whether it imported; the renderer falls back to the
torch kernel without it. Compiled functions are cached on disk (``cache=True``).
"""

from __future__ import annotations

import numpy as np

try:
    import numba
except ImportError:  # the torch kernel serves instead
    numba = None

AVAILABLE = numba is not None
EMPTY = np.iinfo(np.int64).max


def _jit(fn):
    return numba.njit(cache=True, nogil=True, error_model="numpy")(fn) if AVAILABLE else fn


#: points projected per batch: the projection loop vectorises, the splatting loop after it cannot
_CHUNK = 1024


@_jit
def zbuffer(xyz_t, block_start, block_count, blocks, rot, t, params, w, h, max_radius, depth_quant, zbuf):
    """Smallest key ``quantised depth << 32 | j`` over the points ``j`` of the culling blocks
    ``blocks``, per pixel of ``zbuf`` (int64, filled with :data:`EMPTY` here first): its first ``h * w``
    entries are the pixels, the next ``((h + 1) // 2) * ((w + 1) // 2)`` the cells of the 2-pixel
    grid (one write per 2-pixel splat instead of four; :func:`resolve` merges them), the last one
    takes the points drawn nowhere.

    ``xyz_t`` float32 (3, N) world points in block order (block ``b`` holds
    ``block_start[b] : block_start[b] + block_count[b]``); ``rot``, ``t`` float32 camera-to-world
    rotation and translation; ``params`` float32 ``[fx, fy, cx, cy, footprint, near, far]``. A
    point's splat is ``footprint / z`` pixels wide: one pixel up to 1 px, one cell of the 2-pixel
    grid up to 2 px, else a square of side ``2r + 1``, ``r = clamp(ceil((width - 1) / 2), 1,
    max_radius)``, centred on the pixel the point falls in.
    """
    fx, fy, cx, cy, footprint, near, far = params[0], params[1], params[2], params[3], params[4], params[5], params[6]
    one, two, half, huge = np.float32(1.0), np.float32(2.0), np.float32(0.5), np.float32(1e9)
    cxh, cyh = cx + half, cy + half
    w2, h2 = (w + 1) >> 1, (h + 1) >> 1
    trash = zbuf.shape[0] - 1
    zbuf[:] = EMPTY
    xs, ys, zs = xyz_t[0], xyz_t[1], xyz_t[2]
    slot = np.empty(_CHUNK, np.int64)
    key = np.empty(_CHUNK, np.int64)
    radius = np.empty(_CHUNK, np.int64)
    pu0 = np.empty(_CHUNK, np.int64)
    pv0 = np.empty(_CHUNK, np.int64)
    for b in blocks:
        end = block_start[b] + block_count[b]
        for first in range(block_start[b], end, _CHUNK):
            n = min(_CHUNK, end - first)
            for q in range(n):  # branch-free, so that it vectorises
                j = first + q
                dx, dy, dz = xs[j] - t[0], ys[j] - t[1], zs[j] - t[2]
                z = dx * rot[0, 2] + dy * rot[1, 2] + dz * rot[2, 2]
                inv_z = one / z
                u = (dx * rot[0, 0] + dy * rot[1, 0] + dz * rot[2, 0]) * inv_z * fx + cxh
                v = (dx * rot[0, 1] + dy * rot[1, 1] + dz * rot[2, 1]) * inv_z * fy + cyh
                ok = (z > near) & (z < far) & (np.abs(u) < huge) & (np.abs(v) < huge)
                width = inv_z * footprint
                fu = np.int64(np.floor(u if ok else -huge))
                fv = np.int64(np.floor(v if ok else -huge))
                cu, cv = fu >> 1, fv >> 1
                pixel = (fu >= 0) & (fu < w) & (fv >= 0) & (fv < h)
                cell = (cu >= 0) & (cu < w2) & (cv >= 0) & (cv < h2)
                small = ok & (width <= one) & pixel
                mid = ok & (width > one) & (width <= two) & cell
                slot[q] = fv * w + fu if small else (h * w + cv * w2 + cu if mid else trash)
                key[q] = (np.int64(z * depth_quant) << 32) | j
                r = min(max(np.int64(np.ceil((width - one) * half if ok else one)), 1), max_radius)
                radius[q] = r if ok & (width > two) else 0
                pu0[q], pv0[q] = fu, fv
            for q in range(n):
                k, s = key[q], slot[q]
                zbuf[s] = min(zbuf[s], k)
                r = radius[q]
                if r:
                    u0, u1 = max(pu0[q] - r, 0), min(pu0[q] + r + 1, w)
                    for pv in range(max(pv0[q] - r, 0), min(pv0[q] + r + 1, h)):
                        for p in range(pv * w + u0, pv * w + u1):
                            zbuf[p] = min(zbuf[p], k)


@_jit
def merge(zbufs, lo, hi):
    """``zbufs[0][lo:hi]`` = the smallest key over all buffers ``zbufs`` (T, n), one per thread
    that filled a share of the points."""
    first = zbufs[0]
    for i in range(1, zbufs.shape[0]):
        other = zbufs[i]
        for p in range(lo, hi):
            first[p] = min(first[p], other[p])


@_jit
def resolve(zbuf, w, h, y0, y1, order, rgb, inv_quant, index, depth, color, mask):
    """Rows ``y0:y1`` of the view from :func:`zbuffer`'s ``zbuf``: per pixel the point index
    (``order[j]``, -1 where empty), its depth (0), its colour (``rgb[j]``, float32 (N, 3) in
    block order; 0) and whether a point is there into ``index`` int64 (h*w,), ``depth`` float32
    (h*w,), ``color`` float32 (h*w, 3) and ``mask`` bool (h*w,)."""
    w2 = (w + 1) >> 1
    for y in range(y0, y1):
        for x in range(w):
            p = y * w + x
            key = min(zbuf[p], zbuf[h * w + (y >> 1) * w2 + (x >> 1)])
            mask[p] = key != EMPTY
            if key == EMPTY:
                index[p] = -1
                depth[p] = 0.0
                color[p, 0] = color[p, 1] = color[p, 2] = 0.0
                continue
            j = key & 0xFFFFFFFF
            index[p] = order[j]
            depth[p] = np.float32(key >> 32) * inv_quant
            color[p, 0], color[p, 1], color[p, 2] = rgb[j, 0], rgb[j, 1], rgb[j, 2]
