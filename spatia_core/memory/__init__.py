"""Spatial memory: the voxelised coloured point cloud of the scene, with named entities in it."""

from .edit import (
    EditRecord,
    MemoryEditor,
    add_object,
    add_ply,
    add_points,
    in_box,
    in_mask,
    object_pose,
    recolor_box,
    recolor_mask,
    remove_box,
    remove_mask,
)
from .blocks import BlockIndex
from .entities import EntityInfo, delete_entity, set_entity_pose, spawn_entity  # and entities.entity/entities()
from .ply import MapData, load_ply, read_map, read_ply_points, save_ply
from .snapshot import Snapshot
from .spatial_memory import FuseResult, MemoryStats, SpatialMemory, WriteResult, backproject, check_rgbd
from .voxel_hash import VoxelHash, pack_coords, unpack_keys, voxel_keys

__all__ = [
    "BlockIndex",
    "EditRecord",
    "EntityInfo",
    "MapData",
    "Snapshot",
    "WriteResult",
    "delete_entity",
    "read_map",
    "set_entity_pose",
    "spawn_entity",
    "FuseResult",
    "MemoryEditor",
    "add_object",
    "add_ply",
    "add_points",
    "in_box",
    "in_mask",
    "object_pose",
    "recolor_box",
    "recolor_mask",
    "remove_box",
    "remove_mask",
    "MemoryStats",
    "SpatialMemory",
    "VoxelHash",
    "backproject",
    "check_rgbd",
    "load_ply",
    "pack_coords",
    "read_ply_points",
    "save_ply",
    "unpack_keys",
    "voxel_keys",
]
