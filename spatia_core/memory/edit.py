"""Edits of the spatial memory: remove, recolour or add geometry, and undo.

Plain verbs work on a :class:`SpatialMemory` directly:

* :func:`remove_box` / :func:`recolor_box`: what lies in an axis-aligned box of the map frame
  (lower and upper corners, metres).
* :func:`remove_mask` / :func:`recolor_mask`: what a 2D mask selects in a camera view. A voxel is
  selected when its centre projects into a masked pixel (pixel = ``floor(f x / z + c + 0.5)``,
  as the renderer draws it) and, by default, it belongs to the *visible surface*: its depth is at
  most the rendered depth of that pixel plus a tolerance (``2 * voxel_size + 0.02 * depth``),
  so what lies behind the masked surface stays. With ``depth_range=(near, far)`` every voxel
  along the mask's rays between ``near`` and ``far`` metres (camera z) is selected instead.
* :func:`add_object` / :func:`add_ply`: points in object coordinates, scaled by ``scale`` about
  the object origin, then moved by ``pose`` (4x4 object-to-map): ``p_map = R (s p) + t``. They
  are voxelised at the memory's voxel size (mean per voxel) and *replace* the voxels they land
  in, with ``count`` observations and marked as seen in the latest fused frame.
* :func:`add_points`: fuse points like an observation (running means with what is there).

Every edit bumps the memory's revision so renderers and publishers see the change.

Undo: :class:`MemoryEditor` makes the same edits and keeps a bounded journal (the last
``max_undo`` edits, at most ``max_undo_bytes`` of saved state; the newest edit is always kept).
Each entry records exactly what the edit changed: the full state (key, point, colour,
observation count, last-seen frame, position in the arrays) of every voxel it removed or
changed, and the keys of the voxels it created. :meth:`MemoryEditor.undo` deletes the created
voxels and puts the saved state back:

* when nothing else changed the memory since the edit (its revision is the one the edit left),
  the arrays come back bit-exactly, in their original order (renders are identical); when only
  observations were fused since (no voxel added or removed), the touched voxels come back at their
  original positions too, so renders are identical (z-buffer ties are broken by array order);
* after fusion (or other unrecorded changes) the entry is still valid, because it is keyed by
  voxel: the voxels the edit touched return to their pre-edit state, everything else keeps what
  happened since (voxels re-created by fusion inside a removed region are overwritten by the
  saved ones; voxels the size bound evicted meanwhile are not brought back). Fusion therefore
  never invalidates the journal;
* clearing or reloading the memory (``clear()``, ``load_ply``) invalidates the whole journal:
  undoing edits of another map would corrupt it.

Entities (:mod:`.entities`) are not journaled. Box and mask edits treat their voxels like any
other; undo never removes or overwrites a voxel an entity holds now, and never brings back
voxels of an entity that has moved or gone since (what it would put under an entity comes back
when the entity leaves). All edits go through the memory's public operations
(:meth:`SpatialMemory.write_voxels`, ``remove``, ``recolor``, ``capture``, ``restore``).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import numpy as np
import torch

from ..cameras import pixel_index, project
from ..errors import InputError
from ..geometry import Intrinsics, validate_pose
from .colors import as_rgb_float
from .snapshot import Snapshot
from .spatial_memory import FuseResult, SpatialMemory
from .voxel_hash import pack_coords

log = logging.getLogger(__name__)

#: The saved state of some voxels (kept under its old name).
VoxelState = Snapshot


# -- validation ---------------------------------------------------------------------------------
def _box(lo, hi, device) -> tuple[torch.Tensor, torch.Tensor]:
    lo = np.asarray(lo, dtype=np.float64).reshape(-1)
    hi = np.asarray(hi, dtype=np.float64).reshape(-1)
    if lo.shape != (3,) or hi.shape != (3,) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise InputError("a box needs finite lower and upper corners of 3 values each")
    if np.any(hi < lo):
        raise InputError(f"box upper corner {hi.tolist()} is below its lower corner {lo.tolist()}")
    return torch.tensor(lo, dtype=torch.float32, device=device), torch.tensor(hi, dtype=torch.float32, device=device)


def _colour(rgb) -> np.ndarray:
    """A colour as float64 (3,) in [0, 1] from a uint8-style triple or floats in [0, 1]."""
    colour = np.asarray(rgb, dtype=np.float64).reshape(-1)
    if colour.shape != (3,) or not np.all(np.isfinite(colour)):
        raise InputError("a colour needs 3 finite values")
    if colour.max() > 1.0:
        colour = colour / 255.0
    if colour.min() < 0 or colour.max() > 1:
        raise InputError("colour values must lie in [0, 255] (or [0, 1])")
    return colour


def _points(memory: SpatialMemory, xyz, rgb) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (N, 3) points and float32 (N, 3) colours in [0, 1] on the memory's device."""
    xyz = torch.as_tensor(np.asarray(xyz) if not torch.is_tensor(xyz) else xyz, device=memory.device)
    rgb = torch.as_tensor(np.asarray(rgb) if not torch.is_tensor(rgb) else rgb, device=memory.device)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise InputError(f"points must be (N, 3) with matching colours, got {tuple(xyz.shape)} and {tuple(rgb.shape)}")
    if xyz.shape[0] == 0:
        raise InputError("no points to add")
    xyz = xyz.float()
    if not torch.isfinite(xyz).all():
        raise InputError("points contain NaN or inf")
    rgb = as_rgb_float(rgb)
    if not torch.isfinite(rgb).all() or rgb.min() < 0 or rgb.max() > 1:
        raise InputError("float colours must be finite and in [0, 1] (or pass uint8)")
    return xyz, rgb


