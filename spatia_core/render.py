"""Scene projection: render the spatial memory into camera views (RGB, metric depth, visibility).

Each memory point is a voxel of side ``voxel_size`` whose footprint on screen is
``w = splat_scale * voxel_size * f / z`` pixels. Far points (``w <= 1``) take one pixel; points
with ``1 < w <= 2`` take one cell of a 2-pixel grid (expanded to full resolution); nearer points
are drawn as exact squares of side ``2r + 1``, ``r = ceil((w - 1) / 2) <= max_radius``, centred
on their projection. Neighbouring voxels of a surface therefore overlap on screen: surfaces come
out closed and nothing behind a wall shows through its gaps. Large squares cost at most the
screen area they cover, since only near points get them. Depth tests use one ``scatter_reduce(amin)`` over
keys packing quantised depth (high bits) and point index (low bits). Before projecting, coarse
blocks of the memory are culled against the view frustum; the points of the blocks that survive
a slightly wider frustum are gathered once and reused while later views stay inside it and the
points do not change (nearby poses of a moving camera). The per-point projection is one
expression that ``torch.compile`` fuses into a single loop (``compile=True``; eager otherwise,
or when no compiler is available). Pure torch: runs on CPU and CUDA.

On CPU the same z-buffer runs by default as numba loops instead (:mod:`spatia_core.render_numba`,
``kernel="auto"``), with identical output: they read a block-ordered copy of the points and
release the GIL (640x480 view of a 1.5M-voxel room: 12.6 ms against 31-34 ms for the torch kernel,
one core). ``kernel="torch"`` keeps the torch kernel everywhere.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch

from . import render_numba
from .errors import BackendUnavailableError, InputError
from .geometry import Intrinsics
# BlockIndex and as_rgb_float live with the memory; re-exported here for existing imports
from .memory.blocks import BlockIndex, _gather, _visible_blocks  # noqa: F401
from .memory.colors import as_rgb_float  # noqa: F401

log = logging.getLogger(__name__)
_DEPTH_QUANT = 1e4  # depth keys in 0.1 mm steps (rendered depth has this resolution)
_EMPTY = torch.iinfo(torch.int64).max
#: Large splats of one radius are expanded point by point while that writes fewer than this many
#: entries per pixel; beyond, their centres are z-buffered and grown by a square min-filter.
_EXPAND_LIMIT = 2.0


@dataclass
class SceneProjection:
    """Rendered views of the memory, batch of B cameras of H x W pixels."""

    rgb: torch.Tensor  # float32 (B, H, W, 3) in [0, 1]; 0 where not visible
    depth: torch.Tensor  # float32 (B, H, W) metres; 0 where not visible
    mask: torch.Tensor  # bool (B, H, W) visibility: a memory point covers the pixel
    index: torch.Tensor  # int64 (B, H, W) index of the visible point, -1 where none

    def coverage(self) -> torch.Tensor:
        """Share of covered pixels per view, float (B,)."""
        return self.mask.flatten(1).float().mean(1)

    def numpy(self) -> dict[str, np.ndarray]:
        """``rgb`` uint8, ``depth`` float32, ``mask`` bool arrays."""
        return {
            "rgb": (self.rgb * 255).add_(0.5).clamp_(0, 255).to(torch.uint8).cpu().numpy(),  # = round(clamp(rgb, 0, 1) * 255)
            "depth": self.depth.cpu().numpy(),
            "mask": self.mask.cpu().numpy(),
        }


def _project(pts, rot, t, cam_params, w: int, h: int, trash: int, max_radius: int):
    """Per-point projection, written as one fusable expression (see :func:`_kernel`).

    ``cam_params`` = float32 ``[fx, fy, cx, cy, footprint, near, far]`` (a tensor, so that the
    compiled kernel is not specialised on their values). Returns, for the points ``pts``:
    z-buffer slot (``trash`` when not drawn as a small splat), packed depth/index key,
    large-splat radius (int8, 0: not a large splat) and its integer centre ``ub``, ``vb``.
    """
    fx, fy, cx, cy, footprint, near, far = cam_params.unbind(0)
    # R^T (x - t) written out per axis: fuses into the loop (a (N, 3) @ (3, 3) matmul does not)
    dx, dy, dz = pts[:, 0] - t[0], pts[:, 1] - t[1], pts[:, 2] - t[2]
    z = dx * rot[0, 2] + dy * rot[1, 2] + dz * rot[2, 2]
    inv_z = 1.0 / torch.maximum(z, near)
    u = (dx * rot[0, 0] + dy * rot[1, 0] + dz * rot[2, 0]) * inv_z * fx + (cx + 0.5)  # pixel centres at integers
    v = (dx * rot[0, 1] + dy * rot[1, 1] + dz * rot[2, 1]) * inv_z * fy + (cy + 0.5)
    width_px = inv_z * footprint
    front = (z > near) & (z < far)
    # small splats (<= 2 px): one cell of the 1 px grid, or of the 2 px grid when wider than 1 px
    shift = (width_px > 1.0).to(torch.int64)
    cu = torch.floor(u).to(torch.int64) >> shift
    cv = torch.floor(v).to(torch.int64) >> shift
    lw = (w + shift) >> shift
    lh = (h + shift) >> shift
    small = front & (width_px <= 2.0) & (cu >= 0) & (cv >= 0) & (cu < lw) & (cv < lh)
    pix = torch.where(small, shift * (h * w) + cv * lw + cu, trash)
    zq = (z.clamp(min=0.0) * _DEPTH_QUANT).clamp(max=render_numba.MAX_DEPTH_KEY)  # as the numba kernel
    key = zq.to(torch.int64) << 32 | torch.arange(pts.shape[0], device=pts.device)
    # large splats: radius r of a (2r + 1) square centred at (ub, vb); 0 for everything else
    r = torch.ceil((width_px - 1) * 0.5).clamp(1, max_radius).to(torch.int32)
    ub, vb = torch.floor(u).to(torch.int32), torch.floor(v).to(torch.int32)
    big = front & (width_px > 2.0) & (ub + r >= 0) & (ub - r < w) & (vb + r >= 0) & (vb - r < h)
    return pix, key, torch.where(big, r, 0).to(torch.int8), ub, vb


def _resolve(zbuf, sel_ext, squares, rgb_ext, h: int, w: int, h2: int, w2: int):
    """Nearest point per pixel from the z-buffer levels and the dilated ``squares`` (h, w):
    (index into all points, -1; depth, 0; colour float (h*w, 3), 0). ``sel_ext`` and ``rgb_ext``
    are the index and colour of every projected point plus a last entry for empty pixels (-1,
    black), see :func:`_gather`. Plain torch ops (they release the GIL; compiling gains nothing)."""
    coarse = zbuf[h * w : h * w + h2 * w2].view(h2, 1, w2, 1).expand(h2, 2, w2, 2).reshape(2 * h2, 2 * w2)[:h, :w]
    best = torch.minimum(torch.minimum(zbuf[: h * w].view(h, w), coarse), squares).reshape(-1)
    hit = best != _EMPTY
    local = torch.where(hit, best & 0xFFFFFFFF, sel_ext.shape[0] - 1)
    depth = torch.where(hit, (best >> 32).to(torch.float32) * (1.0 / _DEPTH_QUANT), 0.0)
    return sel_ext[local], depth, rgb_ext.index_select(0, local)


def _shift(x: torch.Tensor, k: int, dim: int) -> torch.Tensor:
    """``out[i] = x[i + k]`` along ``dim``, empty where ``i + k`` falls outside."""
    out = torch.full_like(x, _EMPTY)
    n = x.shape[dim]
    if abs(k) < n:
        src = x.narrow(dim, max(k, 0), n - abs(k))
        out.narrow(dim, max(-k, 0), n - abs(k)).copy_(src)
    return out


def _window_min(x: torch.Tensor, r: int, dim: int) -> torch.Tensor:
    """Minimum over the window ``[i - r, i + r]`` along ``dim`` (log-step doubling)."""
    pad = list(x.shape)
    pad[dim] = r
    empty = torch.full(pad, _EMPTY, dtype=x.dtype, device=x.device)
    span = torch.cat([empty, x, empty], dim)  # index j here is i = j - r of x
    p = 1 << ((2 * r + 1).bit_length() - 1)  # largest power of two <= window length
    k = 1
    while k < p:  # span[j] = min over [j, j + 2k - 1]
        span = torch.minimum(span, _shift(span, k, dim))
        k *= 2
    n = x.shape[dim]  # window of i = [i - r, i - r + p - 1] U [i + r - p + 1, i + r]
    return torch.minimum(span.narrow(dim, 0, n), span.narrow(dim, 2 * r - p + 1, n))


def _square_min(img: torch.Tensor, r: int) -> torch.Tensor:
    """Minimum over the (2r + 1) x (2r + 1) square around each pixel of an int64 image."""
    return _window_min(_window_min(img, r, 1), r, 0)


_compiled: dict[tuple[str, str], object] = {}


def _kernel(fn, device: torch.device, compile: bool):
    """``fn`` compiled by torch.compile (fused loops) when possible, else ``fn`` itself."""
    if not compile or os.environ.get("SPATIA_NO_COMPILE"):
        return fn
    key = (fn.__name__, device.type)
    if key not in _compiled:
        try:
            _compiled[key] = torch.compile(fn, dynamic=True)
        except Exception as exc:  # no compiler: stay correct, just slower
            log.warning("torch.compile unavailable (%s); rendering without it", exc)
            _compiled[key] = fn
    return _compiled[key]


def _run(fn, device: torch.device, compile: bool, *args):
    try:
        return _kernel(fn, device, compile)(*args)
    except Exception as exc:  # a compiler that fails at run time: fall back for good
        if not compile or _compiled.get((fn.__name__, device.type)) is fn:
            raise
        log.warning("compiled %s failed (%s); rendering without torch.compile", fn.__name__, exc)
        _compiled[(fn.__name__, device.type)] = fn
        return fn(*args)


def _splat_one(
    xyz: torch.Tensor,
    rgb: torch.Tensor,
    pose: torch.Tensor,
    k: Intrinsics,
    voxel_size: float,
    splat_scale: float,
    max_radius: int,
    near: float,
    far: float,
    blocks: BlockIndex | None,
    compile: bool = True,
    cache_token=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Z-buffer one camera: (point index int64 (H*W,), -1 where empty; depth float (H*W,), 0 where
    empty; colour float (H*W, 3) from ``rgb`` float (N, 3), 0 where empty)."""
    h, w = k.height, k.width
    dev = xyz.device
    if blocks is not None:
        sel_ext, pts, rgb_ext = blocks.culled(xyz, rgb, pose, k, near, far, cache_token)
    else:
        sel_ext, pts, rgb_ext = _gather(torch.arange(xyz.shape[0], device=dev), xyz, rgb)
    if pts.shape[0] == 0:
        return (torch.full((h * w,), -1, dtype=torch.int64, device=dev), torch.zeros(h * w, device=dev),
                torch.zeros((h * w, 3), device=dev))
    h2, w2 = (h + 1) // 2, (w + 1) // 2
    trash = h * w + h2 * w2  # one extra slot takes every point that is not a small splat
    footprint = splat_scale * voxel_size * max(k.fx, k.fy)
    cam_params = torch.tensor([k.fx, k.fy, k.cx, k.cy, footprint, near, min(far, 1e30)], dtype=torch.float32, device=dev)
    args = (pts, pose[:3, :3].contiguous(), pose[:3, 3].contiguous(), cam_params, w, h, trash, max_radius)
    pix, key, radius, ub, vb = _run(_project, dev, compile, *args)
    pix_parts, key_parts = [pix], [key]
    # large splats: squares of side 2r + 1 centred on the point. Per radius, either each point is
    # expanded into its pixels (few points: the near ones at fine voxels), or the centres are
    # z-buffered in a padded image of their own that a square min-filter then grows (many points).
    big = radius.nonzero(as_tuple=True)[0]
    dilated = []  # (radius, offset of its padded image in zbuf)
    size = trash + 1
    if big.numel():
        r_big, ub, vb, key_big = radius[big].long(), ub[big].long(), vb[big].long(), key[big]
        counts = torch.bincount(r_big, minlength=max_radius + 1).tolist()
        for r in (r for r, n in enumerate(counts) if n):
            sel_r = (r_big == r).nonzero(as_tuple=True)[0]
            if counts[r] * (2 * r + 1) ** 2 > _EXPAND_LIMIT * h * w:
                wp = w + 2 * r
                pix_parts.append(size + (vb[sel_r] + r) * wp + ub[sel_r] + r)
                key_parts.append(key_big[sel_r])
                dilated.append((r, size))
                size += (h + 2 * r) * wp
                continue
            off = torch.arange(-r, r + 1, device=dev)
            pu = (ub[sel_r, None] + off.repeat(off.numel())).reshape(-1)
            pv = (vb[sel_r, None] + off.repeat_interleave(off.numel())).reshape(-1)
            kb = key_big[sel_r, None].expand(-1, off.numel() ** 2).reshape(-1)
            inside = (pu >= 0) & (pu < w) & (pv >= 0) & (pv < h)
            pix_parts.append(torch.where(inside, pv * w + pu, trash))
            key_parts.append(kb)
    zbuf = torch.full((size,), _EMPTY, dtype=torch.int64, device=dev)
    for pix_part, key_part in zip(pix_parts, key_parts):  # amin: order-free, and no concatenated copy
        zbuf.scatter_reduce_(0, pix_part, key_part, reduce="amin")
    squares = torch.full((h, w), _EMPTY, dtype=torch.int64, device=dev)
    for r, start in dilated:
        padded = zbuf[start : start + (h + 2 * r) * (w + 2 * r)].view(h + 2 * r, w + 2 * r)
        squares = torch.minimum(squares, _square_min(padded, r)[r : r + h, r : r + w])
    return _resolve(zbuf, sel_ext, squares, rgb_ext, h, w, h2, w2)


