"""Coarse spatial blocks of a point set (the memory's culling index) and frustum culling of them.

The memory keeps every voxel's block id; :meth:`SpatialMemory.blocks` turns them into a
:class:`BlockIndex`, which the renderer uses to skip blocks outside a camera's view frustum.
It lives next to the memory so that the memory does not depend on the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..geometry import Intrinsics
from .colors import as_rgb_float

#: Culled point sets are gathered for a frustum this many pixels wider on every side, so that the
#: views of a moving camera keep reusing them (points outside the view are dropped per point).
_CULL_MARGIN_PX = 128


@dataclass
class BlockIndex:
    """Coarse spatial blocks of a point set, for frustum culling before projection.

    ``order`` lists the points block by block; block ``b`` holds
    ``order[block_start[b] : block_start[b] + block_count[b]]``.
    """

    block_min: torch.Tensor  # float32 (NB, 3) lower corner of every block
    block_size: float
    order: torch.Tensor  # int64 (N,) point indices sorted by block
    block_start: torch.Tensor  # int64 (NB,)
    block_count: torch.Tensor  # int64 (NB,)
    #: the last culled point set, see :meth:`culled`
    _culled: tuple | None = field(default=None, repr=False, compare=False)
    #: block-ordered copies of the points, see :meth:`sorted_points`
    _sorted: tuple | None = field(default=None, repr=False, compare=False)

    @classmethod
    def from_point_blocks(cls, point_block: torch.Tensor, block_min: torch.Tensor, block_size: float) -> "BlockIndex":
        """Build from the block id (int64 (N,)) of every point."""
        order = torch.argsort(point_block, stable=True)
        count = torch.bincount(point_block, minlength=block_min.shape[0])
        start = torch.cumsum(count, 0) - count
        return cls(block_min, block_size, order, start, count)

    def points_in(self, blocks: torch.Tensor) -> torch.Tensor:
        """Indices (int64) of the points in the blocks selected by bool (NB,) ``blocks``."""
        ids = blocks.nonzero(as_tuple=True)[0]
        count, start = self.block_count[ids], self.block_start[ids]
        total = int(count.sum())
        # position j of the output belongs to block i: start[i] + (j - first output of block i)
        offset = torch.repeat_interleave(start - (torch.cumsum(count, 0) - count), count, output_size=total)
        return self.order[offset + torch.arange(total, device=offset.device)]

    def sorted_points(self, xyz: torch.Tensor, rgb: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        """The points in block order for the numba kernel: xyz float32 (3, N) and rgb float32 (N, 3)
        in [0, 1] (from float or uint8 ``rgb``), CPU arrays. Kept while ``xyz`` and ``rgb`` are the
        same, unmodified tensors (torch's in-place version counters, as in :meth:`culled`)."""
        key = (xyz.data_ptr(), xyz._version, tuple(xyz.shape), rgb.data_ptr(), rgb._version, tuple(rgb.shape),
               rgb.dtype)
        if self._sorted is None or self._sorted[0] != key:
            self._sorted = (key, xyz[self.order].float().T.contiguous().numpy(),
                            as_rgb_float(rgb[self.order]).contiguous().numpy())
        return self._sorted[1:]

    def culled(self, xyz: torch.Tensor, rgb: torch.Tensor, pose: torch.Tensor, k: Intrinsics, near: float, far: float,
               token=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The points of the blocks that may be in view, as :func:`_gather` returns them.

        With a ``token`` (naming the owner of ``xyz`` and ``rgb``, e.g. the memory), the gathered
        set is kept and reused for later views inside the wider frustum it was built for, while
        ``xyz`` and ``rgb`` are the same tensors, unmodified (torch's in-place version counters:
        every write through torch bumps them); without one, the exact visible blocks are gathered
        every call. The points come back in block order either way, so depth ties resolve the same.
        """
        if token is None:
            return _gather(self.points_in(_visible_blocks(self, pose, k, near, far)), xyz, rgb)
        key = (token, k, near, far, xyz.data_ptr(), xyz._version, tuple(xyz.shape), rgb.data_ptr(), rgb._version,
               tuple(rgb.shape))
        visible = _visible_blocks(self, pose, k, near, far)
        if self._culled is not None and self._culled[0] == key and not bool((visible & ~self._culled[1]).any()):
            return self._culled[2:]
        m = _CULL_MARGIN_PX
        wide = Intrinsics(k.fx, k.fy, k.cx + m, k.cy + m, k.width + 2 * m, k.height + 2 * m)
        gathered = visible | _visible_blocks(self, pose, wide, near, far)
        self._culled = (key, gathered, *_gather(self.points_in(gathered), xyz, rgb))
        return self._culled[2:]


def _gather(sel: torch.Tensor, xyz: torch.Tensor, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(sel + [-1], xyz[sel], rgb[sel] + [0, 0, 0])``: the points ``sel`` (int64 (M,)) of a view,
    contiguous, with one extra entry that empty pixels look up (index -1, black)."""
    sel_ext = torch.cat([sel, sel.new_full((1,), -1)])
    rgb_ext = torch.cat([rgb[sel], rgb.new_zeros((1, 3))])
    return sel_ext, xyz[sel].contiguous(), rgb_ext


def _visible_blocks(blocks: BlockIndex, pose: torch.Tensor, k: Intrinsics, near: float, far: float) -> torch.Tensor:
    """bool (NB,): blocks whose box may intersect the view frustum (conservative test)."""
    corners = torch.tensor(
        [[i, j, l] for i in (0, 1) for j in (0, 1) for l in (0, 1)], dtype=torch.float32, device=pose.device
    )
    pts = blocks.block_min[:, None, :] + corners * blocks.block_size  # (NB, 8, 3)
    # per component, not a matmul: BLAS threads would spin after it and take the core the renderer's
    # own threads need (a 2-thread 640x480 view measured 8.7 ms with it, 5.8 ms without)
    d = pts - pose[:3, 3]
    dx, dy, dz = d.unbind(-1)
    r = pose[:3, :3]
    x, y, z = (dx * r[0, c] + dy * r[1, c] + dz * r[2, c] for c in range(3))
    # frustum planes through the camera centre; a block is out if all corners violate one plane
    outside = (
        (z <= near).all(1)
        | (z >= far).all(1)
        | (k.fx * x + (k.cx + 1) * z < 0).all(1)
        | (-k.fx * x + (k.width - k.cx) * z < 0).all(1)
        | (k.fy * y + (k.cy + 1) * z < 0).all(1)
        | (-k.fy * y + (k.height - k.cy) * z < 0).all(1)
    )
    return ~outside
