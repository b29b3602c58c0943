"""Entities: named objects in the memory that can be moved, deleted and listed.

An entity is a point cloud in its own frame (points given directly, or a PLY file) placed at a
pose (4x4 map <- entity frame) and scale: ``p_map = R (s p) + t``. Placing it voxelises the
transformed points at the memory's voxel size and writes them with the entity's id
(:meth:`SpatialMemory.write_voxels`); they replace what was there, and the static voxels they
replaced are kept with the entity. Moving it (:func:`set_entity_pose`) removes its voxels, puts
those static voxels back and places its *source points* again at the new pose, so a move is
exact (no drift from re-voxelising voxels) and leaves no ghost; deleting does the same without
the re-insert. The static scene (id 0) is not an entity.

Rules that keep the bookkeeping consistent:

* fusion never writes entity voxels (see :class:`SpatialMemory`); the size bound evicts them last;
* an entity placed over another one takes the voxels it lands in; they return to the other one
  when it leaves, if the other one has not moved meanwhile (snapshots carry the placement);
* box and mask edits treat entity voxels like any voxel (removing or recolouring them); the
  next move re-creates the entity whole from its source points;
* bounds and voxel counts are read from the memory's entity ids, so they are never stale.

Names: 1-64 characters of ``A-Z a-z 0-9 _ / -``. Ids start at 1 and are not reused within one
memory (until it is cleared or reloaded).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ..errors import EntityError, InputError
from ..geometry import validate_pose
from .colors import as_rgb_float
from .snapshot import Snapshot
from .voxel_hash import voxel_keys

if TYPE_CHECKING:
    from .spatial_memory import SpatialMemory

_NAME = re.compile(r"[A-Za-z0-9_/-]{1,64}")


@dataclass(frozen=True)
class EntityInfo:
    """An entity as it is now."""

    name: str
    id: int  # >= 1; 0 is the static scene
    pose: np.ndarray  # (4, 4) float64 map <- entity frame
    scale: float
    lo: np.ndarray  # (3,) world-frame axis-aligned bounds of its voxels now
    hi: np.ndarray
    n_voxels: int
    source: str  # "points" or the PLY path it came from


@dataclass
class EntityRecord:
    """What the memory keeps of an entity (its source points in its own frame)."""

    name: str
    id: int
    pose: np.ndarray  # float64 (4, 4)
    scale: float
    source: str
    points: torch.Tensor  # float32 (P, 3) entity frame
    colors: torch.Tensor  # float32 (P, 3) in [0, 1]
    placement: int  # unique number of the current placement (changes with every move)
    covered: Snapshot | None = None  # the voxels its placement replaced, as they were


class EntityTable:
    """The entities of one memory, by name and id."""

    def __init__(self):
        self._by_name: dict[str, EntityRecord] = {}
        self._by_id: dict[int, EntityRecord] = {}
        self.next_id = 1
        self._next_placement = 1

    def __len__(self) -> int:
        return len(self._by_name)

    def __contains__(self, name) -> bool:
        return name in self._by_name

    def __iter__(self):
        return iter(sorted(self._by_name.values(), key=lambda r: r.id))

    def get(self, name: str) -> EntityRecord:
        rec = self._by_name.get(name)
        if rec is None:
            raise EntityError("unknown", f"no entity named {name!r}")
        return rec

    def by_id(self, entity_id: int) -> EntityRecord | None:
        return self._by_id.get(int(entity_id))

    def new_placement(self) -> int:
        self._next_placement += 1
        return self._next_placement - 1

    def add(self, rec: EntityRecord) -> None:
        self._by_name[rec.name] = rec
        self._by_id[rec.id] = rec
        self.next_id = max(self.next_id, rec.id + 1)
        self._next_placement = max(self._next_placement, rec.placement + 1)

    def remove(self, name: str) -> EntityRecord:
        rec = self._by_name.pop(name)
        del self._by_id[rec.id]
        return rec

    def cover(self, owner: torch.Tensor, state: Snapshot) -> None:
        """Voxels ``state`` could not be put back because entities (ids ``owner``) hold their keys
        now: they go to those entities' covered voxels, to come back when they leave."""
        for value in torch.unique(owner).tolist():
            rec = self._by_id.get(value)
            if rec is not None:
                part = state.subset(owner == value)
                rec.covered = part if rec.covered is None else rec.covered.merged(part)

    def placements(self, entity: torch.Tensor) -> torch.Tensor:
        """int64 current placement of each entity id in ``entity`` (0 for the static scene, -1 for
        ids that no longer exist)."""
        out = torch.zeros(entity.shape, dtype=torch.int64, device=entity.device)
        if not self._by_id or entity.numel() == 0:
            out[entity != 0] = -1
            return out
        for value in torch.unique(entity).tolist():
            if value != 0:
                rec = self._by_id.get(value)
                out[entity == value] = rec.placement if rec is not None else -1
        return out


