"""SpatialMemory: the voxelised, coloured point cloud of the static scene (Spatia's memory).

Each occupied voxel holds one point: the running mean of the positions and colours observed in
it, an observation count (frames that saw it) and the index of the last frame that saw it.
Voxels are found through :class:`VoxelHash`, so fusing a frame costs O(pixels of the frame)
whatever the size of the memory.

Running means weight the stored value by ``min(count, max_weight)``: a voxel seen many times
is stable, yet new observations can still change it.

Size bound (eviction rule): when more than ``max_voxels`` voxels are occupied, the least
recently observed voxels are dropped (ties: fewest observations first) until
``evict_fraction * max_voxels`` remain. Eviction compacts the arrays and rebuilds the hash, an
O(memory) step that happens at most once per ``(1 - evict_fraction) * max_voxels`` new voxels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InputError
from ..geometry import Intrinsics, validate_pose
from ..render import BlockIndex, as_rgb_float
from .voxel_hash import VoxelHash, pack_coords, unpack_keys

log = logging.getLogger(__name__)


@dataclass
class MemoryStats:
    """Summary of a memory's contents."""

    voxels: int
    voxel_size: float
    bounds_min: list[float]
    bounds_max: list[float]
    frames_fused: int
    revision: int
    memory_bytes: int
    depth_dropped: int = 0  # depth readings (> 0) outside [min_depth, max_depth] that were not fused, all frames


@dataclass
class FuseResult:
    """What one insert did."""

    points: int  # input points (valid pixels) used
    voxels_touched: int
    voxels_new: int
    voxels_evicted: int
    depth_dropped: int = 0  # depth readings (> 0) of the frame outside [min_depth, max_depth], not fused


