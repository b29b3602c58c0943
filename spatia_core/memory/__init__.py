"""Spatial memory: the voxelised coloured point cloud of the static scene."""

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
from .ply import load_ply, read_ply_points, save_ply
from .spatial_memory import FuseResult, MemoryStats, SpatialMemory, backproject, check_rgbd
from .voxel_hash import VoxelHash, pack_coords, unpack_keys, voxel_keys

__all__ = [
    "EditRecord",
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