KERNELS = ("auto", "numba", "torch")


def _use_numba(kernel: str, device: torch.device) -> bool:
    """Whether the numba kernel renders on ``device`` (see :data:`KERNELS`)."""
    if kernel not in KERNELS:
        raise InputError(f"render kernel {kernel!r} is not one of {', '.join(KERNELS)}")
    if kernel == "numba" and device.type != "cpu":
        raise InputError(f"the numba render kernel runs on CPU only, the memory is on {device}")
    if kernel == "numba" and not render_numba.AVAILABLE:
        raise BackendUnavailableError("render kernel 'numba' needs the numba package (pip install numba)")
    return kernel != "torch" and device.type == "cpu" and render_numba.AVAILABLE


#: a view is split over threads only when each gets at least this many visible points
_POINTS_PER_THREAD = 50_000
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def render_threads(threads: int = 0) -> int:
    """Threads one CPU view is split over: ``threads``, or for 0 one per core this process may run
    on, at most 4 (the z-buffer passes are memory-bound beyond)."""
    if threads < 0:
        raise InputError(f"render threads must be >= 0, got {threads}")
    if threads:
        return int(threads)
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(cores, 4))


def _pool() -> ThreadPoolExecutor:
    """The renderer's worker threads, shared by all views (the calling thread does one share)."""
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="spatia-render")
        return _POOL


