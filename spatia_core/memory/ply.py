"""Atomic, verified PLY save/load of a :class:`SpatialMemory`.

The file holds one vertex per voxel: float x y z, uchar red green blue and, when written by
us, int ``count`` (observations) and int ``entity`` (0: static scene), binary little-endian;
the entities themselves (names, poses, scales, source points) follow in the same file (see
:mod:`.map_entities`), so one atomic write covers the whole map. Saving writes a temporary file in the
same folder, fsyncs it, checks its size and reads it back (a full disk or a short write is an
error, never a truncated map), then renames it over the target, so a crash mid-save leaves the
previous map intact; temporaries left by killed saves of the same file are removed. Loading
checks the whole file (entities included) before the memory is touched: a failed load leaves it
as it was. Maps without entity ids (older files, other tools') load as all static.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .._open3d import open3d
from ..errors import FileFormatError, InputError
from ..outputs import fsync_dir, sweep_stale_temps, temp_name
from . import map_entities
from .spatial_memory import SpatialMemory

_VERTEX = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
                    ("count", "<i4"), ("entity", "<i4")])
_TMP_SUFFIX = ".tmp.ply"
_PROPS = {"<f4": "float", "u1": "uchar", "<i4": "int"}


def _properties(dtype: np.dtype) -> list[str]:
    return [f"property {_PROPS[dtype[name].str.replace('|', '')]} {name}" for name in dtype.names]


def _header(n: int, comments=(), elements=()) -> bytes:
    lines = ["ply", "format binary_little_endian 1.0", "comment spatia_ros spatial memory", *comments,
             f"element vertex {n}", *_properties(_VERTEX)]
    for name, rows in elements:
        lines += [f"element {name} {len(rows)}", *_properties(rows.dtype)]
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
    entity_ids = memory.entity_ids.cpu().numpy().astype(np.int32)
    rows = np.empty(len(xyz), _VERTEX)
    rows["x"], rows["y"], rows["z"] = xyz.T
    rows["red"], rows["green"], rows["blue"] = rgb.T
    rows["count"] = counts
    rows["entity"] = entity_ids
    saved = map_entities.from_memory(memory)
    comments, elements = map_entities.header_lines(saved)
    header = _header(len(rows), comments, elements)
    _sweep(path)
    tmp = temp_name(path, _TMP_SUFFIX)
    try:
        with open(tmp, "xb") as fh:
            fh.write(header)
            fh.write(rows.tobytes())
            for _, extra in elements:
                fh.write(extra.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        size, expected = tmp.stat().st_size, len(header) + rows.nbytes + sum(e.nbytes for _, e in elements)
        if size != expected:
            raise OSError(f"short write: {size} of {expected} bytes")
        back = read_map(tmp)
        if not (np.array_equal(back.xyz, xyz) and np.array_equal(back.rgb, rgb) and np.array_equal(back.counts, counts)
                and np.array_equal(back.entity_ids, entity_ids) and len(back.entities) == len(saved)
                and all(a.same(b) for a, b in zip(back.entities, saved))):
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
    """Read a PLY point cloud: ``(xyz float32 (N,3), rgb uint8 (N,3), counts int32 (N,) or None)``
    (see :func:`_read_points`)."""
    return _read_points(path, allow_empty)[:3]


def _read_points(path, allow_empty: bool = False):
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
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), np.zeros(0, np.int32), np.zeros(0, np.int32)
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
    entity = pcd.point.entity.numpy().reshape(-1).astype(np.int32) if "entity" in pcd.point else None
    return xyz, rgb, counts, entity


@dataclass
class MapData:
    """Everything a map file holds."""

    xyz: np.ndarray  # float32 (N, 3)
    rgb: np.ndarray  # uint8 (N, 3)
    counts: np.ndarray | None  # int32 (N,) observations, None for files without them
    entity_ids: np.ndarray  # int32 (N,), zeros for files without entity ids
    entities: list  # [map_entities.SavedEntity], by id


def read_map(path: str | os.PathLike) -> MapData:
    """Read and check a whole map file (an empty map is valid); :class:`FileFormatError` if bad."""
    path = Path(path)
    xyz, rgb, counts, entity = _read_points(path, allow_empty=True)
    if entity is not None and len(entity) and int(entity.min()) < 0:
        raise FileFormatError(f"map has negative entity ids: {path}")
    saved = map_entities.read(path, entity)
    return MapData(xyz, rgb, counts, entity if entity is not None else np.zeros(len(xyz), np.int32), saved)


def load_ply(path: str | os.PathLike, memory: SpatialMemory) -> SpatialMemory:
    """Replace the contents of ``memory`` by the map in ``path`` (re-voxelised at its voxel size).

    Everything that can fail (reading, checking, voxel keys in range) happens before the memory
    is cleared: on any error it is left exactly as it was.
    """
    import torch

    from .voxel_hash import voxel_keys

    data = read_map(path)
    try:
        voxel_keys(torch.from_numpy(data.xyz), memory.voxel_size)  # raises for points outside the voxel grid
        for e in data.entities:
            voxel_keys(torch.from_numpy(e.covered_xyz), memory.voxel_size)
    except InputError as exc:
        raise FileFormatError(f"cannot load {path}: {exc}") from None
    counts = np.maximum(data.counts, 1) if data.counts is not None else None
    static = data.entity_ids == 0
    memory.clear()
    if static.all():
        memory.insert_points(data.xyz, data.rgb, counts=counts)
    else:
        memory.insert_points(data.xyz[static], data.rgb[static], counts=None if counts is None else counts[static])
    restore_entities(memory, data, counts)
    return memory


def restore_entities(memory: SpatialMemory, data: MapData, counts: np.ndarray | None) -> None:
    """Register the map's entities in ``memory`` (just loaded with its static voxels) and write
    their voxels as saved."""
    import torch

    from .entities import EntityRecord
    from .snapshot import Snapshot
    from .voxel_hash import voxel_keys

    table = memory.entity_table
    for e in data.entities:
        mine = data.entity_ids == e.id
        covered = None
        if len(e.covered_xyz):
            cxyz = torch.as_tensor(e.covered_xyz, device=memory.device)
            k = voxel_keys(cxyz, memory.voxel_size)
            _, idx = np.unique(k.cpu().numpy(), return_index=True)  # one voxel per key (another voxel size)
            idx_t = torch.as_tensor(idx, device=memory.device)
            m = len(idx)
            covered = Snapshot(k[idx_t], cxyz[idx_t], torch.as_tensor(e.covered_rgb, device=memory.device)[idx_t],
                               torch.as_tensor(e.covered_count, device=memory.device)[idx_t],
                               torch.zeros(m, dtype=torch.int32, device=memory.device),
                               torch.arange(m, device=memory.device))
        rec = EntityRecord(e.name, e.id, e.pose, e.scale, e.source, torch.as_tensor(e.points, device=memory.device),
                           torch.as_tensor(e.colors, device=memory.device), table.new_placement(), covered)
        table.add(rec)
        if mine.any():
            result = memory.write_voxels(data.xyz[mine], data.rgb[mine], 1 if counts is None else counts[mine], e.id)
            static = result.previous.entity == 0
            if bool(static.any()):  # saved at another voxel size: what it lands on is covered too
                extra = result.previous.subset(static)
                rec.covered = extra if rec.covered is None else rec.covered.merged(extra)

