"""Atomic, verified PLY save/load of a :class:`SpatialMemory`.

The file holds one vertex per voxel: float x y z, uchar red green blue and, when written by
us, int ``count`` (observations), binary little-endian. Saving writes a temporary file in the
same folder, fsyncs it, checks its size and reads it back (a full disk or a short write is an
error, never a truncated map), then renames it over the target, so a crash mid-save leaves the
previous map intact; temporaries left by killed saves of the same file are removed. Loading
checks the whole file before the memory is touched: a failed load leaves it as it was.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from .._open3d import open3d
from ..errors import FileFormatError, InputError
from ..outputs import fsync_dir, sweep_stale_temps, temp_name
from .spatial_memory import SpatialMemory

_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
                    ("count", "<i4")])
_TMP_SUFFIX = ".tmp.ply"


def _header(n: int) -> bytes:
    props = {"<f4": "float", "u1": "uchar", "<i4": "int"}
    lines = ["ply", "format binary_little_endian 1.0", "comment spatia_ros spatial memory", f"element vertex {n}"]
    lines += [f"property {props[_VERTEX[name].str.replace('|', '')]} {name}" for name in _VERTEX.names]
    return ("\n".join(lines + ["end_header"]) + "\n").encode("ascii")


def _sweep(path: Path) -> None:
    """Remove the temporaries of killed saves of ``path`` (also the older name ``.STEM.PID.tmp.ply``)."""
    sweep_stale_temps(path, _TMP_SUFFIX)
    sweep_stale_temps(path.with_name(path.stem), _TMP_SUFFIX)


def save_ply(memory: SpatialMemory, path: str | os.PathLike) -> Path:
    """Write ``memory`` to ``path`` atomically and verified; returns the final path.

    An empty memory is saved as a valid PLY with no vertices. Raises :class:`FileFormatError`
    (and leaves any previous file at ``path`` untouched) if the file cannot be written whole.
    """
    path = Path(path)
    if path.suffix.lower() != ".ply":
        raise FileFormatError(f"map files must end in .ply: {path}")
    if not path.parent.is_dir():
        raise FileFormatError(f"folder does not exist: {path.parent}")
    xyz, rgb, counts = memory.to_numpy()
    rows = np.empty(len(xyz), _VERTEX)
    rows["x"], rows["y"], rows["z"] = xyz.T
    rows["red"], rows["green"], rows["blue"] = rgb.T
    rows["count"] = counts
    header = _header(len(rows))
    _sweep(path)
    tmp = temp_name(path, _TMP_SUFFIX)
    try:
        with open(tmp, "xb") as fh:
            fh.write(header)
            fh.write(rows.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        size, expected = tmp.stat().st_size, len(header) + rows.nbytes
        if size != expected:
            raise OSError(f"short write: {size} of {expected} bytes")
        back = read_ply_points(tmp, allow_empty=True)
        if not (np.array_equal(back[0], xyz) and np.array_equal(back[1], rgb) and np.array_equal(back[2], counts)):
            raise OSError("the file read back differs from the memory")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except (OSError, FileFormatError) as exc:
        raise FileFormatError(f"could not save map to {path}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


_PLY_SIZES = {"char": 1, "uchar": 1, "int8": 1, "uint8": 1, "short": 2, "ushort": 2, "int16": 2, "uint16": 2,
              "int": 4, "uint": 4, "int32": 4, "uint32": 4, "float": 4, "float32": 4, "double": 8, "float64": 8}


def _check_ply(path: Path) -> int:
    """Validate the header and that the body is complete; returns the vertex count.

    Open3D reads truncated or malformed files without failing (it leaves the missing values
    uninitialised), so the body is checked here: binary files by size, ASCII files row by row
    (each row must hold exactly its element's numbers).
    """
    elements: list[list] = []  # [name, count, row bytes or None when it has list properties, property count]
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
                elements.append([parts[1], int(parts[2]), 0, 0])
            elif parts[0] == "property" and elements:
                size = _PLY_SIZES.get(parts[1]) if parts[1] != "list" else None
                elements[-1][2] = None if size is None or elements[-1][2] is None else elements[-1][2] + size
                elements[-1][3] += 1
        body_start = fh.tell()
        vertices = next((e[1] for e in elements if e[0] == "vertex"), None)
        if vertices is None or fmt is None:
            raise FileFormatError(f"PLY header has no format or vertex element: {path}")
        if fmt == "ascii":
            _check_ascii_body(fh, elements, path)
        elif all(e[2] is not None for e in elements):
            need = sum(e[1] * e[2] for e in elements)
            have = path.stat().st_size - body_start
            if have < need:
                raise FileFormatError(f"truncated PLY: {have} bytes of data, header needs {need}: {path}")
    return vertices


def _check_ascii_body(fh, elements: list[list], path: Path) -> None:
    """Every data row of an ASCII PLY is complete and numeric (rows of list elements: at least numeric)."""
    lines = (ln for ln in fh if ln.strip())
    row = 0
    for name, count, size, n_props in elements:
        for _ in range(count):
            row += 1
            line = next(lines, None)
            if line is None:
                raise FileFormatError(f"truncated PLY: {row - 1} data lines, the header declares more: {path}")
            tokens = line.split()
            if size is not None and len(tokens) != n_props:
                raise FileFormatError(f"malformed PLY: data line {row} ({name}) has {len(tokens)} values, "
                                      f"expected {n_props}: {path}")
            try:
                [float(t) for t in tokens]
            except ValueError:
                raise FileFormatError(f"malformed PLY: data line {row} ({name}) is not all numbers: {path}") from None


def read_ply_points(path: str | os.PathLike, allow_empty: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read a PLY point cloud: ``(xyz float32 (N,3), rgb uint8 (N,3), counts int32 (N,) or None)``.

    Files without colours get mid-grey. Raises :class:`FileFormatError` for a missing,
    unreadable, truncated or malformed file, and for an empty one unless ``allow_empty``
    (a saved empty map).
    """
    o3d = open3d()
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"no such file: {path}")
    declared = _check_ply(path)
    if declared == 0 and allow_empty:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.int32)
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

    Everything that can fail (reading, checking, voxel keys in range) happens before the memory
    is cleared: on any error it is left exactly as it was.
    """
    import torch

    from .voxel_hash import voxel_keys

    xyz, rgb, counts = read_ply_points(path, allow_empty=True)
    try:
        voxel_keys(torch.from_numpy(xyz), memory.voxel_size)  # raises for points outside the voxel grid
    except InputError as exc:
        raise FileFormatError(f"cannot load {path}: {exc}") from None
    memory.clear()
    memory.insert_points(xyz, rgb, counts=np.maximum(counts, 1) if counts is not None else None)
    return memory
