"""Atomic PLY save/load of a :class:`SpatialMemory` (through Open3D's tensor I/O).

The file holds one vertex per voxel: float x y z, uchar red green blue and, when written by
us, int ``count`` (observations). Saving writes a temporary file in the same folder, fsyncs it
and renames it over the target, so a crash mid-save leaves the previous map intact.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .._open3d import open3d
from ..errors import FileFormatError
from .spatial_memory import SpatialMemory


def save_ply(memory: SpatialMemory, path: str | os.PathLike) -> Path:
    """Write ``memory`` to ``path`` atomically; returns the final path."""
    o3d = open3d()
    path = Path(path)
    if path.suffix.lower() != ".ply":
        raise FileFormatError(f"map files must end in .ply: {path}")
    if not path.parent.is_dir():
        raise FileFormatError(f"folder does not exist: {path.parent}")
    xyz, rgb, counts = memory.to_numpy()
    pcd = o3d.t.geometry.PointCloud()
    pcd.point.positions = o3d.core.Tensor(xyz)
    pcd.point.colors = o3d.core.Tensor(rgb)
    pcd.point.count = o3d.core.Tensor(counts.reshape(-1, 1))
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.ply")
    try:
        if not o3d.t.io.write_point_cloud(str(tmp), pcd):
            raise FileFormatError(f"could not write {tmp}")
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise FileFormatError(f"could not save map to {path}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


_PLY_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
              "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}


def _check_ply(path: Path) -> int:
    """Validate the header and that the body is complete; returns the vertex count.

    Open3D reads truncated files without failing (it fills the missing values), so the body
    length is checked here: binary files by size, ASCII files by line count.
    """
    elements: list[list] = []  # [name, count, row bytes or None when it has list properties]
    fmt = None
    with open(path, "rb") as fh:
        if fh.read(4) != b"ply\n":
            raise FileFormatError(f"not a PLY file: {path}")
        while True:
            line = fh.readline()
            if not line:
                raise FileFormatError(f"PLY header has no end_header: {path}")
            parts = line.decode("ascii", "replace").split()
            if not parts:
                continue
            if parts[0] == "end_header":
                break
            if parts[0] == "format" and len(parts) >= 2:
                fmt = parts[1]
            elif parts[0] == "element" and len(parts) == 3 and parts[2].isdigit():
                elements.append([parts[1], int(parts[2]), 0])
            elif parts[0] == "property" and elements:
                size = _PLY_SIZES.get(parts[1]) if parts[1] != "list" else None
                elements[-1][2] = None if size is None or elements[-1][2] is None else elements[-1][2] + size
        body_start = fh.tell()
        vertices = next((e[1] for e in elements if e[0] == "vertex"), None)
        if vertices is None or fmt is None:
            raise FileFormatError(f"PLY header has no format or vertex element: {path}")
        if fmt == "ascii":
            rows = sum(1 for ln in fh if ln.strip())
            if rows < sum(e[1] for e in elements):
                raise FileFormatError(f"truncated PLY: {rows} data lines for {sum(e[1] for e in elements)} elements: {path}")
        elif all(e[2] is not None for e in elements):
            need = sum(e[1] * e[2] for e in elements)
            have = path.stat().st_size - body_start
            if have < need:
                raise FileFormatError(f"truncated PLY: {have} bytes of data, header needs {need}: {path}")
    return vertices


def read_ply_points(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a PLY point cloud: ``(xyz float32 (N,3), rgb uint8 (N,3), counts int32 (N,) or None)``.

    Files without colours get mid-grey. Raises :class:`FileFormatError` for a missing,
    unreadable or empty file.
    """
    o3d = open3d()
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"no such file: {path}")
    declared = _check_ply(path)
    pcd = o3d.t.io.read_point_cloud(str(path))
    if pcd.is_empty() or "positions" not in pcd.point:
        raise FileFormatError(f"unreadable or empty PLY point cloud: {path}")
    if len(pcd.point.positions) != declared:
        raise FileFormatError(f"truncated PLY: header declares {declared} vertices, read {len(pcd.point.positions)}: {path}")
    xyz = pcd.point.positions.numpy().astype(np.float32)
    if not np.all(np.isfinite(xyz)):
        raise FileFormatError(f"PLY has NaN or inf coordinates: {path}")
    if "colors" in pcd.point:
        rgb = pcd.point.colors.numpy()
        rgb = rgb if rgb.dtype == np.uint8 else (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)
    else:
        rgb = np.full_like(xyz, 128, dtype=np.uint8)
    counts = pcd.point.count.numpy().reshape(-1).astype(np.int32) if "count" in pcd.point else None
    return xyz, rgb, counts


def load_ply(path: str | os.PathLike, memory: SpatialMemory) -> SpatialMemory:
    """Replace the contents of ``memory`` by the map in ``path`` (re-voxelised at its voxel size).

    The memory is only cleared once the file has been read successfully.
    """
    xyz, rgb, counts = read_ply_points(path)
    memory.clear()
    memory.insert_points(xyz, rgb, counts=np.maximum(counts, 1) if counts is not None else None)
    return memory
