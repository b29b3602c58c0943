"""The entities of a saved map: how they are stored in its PLY file (see :mod:`.ply`).

One file holds everything, so the existing atomic, verified save covers entities too:

* every vertex has an int ``entity`` property (0: static scene);
* one header line ``comment spatia_entity {json}`` per entity: ``name``, ``id``, ``pose``
  (16 numbers, row-major 4x4 map <- entity), ``scale``, ``source``;
* element ``entity_point``: the entities' source points in their own frames
  (int ``entity``, float ``x y z``, float ``red green blue`` in [0, 1]);
* element ``entity_covered``: the static voxels each entity covers, which come back when it
  moves (int ``entity``, float ``x y z``, float ``red green blue``, int ``count``).

Maps without these (older ones, other tools' files) load as all static.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import EntityError, FileFormatError, InputError
from .entities import check_name, check_placement

COMMENT = "spatia_entity"
POINT = np.dtype([("entity", "<i4"), ("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "<f4"), ("green", "<f4"),
                  ("blue", "<f4")])
COVERED = np.dtype([("entity", "<i4"), ("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "<f4"), ("green", "<f4"),
                    ("blue", "<f4"), ("count", "<i4")])
ELEMENTS = {"entity_point": POINT, "entity_covered": COVERED}


@dataclass
class SavedEntity:
    """One entity as a map file holds it."""

    name: str
    id: int
    pose: np.ndarray  # float64 (4, 4)
    scale: float
    source: str
    points: np.ndarray  # float32 (P, 3)
    colors: np.ndarray  # float32 (P, 3) in [0, 1]
    covered_xyz: np.ndarray  # float32 (C, 3)
    covered_rgb: np.ndarray  # float32 (C, 3)
    covered_count: np.ndarray  # int32 (C,)

    def meta(self) -> dict:
        return {"name": self.name, "id": self.id, "pose": [float(v) for v in self.pose.reshape(-1)],
                "scale": self.scale, "source": self.source}

    def same(self, other: "SavedEntity") -> bool:
        return self.meta() == other.meta() and all(
            np.array_equal(getattr(self, f), getattr(other, f))
            for f in ("points", "colors", "covered_xyz", "covered_rgb", "covered_count"))


def from_memory(memory) -> list[SavedEntity]:
    """The entities of ``memory`` (source points and covered static voxels), by id."""
    out = []
    for rec in memory.entity_table:
        cov = rec.covered
        if cov is not None and len(cov):
            static = cov.entity == 0  # voxels of other entities it covers return with them, not with a map
            cxyz = cov.xyz[static].cpu().numpy().astype(np.float32)
            crgb = cov.rgb[static].cpu().numpy().astype(np.float32)
            ccount = cov.count[static].cpu().numpy().astype(np.int32)
        else:
            cxyz, crgb, ccount = np.zeros((0, 3), np.float32), np.zeros((0, 3), np.float32), np.zeros(0, np.int32)
        out.append(SavedEntity(
            rec.name, int(rec.id), np.asarray(rec.pose, dtype=np.float64), float(rec.scale), rec.source,
            rec.points.cpu().numpy().astype(np.float32), rec.colors.cpu().numpy().astype(np.float32),
            cxyz, crgb, ccount))
    return out


def header_lines(entities: list[SavedEntity]) -> tuple[list[str], list[tuple[str, np.ndarray]]]:
    """``(comment lines, [(element name, rows)])`` for the header and body after the vertices."""
    if not entities:
        return [], []
    comments = [f"comment {COMMENT} " + json.dumps(e.meta(), ensure_ascii=True, separators=(",", ":"))
                for e in entities]
    points = np.empty(sum(len(e.points) for e in entities), POINT)
    covered = np.empty(sum(len(e.covered_xyz) for e in entities), COVERED)
    i = j = 0
    for e in entities:
        n, c = len(e.points), len(e.covered_xyz)
        points["entity"][i:i + n] = e.id
        points["x"][i:i + n], points["y"][i:i + n], points["z"][i:i + n] = e.points.T
        points["red"][i:i + n], points["green"][i:i + n], points["blue"][i:i + n] = e.colors.T
        covered["entity"][j:j + c] = e.id
        covered["x"][j:j + c], covered["y"][j:j + c], covered["z"][j:j + c] = e.covered_xyz.T
        covered["red"][j:j + c], covered["green"][j:j + c], covered["blue"][j:j + c] = e.covered_rgb.T
        covered["count"][j:j + c] = e.covered_count
        i, j = i + n, j + c
    return comments, [("entity_point", points), ("entity_covered", covered)]


_TYPES = {"char": "i1", "uchar": "u1", "int8": "i1", "uint8": "u1", "short": "<i2", "ushort": "<u2", "int16": "<i2",
          "uint16": "<u2", "int": "<i4", "uint": "<u4", "int32": "<i4", "uint32": "<u4", "float": "<f4",
          "float32": "<f4", "double": "<f8", "float64": "<f8"}


def read(path: Path, vertex_entity: np.ndarray | None) -> list[SavedEntity]:
    """The entities saved in the map ``path`` (its header already checked by the PLY reader),
    checked against the vertices' entity ids; [] for a map without entities."""
    comments, elements, fmt, body = [], [], None, 0
    with open(path, "rb") as fh:
        fh.readline()
        while True:
            line = fh.readline()
            parts = line.decode("ascii", "replace").split(None, 2)
            if not line or (parts and parts[0] == "end_header"):
                break
            if len(parts) == 3 and parts[0] == "comment" and parts[1] == COMMENT:
                comments.append(parts[2])
            elif parts and parts[0] == "format":
                fmt = parts[1]
            elif len(parts) == 3 and parts[0] == "element":
                elements.append((parts[1], int(parts[2]), []))
            elif parts and parts[0] == "property" and elements:
                p = line.decode("ascii", "replace").split()
                elements[-1][2].append((p[-1], _TYPES.get(p[1], "list") if p[1] != "list" else "list"))
        body = fh.tell()
        if not comments and not any(name in ELEMENTS for name, _, _ in elements):
            if vertex_entity is not None and bool((vertex_entity != 0).any()):
                raise FileFormatError(f"map has entity voxels but no entities: {path}")
            return []
        if fmt != "binary_little_endian":
            raise FileFormatError(f"a map with entities must be binary little-endian: {path}")
        arrays = {}
        offset = body
        for name, count, props in elements:
            if any(t == "list" for _, t in props):
                raise FileFormatError(f"a map with entities has list properties in {name}: {path}")
            dtype = np.dtype([(n, t) for n, t in props])
            if name in ELEMENTS:
                if dtype != ELEMENTS[name]:
                    raise FileFormatError(f"map element {name} has unexpected properties: {path}")
                fh.seek(offset)
                raw = fh.read(count * dtype.itemsize)
                if len(raw) != count * dtype.itemsize:
                    raise FileFormatError(f"truncated PLY: element {name} is short: {path}")
                arrays[name] = np.frombuffer(raw, dtype)
            offset += count * dtype.itemsize
    if set(arrays) != set(ELEMENTS):
        raise FileFormatError(f"map with entities lacks element(s) {sorted(set(ELEMENTS) - set(arrays))}: {path}")
    return _decode(path, comments, arrays, vertex_entity)