# -- validation ---------------------------------------------------------------------------------
def check_name(name) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise EntityError("bad_name", f"entity name {name!r} must be 1-64 characters of A-Z a-z 0-9 _ / -")
    return name


def check_placement(pose, scale) -> tuple[np.ndarray, float]:
    try:
        pose = validate_pose(np.eye(4) if pose is None else pose, "entity pose")
    except InputError as exc:
        raise EntityError("bad_pose", str(exc)) from None
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise EntityError("bad_pose", f"entity scale must be a number, got {scale!r}") from None
    if not (np.isfinite(scale) and scale > 0):
        raise EntityError("bad_pose", f"entity scale must be a positive number, got {scale}")
    return pose, scale


def source_points(memory: "SpatialMemory", points, colors) -> tuple[torch.Tensor, torch.Tensor]:
    """float32 (P, 3) points and float32 (P, 3) colours in [0, 1] (default mid-grey)."""
    xyz = torch.as_tensor(np.asarray(points) if not torch.is_tensor(points) else points, device=memory.device)
    if xyz.ndim != 2 or xyz.shape[1] != 3:
        raise InputError(f"entity points must be (N, 3), got shape {tuple(xyz.shape)}")
    if xyz.shape[0] == 0:
        raise EntityError("empty", "an entity needs at least one point")
    xyz = xyz.float()
    if not torch.isfinite(xyz).all():
        raise InputError("entity points contain NaN or inf")
    if colors is None:
        rgb = torch.full_like(xyz, 128 / 255)
    else:
        rgb = torch.as_tensor(np.asarray(colors) if not torch.is_tensor(colors) else colors, device=memory.device)
        if rgb.shape != xyz.shape:
            raise InputError(f"entity colours must be (N, 3) like the points, got {tuple(rgb.shape)}")
        rgb = as_rgb_float(rgb)
        if not torch.isfinite(rgb).all() or rgb.min() < 0 or rgb.max() > 1:
            raise InputError("float entity colours must be finite and in [0, 1] (or pass uint8)")
    return xyz.contiguous(), rgb.contiguous()


def transform(points: torch.Tensor, pose: np.ndarray, scale: float) -> torch.Tensor:
    """``R (s p) + t`` in float64, returned as float32."""
    p = torch.as_tensor(pose, dtype=torch.float64, device=points.device)
    return ((points.double() * scale) @ p[:3, :3].T + p[:3, 3]).float()


# -- placing ------------------------------------------------------------------------------------
def _placed_points(memory: "SpatialMemory", rec: EntityRecord, pose: np.ndarray, scale: float) -> torch.Tensor:
    """The entity's points in the map at ``pose``; ``bad_pose`` when they leave the voxel grid."""
    world = transform(rec.points, pose, scale)
    try:
        voxel_keys(world, memory.voxel_size)
    except InputError as exc:
        raise EntityError("bad_pose", f"entity {rec.name!r} at that pose: {exc}") from None
    return world