_SCRATCH = threading.local()


def _zbuffers(threads: int, n: int) -> np.ndarray:
    """(threads, n) int64 z-buffers of the calling thread, kept between its views: a fresh 3 MB
    array per view costs page faults on every frame. The kernel fills them."""
    z = getattr(_SCRATCH, "zbufs", None)
    if z is None or z.shape != (threads, n):
        z = _SCRATCH.zbufs = np.empty((threads, n), np.int64)
    return z


def _in_parallel(tasks) -> None:
    """Run the callables ``tasks``: all but the first on the pool, the first here; re-raises."""
    futures = [_pool().submit(t) for t in tasks[1:]]
    try:
        tasks[0]()
    finally:
        for f in futures:
            f.result()


def _splat_numba(xyz_t: np.ndarray, rgb: np.ndarray, order: np.ndarray, blocks: BlockIndex | None,
                 pose: torch.Tensor, k: Intrinsics, voxel_size: float, splat_scale: float, max_radius: int, near: float,
                 far: float, out: tuple[torch.Tensor, ...], threads: int = 1) -> None:
    """:func:`_splat_one` by :mod:`~spatia_core.render_numba` into ``out`` = (index (H*W,), depth
    (H*W,), colour (H*W, 3), mask (H*W,)) CPU tensors. ``xyz_t`` (3, N), ``rgb`` (N, 3) float32 in the order of
    ``blocks`` (all one block without), ``order`` their point indices. With ``threads`` > 1 and
    enough visible points, the visible blocks are dealt round-robin to that many z-buffers filled
    in parallel (neighbouring blocks see similar depths, so the shares cost about the same), and
    the view is resolved in as many row bands: the same pixels as one thread."""
    if blocks is not None:
        start, count = blocks.block_start.numpy(), blocks.block_count.numpy()
        ids = _visible_blocks(blocks, pose, k, near, far).nonzero(as_tuple=True)[0].numpy()
    else:
        start, count, ids = np.zeros(1, np.int64), np.full(1, order.shape[0]), np.zeros(1, np.int64)
    footprint = splat_scale * voxel_size * max(k.fx, k.fy)
    params = np.array([k.fx, k.fy, k.cx, k.cy, footprint, near, min(far, 1e30)], dtype=np.float32)
    h, w = k.height, k.width
    if threads > 1:
        threads = int(min(threads, len(ids), max(1, count[ids].sum() // _POINTS_PER_THREAD)))
    zbufs = _zbuffers(max(threads, 1), h * w + ((h + 1) // 2) * ((w + 1) // 2) + 1)
    pose_np = pose.numpy()
    rot, t = np.ascontiguousarray(pose_np[:3, :3]), np.ascontiguousarray(pose_np[:3, 3])
    quant = np.float32(_DEPTH_QUANT)
    index, depth, color, mask = (x.numpy() for x in out)
    inv_quant = np.float32(1.0 / _DEPTH_QUANT)
    if threads <= 1:
        render_numba.zbuffer(xyz_t, start, count, ids, rot, t, params, w, h, max_radius, quant, zbufs[0])
        render_numba.resolve(zbufs[0], w, h, 0, h, order, rgb, inv_quant, index, depth, color, mask)
        return
    _in_parallel([lambda i=i: render_numba.zbuffer(xyz_t, start, count, np.ascontiguousarray(ids[i::threads]), rot, t,
                                                   params, w, h, max_radius, quant, zbufs[i])
                  for i in range(threads)])
    rows = 2 * np.linspace(0, (h + 1) // 2, threads + 1).astype(int)  # even: a band owns its 2-pixel cells
    rows[-1] = h
    w2 = (w + 1) // 2

    def band(i: int) -> None:
        y0, y1 = rows[i], rows[i + 1]
        render_numba.merge(zbufs, y0 * w, y1 * w)
        render_numba.merge(zbufs, h * w + (y0 // 2) * w2, h * w + ((y1 + 1) // 2) * w2)
        render_numba.resolve(zbufs[0], w, h, y0, y1, order, rgb, inv_quant, index, depth, color, mask)

    _in_parallel([lambda i=i: band(i) for i in range(threads)])


def render_points(
    xyz: torch.Tensor,
    rgb: torch.Tensor,
    intrinsics: Intrinsics,
    poses,
    voxel_size: float,
    splat_scale: float = 1.25,
    max_radius: int = 8,
    near: float = 0.05,
    far: float = float("inf"),
    blocks: BlockIndex | None = None,
    compile: bool = True,
    cache_token=None,
    kernel: str = "auto",
    threads: int = 0,
) -> SceneProjection:
    """Render points into ``poses`` (camera-to-world, (4, 4) or (B, 4, 4)).

    ``xyz`` float (N, 3) world points, ``rgb`` float (N, 3) in [0, 1] or uint8, on one device;
    ``intrinsics`` fixes H and W. Returns a :class:`SceneProjection` on the same device.
    With ``blocks``, a ``cache_token`` naming the owner of the points lets the culled point set be
    reused by the next views (see :meth:`BlockIndex.culled`). ``kernel``: ``auto`` (numba on CPU
    when installed, else torch), ``numba`` or ``torch``; ``compile`` applies to the torch kernel;
    ``threads`` the numba kernel splits each view over (0: :func:`render_threads`' default).
    """
    device = xyz.device
    poses_t = torch.as_tensor(np.asarray(poses) if not torch.is_tensor(poses) else poses, dtype=torch.float32, device=device)
    if poses_t.ndim == 2:
        poses_t = poses_t[None]
    h, w = intrinsics.height, intrinsics.width
    b = poses_t.shape[0]
    use_numba = bool(xyz.shape[0]) and _use_numba(kernel, device)
    if use_numba:  # writes every pixel: nothing to initialise
        index = torch.empty((b, h * w), dtype=torch.int64)
        depth = torch.empty((b, h * w), dtype=torch.float32)
        color = torch.empty((b, h * w, 3), dtype=torch.float32)
        mask = torch.empty((b, h * w), dtype=torch.bool)  # from the kernel: no multi-threaded torch op here
    else:
        index = torch.full((b, h * w), -1, dtype=torch.int64, device=device)
        depth = torch.zeros((b, h * w), dtype=torch.float32, device=device)
        color = torch.zeros((b, h * w, 3), dtype=torch.float32, device=device)
    if use_numba:
        if blocks is not None:
            xyz_t, rgb_np = blocks.sorted_points(xyz, rgb)
            order = blocks.order.numpy()
        else:
            xyz_t, order = xyz.float().T.contiguous().numpy(), np.arange(xyz.shape[0])
            rgb_np = as_rgb_float(rgb).contiguous().numpy()
        n_threads = render_threads(threads)
        for i in range(b):
            _splat_numba(xyz_t, rgb_np, order, blocks, poses_t[i], intrinsics, voxel_size, splat_scale, max_radius,
                         near, far, (index[i], depth[i], color[i], mask[i]), n_threads)
    elif xyz.shape[0]:
        xyz, rgb = xyz.float(), as_rgb_float(rgb)
        for i in range(b):
            index[i], depth[i], color[i] = _splat_one(
                xyz, rgb, poses_t[i], intrinsics, voxel_size, splat_scale, max_radius, near, far, blocks, compile,
                cache_token,
            )
    if not use_numba:
        mask = index >= 0
    return SceneProjection(
        rgb=color.view(b, h, w, 3), depth=depth.view(b, h, w), mask=mask.view(b, h, w), index=index.view(b, h, w)
    )


def render_memory(memory, intrinsics: Intrinsics, poses, **kwargs) -> SceneProjection:
    """Render a :class:`~spatia_core.memory.SpatialMemory` (its voxel size sets the splat size)."""
    # the blocks belong to one layout of this memory; writes to its points are seen by culled()
    token = id(memory)
    return render_points(memory.xyz, memory.rgb, intrinsics, poses, memory.voxel_size, blocks=memory.blocks(),
                         cache_token=token, **kwargs)