def _decode(path: Path, comments: list[str], arrays: dict, vertex_entity) -> list[SavedEntity]:
    out, names, ids = [], set(), set()
    points, covered = arrays["entity_point"], arrays["entity_covered"]
    for text in comments:
        try:
            meta = json.loads(text)
            name, eid, scale, source = meta["name"], int(meta["id"]), meta["scale"], str(meta["source"])
            pose = np.asarray(meta["pose"], dtype=np.float64).reshape(4, 4)
            check_name(name)
            pose, scale = check_placement(pose, scale)
        except (ValueError, KeyError, TypeError, InputError, EntityError) as exc:
            raise FileFormatError(f"map has a malformed entity record ({exc}): {path}") from None
        if eid < 1 or eid in ids or name in names:
            raise FileFormatError(f"map has duplicate or invalid entity {name!r} / id {eid}: {path}")
        names.add(name)
        ids.add(eid)
        p = points[points["entity"] == eid]
        c = covered[covered["entity"] == eid]
        if len(p) == 0:
            raise FileFormatError(f"map entity {name!r} has no source points: {path}")
        xyz = np.stack([p["x"], p["y"], p["z"]], 1)
        rgb = np.stack([p["red"], p["green"], p["blue"]], 1)
        cxyz = np.stack([c["x"], c["y"], c["z"]], 1)
        crgb = np.stack([c["red"], c["green"], c["blue"]], 1)
        if not (np.isfinite(xyz).all() and np.isfinite(cxyz).all() and np.isfinite(rgb).all() and np.isfinite(crgb).all()):
            raise FileFormatError(f"map entity {name!r} has NaN or inf values: {path}")
        if rgb.min(initial=0) < 0 or rgb.max(initial=0) > 1 or crgb.min(initial=0) < 0 or crgb.max(initial=0) > 1:
            raise FileFormatError(f"map entity {name!r} has colours outside [0, 1]: {path}")
        if len(c) and int(c["count"].min()) < 1:
            raise FileFormatError(f"map entity {name!r} has covered voxels with counts < 1: {path}")
        out.append(SavedEntity(name, eid, pose, scale, source, xyz.astype(np.float32), rgb.astype(np.float32),
                               cxyz.astype(np.float32), crgb.astype(np.float32), c["count"].astype(np.int32)))
    stray = (set(np.unique(points["entity"]).tolist()) | set(np.unique(covered["entity"]).tolist())) - ids
    if vertex_entity is not None:
        stray |= set(np.unique(vertex_entity).tolist()) - ids - {0}
    if stray:
        raise FileFormatError(f"map has voxels or points of undeclared entities {sorted(stray)}: {path}")
    return sorted(out, key=lambda e: e.id)