def object_pose(xyz=(0.0, 0.0, 0.0), rpy=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 object-to-map transform from a position (m) and roll, pitch, yaw (rad, fixed x-y-z)."""
    from ..robot import rpy_matrix

    xyz, rpy = np.asarray(xyz, dtype=np.float64).reshape(-1), np.asarray(rpy, dtype=np.float64).reshape(-1)
    if xyz.shape != (3,) or rpy.shape != (3,) or not (np.all(np.isfinite(xyz)) and np.all(np.isfinite(rpy))):
        raise InputError("an object pose needs 3 finite coordinates and 3 finite angles")
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rpy_matrix(*rpy), xyz
    return pose


# -- selections ---------------------------------------------------------------------------------
def in_box(memory: SpatialMemory, lo, hi) -> torch.Tensor:
    """bool (N,): voxels whose point lies inside the box [lo, hi]."""
    lo_t, hi_t = _box(lo, hi, memory.device)
    return ((memory.xyz >= lo_t) & (memory.xyz <= hi_t)).all(1)


def in_mask(memory: SpatialMemory, mask, pose, intrinsics: Intrinsics, depth_range=None, tolerance=None) -> torch.Tensor:
    """bool (N,): voxels a 2D ``mask`` selects in the view ``pose`` (see the module docstring).

    ``mask`` bool (H, W) with H, W = the intrinsics' size; ``pose`` camera-to-world (4, 4);
    ``depth_range`` ``(near, far)`` metres selects everything along the rays between them
    (default ``None``: the visible surface only); ``tolerance`` metres behind the rendered depth
    still counted as the visible surface (default ``2 * voxel_size + 0.02 * depth``).
    """
    from ..render import render_memory

    pose = validate_pose(pose, "camera pose")
    mask_np = np.asarray(mask)
    if mask_np.shape != (intrinsics.height, intrinsics.width):
        raise InputError(f"mask is {mask_np.shape[1] if mask_np.ndim == 2 else '?'}x{mask_np.shape[0]}, "
                         f"the camera is {intrinsics.width}x{intrinsics.height}")
    mask_t = torch.as_tensor(mask_np.astype(bool), device=memory.device)
    if not bool(mask_t.any()):
        raise InputError("the mask selects no pixel")
    if depth_range is not None:
        near, far = (float(v) for v in np.asarray(depth_range, dtype=np.float64).reshape(2))
        if not (np.isfinite(near) and near >= 0 and far > near):
            raise InputError(f"depth range must be 0 <= near < far, got {near}, {far}")
    if tolerance is not None and not (np.isfinite(tolerance) and tolerance >= 0):
        raise InputError(f"tolerance must be >= 0 m, got {tolerance}")
    n = len(memory)
    if n == 0:
        return torch.zeros(0, dtype=torch.bool, device=memory.device)
    k = intrinsics
    pose_t = torch.as_tensor(pose, dtype=torch.float32, device=memory.device)
    uv, z = project(memory.xyz, pose_t, k.matrix())  # float32 on the memory's device; uv is inf/nan where z <= 0
    u, v = pixel_index(uv).unbind(1)  # int64; only read where sel (z > near_min) below
    near_min = 1e-3 if depth_range is None else max(near, 1e-3)
    sel = (z > near_min) & (u >= 0) & (u < k.width) & (v >= 0) & (v < k.height)
    uu, vv = torch.where(sel, u, 0), torch.where(sel, v, 0)
    sel &= mask_t[vv, uu]
    if depth_range is not None:
        return sel & (z <= far)
    depth = render_memory(memory, k, pose, compile=False).depth[0]  # one view: not worth compiling
    d = depth[vv, uu]
    tol = torch.full_like(d, float(tolerance)) if tolerance is not None else 2 * memory.voxel_size + 0.02 * d
    return sel & (d > 0) & (z <= d + tol)


# -- plain edits (no journal) -------------------------------------------------------------------
def remove_box(memory: SpatialMemory, lo, hi) -> int:
    """Remove every voxel inside the box; returns how many were removed."""
    return memory.remove(in_box(memory, lo, hi))


def _paint(memory: SpatialMemory, select: torch.Tensor, rgb) -> int:
    return memory.recolor(select, _colour(rgb))


def recolor_box(memory: SpatialMemory, lo, hi, rgb) -> int:
    """Set the colour (uint8 triple or floats in [0, 1]) of every voxel inside the box."""
    _colour(rgb)  # check the colour before the box, as before
    return _paint(memory, in_box(memory, lo, hi), rgb)


def remove_mask(memory: SpatialMemory, mask, pose, intrinsics: Intrinsics, depth_range=None, tolerance=None) -> int:
    """Remove the voxels a 2D mask selects (see :func:`in_mask`); returns how many."""
    return memory.remove(in_mask(memory, mask, pose, intrinsics, depth_range, tolerance))


def recolor_mask(memory: SpatialMemory, mask, pose, intrinsics: Intrinsics, rgb, depth_range=None, tolerance=None) -> int:
    """Recolour the voxels a 2D mask selects (see :func:`in_mask`); returns how many."""
    _colour(rgb)
    return _paint(memory, in_mask(memory, mask, pose, intrinsics, depth_range, tolerance), rgb)


def add_points(memory: SpatialMemory, xyz, rgb) -> FuseResult:
    """Add coloured points (float (N, 3) metres, uint8 or [0, 1] (N, 3) colours) to the memory."""
    return memory.insert_points(xyz, rgb)


def _transform(xyz: torch.Tensor, pose, scale: float) -> torch.Tensor:
    pose = validate_pose(np.eye(4) if pose is None else pose, "object pose")
    if not (np.isfinite(scale) and scale > 0):
        raise InputError(f"scale must be a positive number, got {scale}")
    p = torch.as_tensor(pose, dtype=torch.float64, device=xyz.device)
    out = (xyz.double() * float(scale)) @ p[:3, :3].T + p[:3, 3]
    return out.float()


def _add_voxels(memory: SpatialMemory, xyz, rgb, pose=None, scale: float = 1.0, count: int = 1):
    """Voxelise and write an object; returns ``(voxels written, previous state, created keys)``."""
    xyz, rgb = _points(memory, xyz, rgb)
    if int(count) < 1:
        raise InputError(f"count must be >= 1, got {count}")
    result = memory.write_voxels(_transform(xyz, pose, scale), rgb, int(count))
    return int(result.keys.numel()), result.previous, result.created


def add_object(memory: SpatialMemory, xyz, rgb, pose=None, scale: float = 1.0, count: int = 1) -> int:
    """Add an object: points ``xyz`` float (N, 3) in object coordinates with colours ``rgb``
    (uint8 or [0, 1]), scaled by ``scale`` then moved by ``pose`` (4x4 object-to-map, default
    identity). Its voxels replace what is there; returns how many voxels it wrote."""
    return _add_voxels(memory, xyz, rgb, pose, scale, count)[0]


def add_ply(memory: SpatialMemory, path: str | os.PathLike, pose=None, scale: float = 1.0, count: int = 1) -> int:
    """Add the point cloud of a PLY file as an object (see :func:`add_object`)."""
    from .ply import read_ply_points

    xyz, rgb, _ = read_ply_points(path)
    return add_object(memory, xyz, rgb, pose, scale, count)


# -- journal ------------------------------------------------------------------------------------
@dataclass
class EditRecord:
    """What one edit changed (enough to undo it)."""

    operation: str
    voxels_changed: int
    previous: VoxelState  # voxels the edit removed or changed, as they were before it
    created: torch.Tensor  # int64 keys of the voxels the edit created
    revision_before: int
    revision_after: int
    frames_fused_before: int
    exact: bool = True  # False when the edit also made unrecorded changes (eviction)
    layout_before: int = -1  # the memory's voxel layout (set and order) before and after the edit
    layout_after: int = -1

    @property
    def nbytes(self) -> int:
        return self.previous.nbytes + int(self.created.numel()) * 8


class MemoryEditor:
    """Edits of one memory with an undo journal (see the module docstring for the guarantees).

    ``max_undo`` edits are kept (oldest dropped first), and at most ``max_undo_bytes`` of saved
    voxel state (the newest edit is always kept, whatever its size).
    """

    def __init__(self, memory: SpatialMemory, max_undo: int = 16, max_undo_bytes: int = 256 << 20):
        if max_undo < 1 or max_undo_bytes < 0:
            raise InputError("max_undo must be >= 1 and max_undo_bytes >= 0")
        self.memory = memory
        self.max_undo, self.max_undo_bytes = int(max_undo), int(max_undo_bytes)
        self._records: list[EditRecord] = []
        self._epoch = memory.epoch

    # -- journal ---------------------------------------------------------------------------
    def _check_epoch(self) -> None:
        """Drop the journal when the memory was cleared or reloaded since the last edit."""
        if self._epoch != self.memory.epoch:
            if self._records:
                log.info("memory was cleared or reloaded: %d undo entries dropped", len(self._records))
            self._records.clear()
            self._epoch = self.memory.epoch

    @property
    def history(self) -> list[str]:
        """Names of the edits that can be undone, oldest first."""
        self._check_epoch()
        return [r.operation for r in self._records]

    @property
    def journal_bytes(self) -> int:
        return sum(r.nbytes for r in self._records)

    def clear_history(self) -> None:
        self._records.clear()

    def _push(self, record: EditRecord) -> None:
        self._records.append(record)
        while len(self._records) > self.max_undo or (len(self._records) > 1 and self.journal_bytes > self.max_undo_bytes):
            self._records.pop(0)

    def _begin(self) -> tuple[int, int, int]:
        self._check_epoch()
        return self.memory.revision, self.memory.frames_fused, self.memory.layout_version

    def _end(self, name: str, changed: int, previous: VoxelState, created, start: tuple, exact=True) -> int:
        mem = self.memory
        created = torch.as_tensor(created if created is not None else [], dtype=torch.int64, device=mem.device)
        if mem.revision != start[0]:  # something changed: undoable
            self._push(EditRecord(name, changed, previous, created, start[0], mem.revision, start[1], exact,
                                  start[2], mem.layout_version))
        return changed

    # -- edits -----------------------------------------------------------------------------
    def _remove(self, name: str, select: torch.Tensor) -> int:
        start = self._begin()
        previous = self.memory.capture(select.nonzero(as_tuple=True)[0])
        n = self.memory.remove(select)
        return self._end(name, n, previous, None, start)

    def _recolor(self, name: str, select: torch.Tensor, rgb) -> int:
        start = self._begin()
        previous = self.memory.capture(select.nonzero(as_tuple=True)[0])
        n = _paint(self.memory, select, rgb)
        return self._end(name, n, previous, None, start)

    def remove_box(self, lo, hi) -> int:
        """Remove every voxel inside the box [lo, hi]; returns how many."""
        self._check_epoch()
        return self._remove("remove_box", in_box(self.memory, lo, hi))

    def recolor_box(self, lo, hi, rgb) -> int:
        """Recolour every voxel inside the box [lo, hi]; returns how many."""
        _colour(rgb)
        self._check_epoch()
        return self._recolor("recolor_box", in_box(self.memory, lo, hi), rgb)

    def remove_mask(self, mask, pose, intrinsics: Intrinsics, depth_range=None, tolerance=None) -> int:
        """Remove what a 2D mask selects (see :func:`in_mask`); returns how many voxels."""
        self._check_epoch()
        return self._remove("remove_mask", in_mask(self.memory, mask, pose, intrinsics, depth_range, tolerance))

    def recolor_mask(self, mask, pose, intrinsics: Intrinsics, rgb, depth_range=None, tolerance=None) -> int:
        """Recolour what a 2D mask selects (see :func:`in_mask`); returns how many voxels."""
        _colour(rgb)
        self._check_epoch()
        return self._recolor("recolor_mask", in_mask(self.memory, mask, pose, intrinsics, depth_range, tolerance), rgb)

    def add_object(self, xyz, rgb, pose=None, scale: float = 1.0, count: int = 1) -> int:
        """Add an object (see :func:`add_object`); returns how many voxels it wrote."""
        start = self._begin()
        n, previous, created = _add_voxels(self.memory, xyz, rgb, pose, scale, count)
        return self._end("add_object", n, previous, created, start)

    def add_ply(self, path: str | os.PathLike, pose=None, scale: float = 1.0, count: int = 1) -> int:
        """Add the point cloud of a PLY file as an object (see :func:`add_object`)."""
        from .ply import read_ply_points

        xyz, rgb, _ = read_ply_points(path)
        start = self._begin()
        n, previous, created = _add_voxels(self.memory, xyz, rgb, pose, scale, count)
        return self._end("add_ply", n, previous, created, start)

    def add_points(self, xyz, rgb) -> int:
        """Fuse points as an observation (see :func:`add_points`); returns voxels touched."""
        start = self._begin()
        mem = self.memory
        pts, _ = _points(mem, xyz, rgb)
        keys = torch.unique(pack_coords(torch.floor(pts / mem.voxel_size).to(torch.int64)))
        ids = mem.find(keys)
        previous = mem.capture(ids[ids >= 0])
        created = keys[ids < 0]
        n_before = len(mem)
        result = mem.insert_points(xyz, rgb)
        exact = len(mem) == n_before + created.numel()  # else the size bound evicted voxels
        return self._end("add_points", result.voxels_touched, previous, created, start, exact)

    def undo(self) -> EditRecord:
        """Undo the newest edit; returns its record. :class:`InputError` when there is none."""
        self._check_epoch()
        if not self._records:
            raise InputError("nothing to undo")
        mem = self.memory
        rec = self._records.pop()
        exact = rec.exact and mem.revision == rec.revision_after
        # no voxel added or removed since the edit (only observations): positions are still valid
        same_layout = rec.exact and mem.layout_version == rec.layout_after
        if rec.created.numel():
            ids = mem.find(rec.created)
            ids = ids[ids >= 0]
            ids = ids[mem.entity_ids[ids] == 0]  # voxels an entity holds now stay (edits never create entity voxels)
            drop = torch.zeros(len(mem), dtype=torch.bool, device=mem.device)
            drop[ids] = True
            mem.remove(drop)
        mem.restore(rec.previous, in_place=same_layout)
        if exact:
            mem.frames_fused = rec.frames_fused_before
        mem.revision += 1
        if self._records:
            prev = self._records[-1]
            if exact and prev.revision_after == rec.revision_before:
                prev.revision_after = mem.revision  # the memory is as that edit left it
            if same_layout and prev.layout_after == rec.layout_before:
                prev.layout_after = mem.layout_version  # same voxels in the same order as it left them
        return rec
