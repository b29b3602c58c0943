"""SpatialMemory: the voxelised, coloured point cloud of the scene (Spatia's memory).

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
Voxels of entities are never evicted (see below).

Entities: every voxel carries an entity id (int32, :attr:`entity_ids`): 0 for the static scene,
``>= 1`` for a named object placed by :mod:`spatia_core.memory.entities` (registered in
:attr:`entity_table`). Entity voxels are written only by entity operations: fusing observations
(:meth:`insert_points`, :meth:`insert_frame`) never changes them and never gives a fused voxel
an entity id, so what the generator saw of an entity is not absorbed into the static scene at
the voxels the entity occupies, and nothing of it stays behind when the entity moves. (Static
geometry fused from pixels the memory did not cover stays static, as any observation.)

The public operations below (:meth:`write_voxels`, :meth:`remove`, :meth:`recolor`,
:meth:`capture`, :meth:`capture_region`, :meth:`restore`, :meth:`find`) are how edits, undo and
entities change the memory; nothing else writes its arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ..cameras import backproject  # re-exported: spatia_core.memory.backproject
from ..errors import InputError
from ..geometry import Intrinsics, validate_pose
from .blocks import BlockIndex
from .colors import as_rgb_float
from .entities import EntityTable
from .snapshot import Snapshot
from .support import through_voxels
from .voxel_hash import VoxelHash, pack_coords, unpack_keys

log = logging.getLogger(__name__)

#: The per-voxel arrays (``_block`` is derived from ``_xyz``).
_ARRAYS = ("_keys", "_xyz", "_rgb", "_count", "_last_seen", "_block", "_entity")


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
    voxels_unsupported: int = 0  # voxels the frame saw through (free space): one observation taken
    voxels_removed: int = 0  # of those, the ones left with none and removed
    remap: torch.Tensor | None = None  # set when the call moved voxels (carving, eviction): int64, the new
    #   position of each voxel that was there before it, -1 if removed (for index maps rendered before)


@dataclass
class WriteResult:
    """What :meth:`SpatialMemory.write_voxels` did."""

    keys: torch.Tensor  # int64 (M,) the voxels written
    ids: torch.Tensor  # int64 (M,) their positions in the arrays
    previous: Snapshot  # the voxels it replaced, as they were
    created: torch.Tensor  # int64 keys of the voxels that did not exist before


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


#: most voxels reserved up front on the CPU (52 bytes each: ~3.3 GB of address space, not of RAM)
_MAX_RESERVE = 64 << 20

def follow_remap(index: torch.Tensor, remap: torch.Tensor) -> torch.Tensor:
    """Voxel positions ``index`` (any shape, -1 = none) after the voxels moved by ``remap``
    (:attr:`FuseResult.remap`); removed voxels become -1."""
    return torch.where(index >= 0, remap[index.clamp(min=0)], index)


def _remap(keep: torch.Tensor) -> torch.Tensor:
    """int64: where each voxel goes when only bool ``keep`` stays (:meth:`SpatialMemory.keep_only`), -1 if dropped."""
    remap = torch.cumsum(keep, 0) - 1
    remap[~keep] = -1
    return remap


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
        self.epoch = 0  # bumped by clear(): journals and snapshots of an older epoch are void
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
        self.entity_table = EntityTable()
        self._alloc(1024)
        self.revision += 1
        self.epoch += 1

    def _grow_to(self, needed: int) -> None:
        """Make room for ``needed`` voxels. On the CPU the first growth reserves the whole size
        bound (``max_voxels`` plus one eviction's slack): ``torch.empty`` only reserves address
        space, pages are touched as voxels arrive, so a growing memory never pays an O(memory)
        copy mid-stream (those were the 130-280 ms spikes at 1.3M and 2.6M voxels). Elsewhere
        (device memory is committed when allocated) the arrays double."""
        capacity = max(needed, 2 * self._keys.shape[0])
        if self.device.type == "cpu":
            capacity = max(capacity, min(self.max_voxels + self.max_voxels // 4 + (1 << 16), _MAX_RESERVE))
        self._alloc(capacity)

    def _alloc(self, capacity: int) -> None:
        def grow(name, shape, dtype):
            new = torch.empty((capacity, *shape), dtype=dtype, device=self.device)  # rows >= _n are never read
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
        grow("_entity", (), torch.int32)

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

    @property
    def entity_ids(self) -> torch.Tensor:
        """int32 (N,) entity id of every voxel, 0 for the static scene (a view)."""
        return self._entity[: self._n]

    @property
    def last_seen(self) -> torch.Tensor:
        """int32 (N,) index of the last fused frame that saw each voxel (a view)."""
        return self._last_seen[: self._n]

    @property
    def layout_version(self) -> int:
        """Changes whenever voxels are added, removed or reordered."""
        return self._layout_version

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
            self._grow_to(self._index.size)
        new_ids, old_ids = ids[is_new], ids[~is_new]
        self._keys[new_ids] = uniq[is_new]
        self._xyz[new_ids] = mean_xyz[is_new]
        self._rgb[new_ids] = mean_rgb[is_new]
        self._count[new_ids] = obs[is_new].to(torch.int32)
        self._block[new_ids] = self._block_ids(mean_xyz[is_new])
        self._entity[new_ids] = 0
        old = ~is_new
        if len(self.entity_table) and old_ids.numel():  # entity voxels are written by entity operations only
            held = self._entity[old_ids] != 0
            if bool(held.any()):
                old[old.nonzero(as_tuple=True)[0][held]] = False
                old_ids = old_ids[~held]
        if old_ids.numel():
            w_old = self._count[old_ids].clamp(max=self.max_weight).float()[:, None]
            w_new = obs[old].clamp(max=self.max_weight)[:, None]
            self._xyz[old_ids] = (self._xyz[old_ids] * w_old + mean_xyz[old] * w_new) / (w_old + w_new)
            self._rgb[old_ids] = (self._rgb[old_ids] * w_old + mean_rgb[old] * w_new) / (w_old + w_new)
            self._count[old_ids] += obs[old].to(torch.int32)
        self._last_seen[ids] = frame
        if self._index.size != self._n:
            self._layout_version += 1
        self._n = self._index.size
        evicted, remap = self._evict() if self._n > self.max_voxels else (0, None)
        return FuseResult(int(xyz.shape[0]), m, int(is_new.sum()), evicted, remap=remap)

    def insert_frame(self, rgb, depth, intrinsics: Intrinsics, pose, exclude_mask=None, observed=None,
                     rendered_depth=None, carve_exempt=None, free_tol: float = 0.05) -> FuseResult:
        """Fuse an RGB-D frame: ``rgb`` (H, W, 3) uint8 or float, ``depth`` float (H, W) metres
        (0 = no reading), ``pose`` camera-to-world (4, 4), ``exclude_mask`` bool (H, W) of pixels
        to leave out (dynamic things, or what the memory already explains), ``observed`` voxel
        indices seen by the frame (see :meth:`insert_points`). Nothing changes if any input is
        invalid.

        Free-space carving (:mod:`~spatia_core.memory.support`): with ``observed`` the (H, W)
        index map of the memory rendered at ``pose`` and ``rendered_depth`` its depth, a voxel the
        frame sees through (depth farther by more than ``free_tol`` relative plus one voxel) is
        not counted as observed but loses one observation, and is removed at zero; its pixels
        are then fused from the new depth even where ``exclude_mask`` left them out.
        ``carve_exempt`` bool (H, W): pixels that neither vote nor get fused that way (dynamic
        things). Entity voxels are never carved.
        """
        pose = validate_pose(pose)
        rgb, depth, mask = check_rgbd(rgb, depth, intrinsics, exclude_mask)
        depth_t = torch.as_tensor(depth, device=self.device)
        if rendered_depth is not None:
            if observed is None or tuple(np.shape(observed)) != depth.shape or tuple(np.shape(rendered_depth)) != depth.shape:
                raise InputError(f"carving needs the {depth.shape} index map and rendered depth of the frame's view")
            exempt = None if carve_exempt is None else torch.as_tensor(np.asarray(carve_exempt, bool) if not torch.is_tensor(carve_exempt) else carve_exempt, device=self.device)
            if exempt is not None and tuple(exempt.shape) != depth.shape:
                raise InputError(f"carve_exempt must be {depth.shape}, got {tuple(exempt.shape)}")
        in_range = (depth_t > self.min_depth) & (depth_t < self.max_depth)
        valid = in_range.clone()
        if mask is not None:
            valid &= ~torch.as_tensor(mask, device=self.device)
        unsupported = removed = 0
        remap = None
        if rendered_depth is not None:
            observed, refill, unsupported, removed, remap = self._carve(observed, depth_t, rendered_depth, exempt, free_tol)
            if refill is not None:
                valid |= refill & in_range
        dropped = int(((depth_t > 0) & ~in_range).sum())
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
        result.voxels_unsupported, result.voxels_removed = unsupported, removed
        if remap is not None:
            result.remap = remap if result.remap is None else follow_remap(remap, result.remap)
        return result

    def _carve(self, index, depth: torch.Tensor, rendered, exempt, free_tol: float):
        """Take support from the voxels ``depth`` sees through; returns ``(observed voxel
        indices after any removal, pixels whose voxel was removed or None, lost, removed, remap or None)``."""
        index = torch.as_tensor(index, device=self.device).to(torch.int64)
        index = torch.where(index < self._n, index, torch.full_like(index, -1))  # stale indices see nothing
        rendered = torch.as_tensor(np.asarray(rendered) if not torch.is_tensor(rendered) else rendered, device=self.device).float()
        lost = through_voxels(index, depth, rendered, float(free_tol), self.voxel_size,
                              voting=None if exempt is None else ~exempt)
        if len(self.entity_table) and lost.numel():
            lost = lost[self._entity[lost] == 0]
        if lost.numel() == 0:
            return index, None, 0, 0, None
        lost_px = self._pixels_of(index, lost)
        support = self._count[lost].clamp(max=self.max_weight) - 1
        self._count[lost] = support
        gone = lost[support <= 0]
        observed = torch.where(lost_px, torch.full_like(index, -1), index)
        if gone.numel() == 0:
            return observed, None, int(lost.numel()), 0, None
        refill = self._pixels_of(index, gone)
        if exempt is not None:
            refill &= ~exempt
        remap = self.remove_ids(gone)
        return follow_remap(observed, remap), refill, int(lost.numel()), int(gone.numel()), remap

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
        for name in _ARRAYS:
            arr = getattr(self, name)
            arr[: idx.numel()] = arr[idx]
        self._n = idx.numel()
        self._layout_version += 1
        self._index.rebuild(self._keys[: self._n])
        self.revision += 1
        return dropped

    def _pixels_of(self, index: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """bool, the shape of the index map ``index``: pixels showing one of the voxels ``ids``
        (a flag per voxel: cheaper than ``torch.isin``'s sort)."""
        flag = torch.zeros(self._n + 1, dtype=torch.bool, device=self.device)  # the last one: -1, nothing
        flag[ids] = True
        return flag[torch.where(index >= 0, index, self._n)]

    def remove_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Remove the voxels at positions ``ids`` in O(len(ids)), not O(memory) as
        :meth:`keep_only`: the last voxels move into the freed positions (so the order of the
        others is not kept). Returns the remap: int64 (N before,) new position of every voxel,
        -1 for the removed ones."""
        n = self._n
        gone = torch.unique(torch.as_tensor(ids, dtype=torch.int64, device=self.device).reshape(-1))
        if gone.numel() and (int(gone[0]) < 0 or int(gone[-1]) >= n):
            raise InputError(f"voxel positions must lie in [0, {n}), got {int(gone[0])}..{int(gone[-1])}")
        remap = torch.arange(n, device=self.device)
        if gone.numel() == 0:
            return remap
        remap[gone] = -1
        m = n - gone.numel()
        tail = torch.arange(m, n, device=self.device)
        movers = tail[remap[m:] >= 0]  # survivors at the end ...
        holes = gone[gone < m]  # ... go into the freed positions before it (as many of each)
        self._index.remove(self._keys[gone])
        for name in _ARRAYS:
            arr = getattr(self, name)
            arr[holes] = arr[movers]
        self._index.set_ids(self._keys[holes], holes)
        remap[movers] = holes
        self._n = m
        self._layout_version += 1
        self.revision += 1
        return remap

    def _evict(self) -> tuple[int, torch.Tensor]:
        target = int(self.evict_fraction * self.max_voxels)
        score = self._last_seen[: self._n].to(torch.int64) * (1 << 31) + self._count[: self._n].clamp(max=(1 << 31) - 1).to(torch.int64)
        if len(self.entity_table):  # entities stay whole: their voxels go last
            score = torch.where(self._entity[: self._n] != 0, torch.iinfo(torch.int64).max, score)
        order = torch.argsort(score, descending=True)
        keep = torch.zeros(self._n, dtype=torch.bool, device=self.device)
        keep[order[:target]] = True
        remap = _remap(keep)
        return self.keep_only(keep), remap

    # -- public operations (edits, undo and entities use these) ----------------------------
    def find(self, keys: torch.Tensor) -> torch.Tensor:
        """Positions (int64) of the voxels with packed ``keys``, -1 where absent."""
        return self._index.find(torch.as_tensor(keys, dtype=torch.int64, device=self.device).reshape(-1))

    def voxelise(self, xyz: torch.Tensor, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Mean point and colour per voxel of float (N, 3) ``xyz`` and float [0, 1] ``rgb``:
        ``(keys (M,), xyz (M, 3), rgb (M, 3))``, means kept strictly inside their voxel (as fusion
        does). :class:`InputError` for points outside the voxel grid."""
        keys = pack_coords(torch.floor(xyz / self.voxel_size).to(torch.int64))
        uniq, inv = torch.unique(keys, return_inverse=True)
        m = uniq.numel()
        cnt = torch.zeros(m, device=self.device).index_add_(0, inv, torch.ones_like(xyz[:, 0]))
        mean_xyz = torch.zeros(m, 3, device=self.device).index_add_(0, inv, xyz) / cnt[:, None]
        mean_rgb = torch.zeros(m, 3, device=self.device).index_add_(0, inv, rgb) / cnt[:, None]
        lo = unpack_keys(uniq).float() * self.voxel_size
        margin = 0.01 * self.voxel_size
        mean_xyz = torch.minimum(torch.maximum(mean_xyz, lo + margin), lo + (self.voxel_size - margin))
        return uniq, mean_xyz, mean_rgb

    def write_voxels(self, xyz, rgb, counts=1, entity_id: int = 0, last_seen: int | None = None) -> WriteResult:
        """Write points as voxels that *replace* the voxels they land in (no running mean).

        ``xyz`` float (N, 3) world points, ``rgb`` uint8 or float [0, 1] (N, 3); points sharing a
        voxel are averaged. Each written voxel gets ``counts`` observations (an int, or (N,)
        per point: the voxel takes the largest), ``entity_id`` (0: static scene) and
        ``last_seen`` (default: the latest fused frame). Returns what was replaced (for undo).
        """
        xyz = torch.as_tensor(np.asarray(xyz) if not torch.is_tensor(xyz) else xyz, device=self.device).float()
        rgb = as_rgb_float(torch.as_tensor(np.asarray(rgb) if not torch.is_tensor(rgb) else rgb, device=self.device))
        if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
            raise InputError(f"points must be (N, 3) with matching colours, got {tuple(xyz.shape)} and {tuple(rgb.shape)}")
        if not torch.isfinite(xyz).all():
            raise InputError("points contain NaN or inf")
        if int(entity_id) < 0:
            raise InputError(f"entity id must be >= 0, got {entity_id}")
        keys, mean_xyz, mean_rgb = self.voxelise(xyz, rgb)
        counts_t = torch.as_tensor(counts, device=self.device).reshape(-1)
        if counts_t.numel() == 1:
            counts_t = counts_t.expand(keys.numel())
        elif counts_t.numel() == xyz.shape[0]:
            inv = torch.searchsorted(keys, pack_coords(torch.floor(xyz / self.voxel_size).to(torch.int64)))
            counts_t = torch.zeros(keys.numel(), dtype=torch.int64, device=self.device).scatter_reduce_(
                0, inv, counts_t.to(torch.int64), "amax", include_self=False)
        else:
            raise InputError(f"counts must be one number or one per point, got {counts_t.numel()} for {xyz.shape[0]}")
        if keys.numel() and int(counts_t.min()) < 1:
            raise InputError("observation counts must be >= 1")
        found = self._index.find(keys)
        previous = self.capture(found[found >= 0])
        created = keys[found < 0]
        ids, _ = self._index.insert(keys)
        if self._index.size > self._keys.shape[0]:
            self._grow_to(self._index.size)
        self._keys[ids] = keys
        self._xyz[ids] = mean_xyz
        self._rgb[ids] = mean_rgb
        self._count[ids] = counts_t.to(torch.int32)
        self._last_seen[ids] = max(self.frames_fused - 1, 0) if last_seen is None else int(last_seen)
        self._block[ids] = self._block_ids(mean_xyz)
        self._entity[ids] = int(entity_id)
        self._n = self._index.size
        self._layout_version += 1
        self.revision += 1
        return WriteResult(keys, ids, previous, created)

    def remove(self, mask: torch.Tensor) -> int:
        """Remove the voxels where bool (N,) ``mask`` is True; returns how many."""
        mask = torch.as_tensor(mask, device=self.device, dtype=torch.bool).reshape(-1)
        if mask.numel() != self._n:
            raise InputError(f"a voxel mask needs {self._n} entries, got {mask.numel()}")
        return self.keep_only(~mask)

    def recolor(self, mask: torch.Tensor, rgb) -> int:
        """Give the voxels where bool (N,) ``mask`` is True the colour ``rgb`` (3 floats in [0, 1])."""
        mask = torch.as_tensor(mask, device=self.device, dtype=torch.bool).reshape(-1)
        if mask.numel() != self._n:
            raise InputError(f"a voxel mask needs {self._n} entries, got {mask.numel()}")
        n = int(mask.sum())
        if n:
            self._rgb[: self._n][mask] = torch.as_tensor(rgb, dtype=torch.float32, device=self.device).reshape(3)
            self.revision += 1
        return n

    def capture(self, ids) -> Snapshot:
        """The full state of the voxels at positions ``ids`` (int64), sorted by position."""
        ids = torch.sort(torch.as_tensor(ids, dtype=torch.int64, device=self.device).reshape(-1)).values
        entity = self._entity[ids].clone()
        return Snapshot(self._keys[ids].clone(), self._xyz[ids].clone(), self._rgb[ids].clone(),
                        self._count[ids].clone(), self._last_seen[ids].clone(), ids.clone(), entity,
                        self.entity_table.placements(entity))

    def capture_region(self, lo, hi) -> Snapshot:
        """The full state of the voxels whose point lies in the box [lo, hi] (3 floats each)."""
        lo = torch.as_tensor(lo, dtype=torch.float32, device=self.device).reshape(3)
        hi = torch.as_tensor(hi, dtype=torch.float32, device=self.device).reshape(3)
        return self.capture(((self.xyz >= lo) & (self.xyz <= hi)).all(1).nonzero(as_tuple=True)[0])

    def restore(self, state: Snapshot, in_place: bool = False, overwrite: bool = True) -> int:
        """Put captured voxels back; returns how many were written.

        Voxels that exist are overwritten (unless ``overwrite`` is False: then only missing ones
        come back), missing ones re-created: at their recorded positions when ``in_place`` (i.e.
        the arrays are exactly the captured ones minus them, so the order comes back too),
        else appended. Entity voxels come back only while that entity is still where it was when
        captured (same placement), so an old snapshot never leaves a ghost of a moved or deleted
        entity; and a static voxel never overwrites a voxel an entity holds now.
        """
        if len(state) == 0:
            return 0
        valid = (state.entity == 0) | (self.entity_table.placements(state.entity) == state.placement)
        if not bool(valid.all()):
            state, in_place = state.subset(valid), False
            if len(state) == 0:
                return 0
        self._layout_version += 1  # blocks may change
        self.revision += 1
        ids = self._index.find(state.keys)
        present = ids >= 0
        written = 0
        if present.any():
            current = self._entity[ids.clamp(min=0)]
            held = present & (current != 0) & (current != state.entity)
            if held.any():  # an entity holds the key now: the voxel returns when that entity leaves
                self.entity_table.cover(current[held], state.subset(held))
            keep = present & ~held if overwrite else torch.zeros_like(present)
            if keep.any():
                p = ids[keep]
                self._xyz[p] = state.xyz[keep]
                self._rgb[p] = state.rgb[keep]
                self._count[p] = state.count[keep]
                self._last_seen[p] = state.last_seen[keep]
                self._entity[p] = state.entity[keep]
                self._block[p] = self._block_ids(state.xyz[keep])
                written += int(keep.sum())
        absent = state.subset(~present)
        if len(absent) == 0:
            return written
        n, m = self._n, len(absent)
        total = n + m
        if total > self._keys.shape[0]:
            self._grow_to(total)
        values = (absent.keys, absent.xyz, absent.rgb, absent.count, absent.last_seen, self._block_ids(absent.xyz),
                  absent.entity)
        pos = absent.index
        if in_place and int(pos.max()) < total and torch.unique(pos).numel() == m:
            slot = torch.zeros(total, dtype=torch.bool, device=self.device)
            slot[pos] = True
            others = (~slot).nonzero(as_tuple=True)[0]
            for name, value in zip(_ARRAYS, values):
                arr = getattr(self, name)
                arr[others] = arr[:n].clone()
                arr[pos] = value
            self._n = total
            self._index.rebuild(self._keys[:total])
        else:
            ids, _ = self._index.insert(absent.keys)
            for name, value in zip(_ARRAYS, values):
                getattr(self, name)[ids] = value
            self._n = self._index.size
        return written + m

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
        per_voxel = 8 + 12 + 12 + 4 + 4 + 8 + 4
        return MemoryStats(
            voxels=self._n,
            voxel_size=self.voxel_size,
            bounds_min=lo,
            bounds_max=hi,
            frames_fused=self.frames_fused,
            revision=self.revision,
            memory_bytes=self._n * per_voxel + self._index.nbytes,  # resident: reserved rows are untouched
            depth_dropped=self.depth_dropped,
        )
