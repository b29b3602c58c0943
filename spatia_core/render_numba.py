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
#: largest quantised depth of a key (int32; 200 km at 0.1 mm steps): farther points clamp to it
MAX_DEPTH_KEY = 2.0e9


@_jit
def zbuffer(xyz_t, block_start, block_count, blocks, rot, t, params, w, h, max_radius, depth_quant, zbuf):
    """Smallest key ``quantised depth << 32 | j`` over the points ``j`` of the culling blocks
    ``blocks``, per pixel of ``zbuf`` (int64, filled with :data:`EMPTY` here first): its first ``h * w``
    entries are the pixels, the next ``((h + 1) // 2) * ((w + 1) // 2)`` the cells of the 2-pixel
    grid (one write per 2-pixel splat instead of four; :func:`resolve` merges them), the last one
    is a slot for the points drawn nowhere (never written).

    ``xyz_t`` float32 (3, N) world points in block order (block ``b`` holds
    ``block_start[b] : block_start[b] + block_count[b]``); ``rot``, ``t`` float32 camera-to-world
    rotation and translation; ``params`` float32 ``[fx, fy, cx, cy, footprint, near, far]``. A
    point's splat is ``footprint / z`` pixels wide: one pixel up to 1 px, one cell of the 2-pixel
    grid up to 2 px, else a square of side ``2r + 1``, ``r = clamp(ceil((width - 1) / 2), 1,
    max_radius)``, centred on the pixel the point falls in. Quantised depths clamp to
    :data:`MAX_DEPTH_KEY`.
    """
    fx, fy, cx, cy, footprint, near, far = params[0], params[1], params[2], params[3], params[4], params[5], params[6]
    one, two, half, huge = np.float32(1.0), np.float32(2.0), np.float32(0.5), np.float32(1e9)
    cxh, cyh = cx + half, cy + half
    w2, h2 = np.int32((w + 1) >> 1), np.int32((h + 1) >> 1)
    w32, h32 = np.int32(w), np.int32(h)
    hw = np.int32(h * w)
    trash = np.int32(zbuf.shape[0] - 1)
    mr = np.int32(max_radius)
    zbuf[:] = EMPTY
    # scalars, not array reads in the loop: numba cannot tell that rot and t do not alias xyz_t,
    # and per-block slices of xyz_t below, so that the projection loop vectorises (4x faster)
    r00, r10, r20, r01, r11, r21 = rot[0, 0], rot[1, 0], rot[2, 0], rot[0, 1], rot[1, 1], rot[2, 1]
    r02, r12, r22 = rot[0, 2], rot[1, 2], rot[2, 2]
    t0, t1, t2 = t[0], t[1], t[2]
    slot = np.empty(_CHUNK, np.int32)
    zq = np.empty(_CHUNK, np.int32)
    radius = np.empty(_CHUNK, np.int32)
    pu0 = np.empty(_CHUNK, np.int32)
    pv0 = np.empty(_CHUNK, np.int32)
    zmax = np.float32(MAX_DEPTH_KEY)
    for b in blocks:
        end = block_start[b] + block_count[b]
        for first in range(block_start[b], end, _CHUNK):
            n = min(_CHUNK, end - first)
            xs, ys, zs = xyz_t[0, first:first + n], xyz_t[1, first:first + n], xyz_t[2, first:first + n]
            for q in range(n):
                dx, dy, dz = xs[q] - t0, ys[q] - t1, zs[q] - t2
                z = dx * r02 + dy * r12 + dz * r22
                inv_z = one / z
                u = (dx * r00 + dy * r10 + dz * r20) * inv_z * fx + cxh
                v = (dx * r01 + dy * r11 + dz * r21) * inv_z * fy + cyh
                ok = (z > near) & (z < far) & (np.abs(u) < huge) & (np.abs(v) < huge)
                width = inv_z * footprint
                fu = np.int32(np.floor(u if ok else -huge))
                fv = np.int32(np.floor(v if ok else -huge))
                cu, cv = fu >> 1, fv >> 1
                pixel = (fu >= 0) & (fu < w32) & (fv >= 0) & (fv < h32)
                cell = (cu >= 0) & (cu < w2) & (cv >= 0) & (cv < h2)
                small = ok & (width <= one) & pixel
                mid = ok & (width > one) & (width <= two) & cell
                slot[q] = fv * w32 + fu if small else (hw + cv * w2 + cu if mid else trash)
                zq[q] = np.int32(min(z * depth_quant, zmax) if ok else zmax)
                r = min(max(np.int32(np.ceil((width - one) * half if ok else one)), np.int32(1)), mr)
                radius[q] = r if ok & (width > two) else 0
                pu0[q], pv0[q] = fu, fv
            for q in range(n):  # int32 above (vectorises without AVX-512), int64 keys here
                k = (np.int64(zq[q]) << 32) | (first + q)
                r = radius[q]
                if r == 0:  # one pixel or cell; off screen and large splats aim at the unused last slot
                    s = slot[q]
                    if s != trash:
                        zbuf[s] = min(zbuf[s], k)
                    continue
                cu, cv = pu0[q], pv0[q]
                # 3x3 and 5x5 squares inside the image written out: loops of 3 or 5 cost twice as much
                if r == 1 and cu >= 1 and cu < w32 - 1 and cv >= 1 and cv < h32 - 1:
                    p = cv * w32 + cu
                    for c in (p - w32, p, p + w32):
                        zbuf[c - 1] = min(zbuf[c - 1], k)
                        zbuf[c] = min(zbuf[c], k)
                        zbuf[c + 1] = min(zbuf[c + 1], k)
                    continue
                if r == 2 and cu >= 2 and cu < w32 - 2 and cv >= 2 and cv < h32 - 2:
                    p = cv * w32 + cu
                    for c in (p - 2 * w32, p - w32, p, p + w32, p + 2 * w32):
                        zbuf[c - 2] = min(zbuf[c - 2], k)
                        zbuf[c - 1] = min(zbuf[c - 1], k)
                        zbuf[c] = min(zbuf[c], k)
                        zbuf[c + 1] = min(zbuf[c + 1], k)
                        zbuf[c + 2] = min(zbuf[c + 2], k)
                    continue
                u0, u1 = max(cu - r, 0), min(cu + r + 1, w32)
                for pv in range(max(cv - r, 0), min(cv + r + 1, h32)):
                    for p in range(pv * w32 + u0, pv * w32 + u1):
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