def _place(memory: "SpatialMemory", rec: EntityRecord, pose: np.ndarray, scale: float) -> None:
    """Write ``rec`` at ``pose`` (it must not be in the memory now); nothing changes on error."""
    world = _placed_points(memory, rec, pose, scale)
    placement = memory.entity_table.new_placement()
    result = memory.write_voxels(world, rec.colors, 1, rec.id)
    rec.pose, rec.scale, rec.placement, rec.covered = pose.copy(), float(scale), placement, result.previous


def _unplace(memory: "SpatialMemory", rec: EntityRecord) -> None:
    """Remove ``rec``'s voxels and put back what its placement covered."""
    memory.remove(memory.entity_ids == rec.id)
    rec.placement = memory.entity_table.new_placement()  # voxels captured with it are void now
    if rec.covered is not None:
        memory.restore(rec.covered, overwrite=False)
        rec.covered = None


def info(memory: "SpatialMemory", rec: EntityRecord) -> EntityInfo:
    mine = memory.entity_ids == rec.id
    n = int(mine.sum())
    if n:
        pts = memory.xyz[mine]
        lo, hi = pts.min(0).values.double().cpu().numpy(), pts.max(0).values.double().cpu().numpy()
    else:
        lo = hi = rec.pose[:3, 3].copy()
    return EntityInfo(rec.name, rec.id, rec.pose.copy(), rec.scale, lo, hi, n, rec.source)


# -- operations ---------------------------------------------------------------------------------
def spawn_entity(memory: "SpatialMemory", name: str, *, points=None, colors=None, ply: str | os.PathLike | None = None,
                 pose=None, scale: float = 1.0) -> EntityInfo:
    """Add entity ``name`` from ``points`` (N, 3) in its frame with ``colors`` (N, 3) uint8 or
    float [0, 1], or from the PLY file ``ply``, at ``pose`` (default identity) and ``scale``."""
    check_name(name)
    if name in memory.entity_table:
        raise EntityError("exists", f"an entity named {name!r} exists already")
    pose, scale = check_placement(pose, scale)
    if (points is None) == (ply is None):
        if points is None:
            raise EntityError("empty", "an entity needs points or a PLY file")
        raise InputError("give an entity points or a PLY file, not both")
    if ply is not None:
        from .ply import read_ply_points

        xyz, rgb, _ = read_ply_points(ply, allow_empty=True)
        if len(xyz) == 0:
            raise EntityError("empty", f"the PLY file has no points: {ply}")
        points, colors, source = xyz, rgb, str(ply)
    else:
        source = "points"
    xyz, rgb = source_points(memory, points, colors)
    table = memory.entity_table
    rec = EntityRecord(name, table.next_id, pose, scale, source, xyz, rgb, 0)
    _place(memory, rec, pose, scale)
    table.add(rec)
    return info(memory, rec)


def delete_entity(memory: "SpatialMemory", name: str) -> None:
    """Remove entity ``name`` and its voxels; the static voxels it covered come back."""
    rec = memory.entity_table.get(name)
    _unplace(memory, rec)
    memory.entity_table.remove(name)


def set_entity_pose(memory: "SpatialMemory", name: str, pose, scale: float | None = None) -> EntityInfo:
    """Move entity ``name`` to ``pose`` (and ``scale``, default unchanged): its voxels are removed,
    what they covered comes back, and its source points are placed again."""
    rec = memory.entity_table.get(name)
    pose, scale = check_placement(pose, rec.scale if scale is None else scale)
    _placed_points(memory, rec, pose, scale)  # checked before anything is removed
    _unplace(memory, rec)
    _place(memory, rec, pose, scale)
    return info(memory, rec)


def entity(memory: "SpatialMemory", name: str) -> EntityInfo:
    """Entity ``name`` now (pose, scale, bounds, voxels)."""
    return info(memory, memory.entity_table.get(name))


def entities(memory: "SpatialMemory") -> list[EntityInfo]:
    """Every entity, by id."""
    return [info(memory, rec) for rec in memory.entity_table]