def backproject(depth: torch.Tensor, intrinsics: Intrinsics, pose: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """World points of the ``valid`` pixels: x = (u - cx) z / fx, y = (v - cy) z / fy.

    ``depth`` float (H, W) metres, ``pose`` (4, 4) camera-to-world; returns float32 (M, 3).
    """
    v, u = valid.nonzero(as_tuple=True)
    z = depth[v, u]
    cam = torch.stack([(u.float() - intrinsics.cx) * z / intrinsics.fx, (v.float() - intrinsics.cy) * z / intrinsics.fy, z], 1)
    pose = pose.to(cam)
    return cam @ pose[:3, :3].T + pose[:3, 3]


def check_rgbd(rgb, depth, intrinsics: Intrinsics, mask=None) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate an RGB-D frame; returns ``(rgb uint8/float (H,W,3), depth float32 (H,W), mask)``.

    Depth is metric; 0 means "no reading". NaN, inf and negative depth values are rejected
    (convert ROS-style NaN "no return" to 0 at the boundary before calling).
    """
    rgb = np.asarray(rgb)
    depth = np.asarray(depth)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise InputError(f"rgb must be (H, W, 3), got shape {rgb.shape}")
    if depth.ndim != 2:
        raise InputError(f"depth must be (H, W), got shape {depth.shape}")
    if rgb.shape[:2] != depth.shape:
        raise InputError(f"rgb {rgb.shape[1]}x{rgb.shape[0]} and depth {depth.shape[1]}x{depth.shape[0]} sizes differ")
    if (intrinsics.width, intrinsics.height) != (depth.shape[1], depth.shape[0]):
        raise InputError(
            f"intrinsics are for {intrinsics.width}x{intrinsics.height}, image is {depth.shape[1]}x{depth.shape[0]}"
        )
    depth = depth.astype(np.float32, copy=False)
    if not np.all(np.isfinite(depth)):
        raise InputError("depth contains NaN or inf (use 0 for pixels without a reading)")
    if (depth < 0).any():
        raise InputError("depth contains negative values")
    if rgb.dtype != np.uint8 and (not np.all(np.isfinite(rgb)) or rgb.min() < 0 or rgb.max() > 1):
        raise InputError("float rgb must be finite and in [0, 1] (or pass uint8)")
    if mask is not None:
        mask = np.asarray(mask).astype(bool)
        if mask.shape != depth.shape:
            raise InputError(f"mask shape {mask.shape} differs from depth shape {depth.shape}")
    return rgb, depth, mask


class SpatialMemory:
    """Voxelised coloured point cloud with incremental fusion (see module docstring)."""

    def __init__(
        self,
        voxel_size: float = 0.01,
        max_voxels: int = 5_000_000,
        max_weight: int = 16,
        evict_fraction: float = 0.9,
        min_depth: float = 0.05,
        max_depth: float = 10.0,
        block_size: float = 0.5,
        device: str | torch.device = "cpu",
    ):
        if not (np.isfinite(voxel_size) and voxel_size > 0):
            raise InputError(f"voxel_size must be positive, got {voxel_size}")
        if max_voxels < 1 or not 0 < evict_fraction < 1:
            raise InputError("max_voxels must be >= 1 and evict_fraction in (0, 1)")
        self.voxel_size = float(voxel_size)
        self.max_voxels = int(max_voxels)
        self.max_weight = int(max_weight)
        self.evict_fraction = float(evict_fraction)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.block_size = float(block_size)
        self.device = torch.device(device)
        self.frames_fused = 0
        self.revision = 0
        self.depth_dropped = 0  # readings outside [min_depth, max_depth] so far (reported, see insert_frame)
        self.clear()

    # -- storage ---------------------------------------------------------------------------
    def rescale(self, voxel_size: float, min_depth: float, max_depth: float) -> None:
        """Empty the memory and give it another scale: voxel edge and depth limits (e.g. those a
        capture's data call for); culling blocks stay at least 64 voxels wide."""
        if not (np.isfinite(voxel_size) and voxel_size > 0) or not 0 <= min_depth < max_depth:
            raise InputError(f"rescale needs voxel_size > 0 and 0 <= min_depth < max_depth, got {voxel_size}, "
                             f"{min_depth}, {max_depth}")
        self.voxel_size, self.min_depth, self.max_depth = float(voxel_size), float(min_depth), float(max_depth)
        self.block_size = max(self.block_size, 64 * self.voxel_size)
        self.clear()

    def clear(self) -> None:
        """Remove every voxel."""
        self._index = VoxelHash(device=self.device)
        self._block_index = VoxelHash(capacity=256, device=self.device)
        self._block_min = torch.zeros((0, 3), dtype=torch.float32, device=self.device)
        self._n = 0
        self._layout_version = 0  # changes when voxels are added or removed
        self._blocks_cache: tuple[int, BlockIndex] | None = None
        self._alloc(1024)
        self.revision += 1

    def _alloc(self, capacity: int) -> None:
        def grow(name, shape, dtype, fill=0):
            new = torch.full((capacity, *shape), fill, dtype=dtype, device=self.device)
            old = getattr(self, name, None)
            if old is not None and self._n:
                new[: self._n] = old[: self._n]
            setattr(self, name, new)

        grow("_keys", (), torch.int64)
        grow("_xyz", (3,), torch.float32)
        grow("_rgb", (3,), torch.float32)
        grow("_count", (), torch.int32)
        grow("_last_seen", (), torch.int32)
        grow("_block", (), torch.int64)

    def __len__(self) -> int:
        return self._n

    @property
    def xyz(self) -> torch.Tensor:
        """float32 (N, 3) voxel points in the world frame (a view; do not modify)."""
        return self._xyz[: self._n]

    @property
    def rgb(self) -> torch.Tensor:
        """float32 (N, 3) colours in [0, 1] (a view)."""
        return self._rgb[: self._n]

    @property
    def counts(self) -> torch.Tensor:
        """int32 (N,) observation counts (a view)."""
        return self._count[: self._n]

    @property
    def keys(self) -> torch.Tensor:
        """int64 (N,) packed voxel keys (a view)."""
        return self._keys[: self._n]

    def to_numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(xyz float32 (N,3), rgb uint8 (N,3), counts int32 (N,))`` copies."""
        rgb = (self.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8)
        return self.xyz.cpu().numpy().copy(), rgb.cpu().numpy(), self.counts.cpu().numpy().copy()

    # -- fusion ----------------------------------------------------------------------------
    def insert_points(self, xyz, rgb, counts=None, observed=None) -> FuseResult:
        """Fuse world points ``xyz`` float (N, 3) with colours ``rgb`` (uint8 or float [0, 1]).

        Points falling into one voxel are averaged first. Without ``counts`` the call counts as
        one observation of every touched voxel; with ``counts`` (N,) each point carries that
        many observations (used to load a saved map). ``observed`` (int64 voxel indices, e.g. the
        ``index`` of a rendered view) marks voxels seen in this frame without changing them.
        """
        xyz = torch.as_tensor(np.asarray(xyz) if not torch.is_tensor(xyz) else xyz, device=self.device)
        rgb = torch.as_tensor(np.asarray(rgb) if not torch.is_tensor(rgb) else rgb, device=self.device)
        if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
            raise InputError(f"points must be (N, 3) with matching colours, got {tuple(xyz.shape)} and {tuple(rgb.shape)}")
        xyz = xyz.float()
        if not torch.isfinite(xyz).all():
            raise InputError("points contain NaN or inf")
        keys = pack_coords(torch.floor(xyz / self.voxel_size).to(torch.int64))  # raises before any change
        frame = self.frames_fused
        self.frames_fused += 1
        self.revision += 1
        if observed is not None:
            seen = torch.as_tensor(observed, device=self.device).reshape(-1)
            seen = seen[(seen >= 0) & (seen < self._n)]
            self._count[seen] += 1  # a voxel listed many times counts once: every write stores the same value
            self._last_seen[seen] = frame
        if xyz.shape[0] == 0:
            return FuseResult(0, 0, 0, 0)
        rgb = as_rgb_float(rgb)
        weight = torch.ones(xyz.shape[0], device=self.device) if counts is None else torch.as_tensor(counts, device=self.device).float().reshape(-1)
        uniq, inv = torch.unique(keys, return_inverse=True)
        m = uniq.numel()
        wsum = torch.zeros(m, device=self.device).index_add_(0, inv, weight)
        mean_xyz = torch.zeros(m, 3, device=self.device).index_add_(0, inv, xyz * weight[:, None]) / wsum[:, None]
        mean_rgb = torch.zeros(m, 3, device=self.device).index_add_(0, inv, rgb * weight[:, None]) / wsum[:, None]
        obs = torch.ones(m, device=self.device) if counts is None else wsum
        # keep means strictly inside their voxel so that saving and re-voxelising is exact
        lo = unpack_keys(uniq).float() * self.voxel_size
        margin = 0.01 * self.voxel_size
        mean_xyz = torch.minimum(torch.maximum(mean_xyz, lo + margin), lo + (self.voxel_size - margin))

        ids, is_new = self._index.insert(uniq)
        if self._index.size > self._keys.shape[0]:
            self._alloc(max(self._index.size, 2 * self._keys.shape[0]))
        new_ids, old_ids = ids[is_new], ids[~is_new]
        self._keys[new_ids] = uniq[is_new]
        self._xyz[new_ids] = mean_xyz[is_new]
        self._rgb[new_ids] = mean_rgb[is_new]
        self._count[new_ids] = obs[is_new].to(torch.int32)
        self._block[new_ids] = self._block_ids(mean_xyz[is_new])
        if old_ids.numel():
            w_old = self._count[old_ids].clamp(max=self.max_weight).float()[:, None]
            w_new = obs[~is_new].clamp(max=self.max_weight)[:, None]
            self._xyz[old_ids] = (self._xyz[old_ids] * w_old + mean_xyz[~is_new] * w_new) / (w_old + w_new)
            self._rgb[old_ids] = (self._rgb[old_ids] * w_old + mean_rgb[~is_new] * w_new) / (w_old + w_new)
            self._count[old_ids] += obs[~is_new].to(torch.int32)
        self._last_seen[ids] = frame
        if self._index.size != self._n:
            self._layout_version += 1
        self._n = self._index.size
        evicted = self._evict() if self._n > self.max_voxels else 0
        return FuseResult(int(xyz.shape[0]), m, int(is_new.sum()), evicted)

    def insert_frame(self, rgb, depth, intrinsics: Intrinsics, pose, exclude_mask=None, observed=None) -> FuseResult:
        """Fuse an RGB-D frame: ``rgb`` (H, W, 3) uint8 or float, ``depth`` float (H, W) metres
        (0 = no reading), ``pose`` camera-to-world (4, 4), ``exclude_mask`` bool (H, W) of pixels
        to leave out (dynamic things, or what the memory already explains), ``observed`` voxel
        indices seen by the frame (see :meth:`insert_points`). Nothing changes if any input is
        invalid.
        """
        pose = validate_pose(pose)
        rgb, depth, mask = check_rgbd(rgb, depth, intrinsics, exclude_mask)
        depth_t = torch.as_tensor(depth, device=self.device)
        valid = (depth_t > self.min_depth) & (depth_t < self.max_depth)
        if mask is not None:
            valid &= ~torch.as_tensor(mask, device=self.device)
        dropped = int(((depth_t > 0) & ~((depth_t > self.min_depth) & (depth_t < self.max_depth))).sum())
        if dropped:
            if not self.depth_dropped:  # once per memory: a scale mismatch drops whole frames
                log.warning("%d depth readings of a %dx%d frame lie outside memory depth limits [%g, %g] and are not "
                            "fused (memory.min_depth / memory.max_depth); further drops are counted in stats()",
                            dropped, depth.shape[1], depth.shape[0], self.min_depth, self.max_depth)
            self.depth_dropped += dropped
        xyz = backproject(depth_t, intrinsics, torch.as_tensor(pose, device=self.device), valid)
        colors = torch.as_tensor(rgb, device=self.device)[valid]
        result = self.insert_points(xyz, colors, observed=observed)
        result.depth_dropped = dropped
        return result

    def _block_ids(self, xyz: torch.Tensor) -> torch.Tensor:
        """Ids of the coarse culling blocks containing ``xyz``, registering new blocks."""
        coords = torch.floor(xyz / self.block_size).to(torch.int64)
        keys, inv = torch.unique(pack_coords(coords), return_inverse=True)
        ids, is_new = self._block_index.insert(keys)
        if is_new.any():
            first = torch.zeros(keys.numel(), dtype=torch.int64, device=self.device).scatter_(
                0, inv, torch.arange(inv.numel(), device=self.device)
            )
            corner = coords[first[is_new]].float() * self.block_size
            grown = torch.zeros((self._block_index.size, 3), dtype=torch.float32, device=self.device)
            grown[: self._block_min.shape[0]] = self._block_min
            grown[ids[is_new]] = corner
            self._block_min = grown
        return ids[inv]

    def blocks(self) -> BlockIndex:
        """Culling blocks of the current points (for :func:`~spatia_core.render.render_points`).

        Cached until voxels are added or removed.
        """
        if self._blocks_cache is None or self._blocks_cache[0] != self._layout_version:
            index = BlockIndex.from_point_blocks(self._block[: self._n], self._block_min, self.block_size)
            self._blocks_cache = (self._layout_version, index)
        return self._blocks_cache[1]

    # -- removal ---------------------------------------------------------------------------
    def keep_only(self, keep: torch.Tensor) -> int:
        """Drop the voxels where bool (N,) ``keep`` is False; returns how many were dropped."""
        keep = torch.as_tensor(keep, device=self.device, dtype=torch.bool)
        dropped = int(self._n - keep.sum())
        if dropped == 0:
            return 0
        idx = keep.nonzero(as_tuple=True)[0]
        for name in ("_keys", "_xyz", "_rgb", "_count", "_last_seen", "_block"):
            arr = getattr(self, name)
            arr[: idx.numel()] = arr[idx]
        self._n = idx.numel()
        self._layout_version += 1
        self._index.rebuild(self._keys[: self._n])
        self.revision += 1
        return dropped

    def _evict(self) -> int:
        target = int(self.evict_fraction * self.max_voxels)
        score = self._last_seen[: self._n].to(torch.int64) * (1 << 31) + self._count[: self._n].clamp(max=(1 << 31) - 1).to(torch.int64)
        order = torch.argsort(score, descending=True)
        keep = torch.zeros(self._n, dtype=torch.bool, device=self.device)
        keep[order[:target]] = True
        return self.keep_only(keep)

    # -- summaries -------------------------------------------------------------------------
    @property
    def content_version(self) -> tuple[int, int, int]:
        """Changes when a voxel is added, removed, moved or recoloured, but not when voxels are only
        marked as observed (which ``revision`` also counts): what a published map depends on."""
        return self._layout_version, self._xyz._version, self._rgb._version

    def stats(self) -> MemoryStats:
        """Voxel count, axis-aligned bounds, frames fused, revision and bytes held."""
        if self._n:
            lo, hi = self.xyz.min(0).values.tolist(), self.xyz.max(0).values.tolist()
        else:
            lo = hi = [0.0, 0.0, 0.0]
        per_voxel = 8 + 12 + 12 + 4 + 4
        return MemoryStats(
            voxels=self._n,
            voxel_size=self.voxel_size,
            bounds_min=lo,
            bounds_max=hi,
            frames_fused=self.frames_fused,
            revision=self.revision,
            memory_bytes=self._keys.shape[0] * per_voxel + self._index.nbytes,
            depth_dropped=self.depth_dropped,
        )
