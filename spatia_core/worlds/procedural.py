"""The built-in default world: a seeded, procedurally textured indoor room as a coloured point cloud.

No downloads and no randomness outside the seed: :func:`make_room` returns the same points for the
same ``(seed, spacing)``. The room is about 6 m x 5 m x 2.8 m in the ROS ``map`` frame (x forward,
y left, z up) with the floor at z = 0 and the room centred on the origin in x and y:

* walls with different procedural textures (painted plaster with wainscot and a framed picture,
  striped wallpaper with a door, a window with sky and hills, ceramic tiles with a poster), a
  wood-plank floor with a rug, and an acoustic-tile ceiling with a light panel;
* furniture as closed boxes / cylinders: a table with a vase and a book, a couch with cushions, a
  bookshelf full of books, a sideboard, a floor lamp, a potted plant and a stack of coloured boxes.
  Layout, sizes and colours vary with the seed.

Surfaces are sampled on the global lattice ``(k + 0.5) * spacing`` of each face's two in-plane
axes, so a voxel map with voxel size ``spacing`` (origin 0) receives exactly one point per voxel of
every axis-aligned face: no holes and almost no duplicates. Textures are defined in metres and
have structure at several scales (plank and tile joints, grain, noise, stripes, frames), so image
metrics and feature matching on renders are meaningful.

The start camera stands at 1.2 m height in a furniture-free zone (at least ~1.3 m of free floor
around it in x and y, 1.6 m to the ceiling) and looks horizontally at the table, with the
bookshelf and sideboard behind it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import InputError
from ..geometry import look_at, validate_pose

#: Room extent in metres: x in [-3, 3], y in [-2.5, 2.5], z in [0, 2.8].
ROOM_MIN = np.array([-3.0, -2.5, 0.0])
ROOM_MAX = np.array([3.0, 2.5, 2.8])
#: Height of the start camera above the floor (metres).
CAMERA_HEIGHT = 1.2

# A texture maps in-face coordinates (u, v) in metres, both float64 (N,), and the axis of the
# face normal (0, 1, 2, or -1 for curved surfaces) to float32 (N, 3) RGB in [0, 1].
# For a face with normal along x: (u, v) = (y, z); along y: (x, z); along z: (x, y).
Texture = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


@dataclass
class ProceduralScene:
    """A coloured point cloud of the procedural room.

    Attributes:
        points: float32 (N, 3) surface points in the ``map`` frame (metres).
        colors: uint8 (N, 3) RGB colour of each point.
        start_pose: float64 (4, 4) camera-to-world start pose (OpenCV camera axes).
        center: float64 (3,) a good orbit centre (above the table).
        bounds: ``(min, max)``, each float64 (3,): the room's axis-aligned box.
        seed: the seed the scene was made with.
        spacing: the sampling pitch in metres.
    """

    points: np.ndarray
    colors: np.ndarray
    start_pose: np.ndarray
    center: np.ndarray
    bounds: tuple[np.ndarray, np.ndarray]
    seed: int = 0
    spacing: float = 0.01
    objects: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """Axis-aligned boxes ``name -> (min, max)`` of the furniture (float64 (3,) each)."""


# --------------------------------------------------------------------------------------------
# Noise and colour helpers (all vectorised; deterministic given the salt integers).
# --------------------------------------------------------------------------------------------

_M1 = np.uint64(0xFF51AFD7ED558CCD)
_M2 = np.uint64(0xC4CEB9FE1A85EC53)


def _hash01(ix: np.ndarray, iy: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic pseudo-random float64 in [0, 1) per integer lattice cell (ix, iy)."""
    h = (np.asarray(ix, dtype=np.int64) * np.int64(73856093)) ^ (
        np.asarray(iy, dtype=np.int64) * np.int64(19349663)
    )
    h = h.astype(np.uint64) ^ np.uint64((salt * 0x9E3779B1 + 0x7F4A7C15) & 0xFFFFFFFFFFFF)
    h ^= h >> np.uint64(33)
    h *= _M1
    h ^= h >> np.uint64(33)
    h *= _M2
    h ^= h >> np.uint64(33)
    return (h >> np.uint64(11)).astype(np.float64) * (1.0 / 2.0**53)


def _noise(u: np.ndarray, v: np.ndarray, cell: float, salt: int) -> np.ndarray:
    """Smooth value noise in [0, 1] with feature size ``cell`` metres; float64 (N,)."""
    x, y = u / cell, v / cell
    ix, iy = np.floor(x), np.floor(y)
    fx, fy = x - ix, y - iy
    fx = fx * fx * (3.0 - 2.0 * fx)
    fy = fy * fy * (3.0 - 2.0 * fy)
    ix, iy = ix.astype(np.int64), iy.astype(np.int64)
    a = _hash01(ix, iy, salt)
    b = _hash01(ix + 1, iy, salt)
    c = _hash01(ix, iy + 1, salt)
    d = _hash01(ix + 1, iy + 1, salt)
    top = a + (b - a) * fx
    bot = c + (d - c) * fx
    return top + (bot - top) * fy


def _fbm(u: np.ndarray, v: np.ndarray, cell: float, salt: int, octaves: int = 3) -> np.ndarray:
    """Fractal sum of value noise (cells ``cell``, ``cell/2``, ...), normalised to [0, 1]."""
    total = np.zeros_like(u)
    weight, norm = 1.0, 0.0
    for o in range(octaves):
        total += weight * _noise(u, v, cell / 2**o, salt + 101 * o)
        norm += weight
        weight *= 0.5
    return total / norm


def _rgb(hex_or_tuple) -> np.ndarray:
    return np.asarray(hex_or_tuple, dtype=np.float32)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV (all in [0, 1]) to an RGB float32 (3,)."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    return _rgb([(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i])


def _mix(c0, c1, t) -> np.ndarray:
    """Blend colours ``c0``/``c1`` ((3,) or (N, 3)) by weights ``t`` (N,); float32 (N, 3)."""
    t = np.asarray(t, dtype=np.float32)[:, None]
    return (np.asarray(c0, np.float32) * (1 - t) + np.asarray(c1, np.float32) * t).astype(np.float32)


def _shade(col, factor) -> np.ndarray:
    """Scale colours ((3,) or (N, 3)) by a per-point brightness ``factor`` (N,)."""
    return (np.asarray(col, np.float32) * np.asarray(factor, np.float32)[:, None]).astype(np.float32)


def _inside(u, v, u0, u1, v0, v1) -> np.ndarray:
    return (u >= u0) & (u <= u1) & (v >= v0) & (v <= v1)


def _frac(x):
    return x - np.floor(x)


# --------------------------------------------------------------------------------------------
# Surface sampling on the global lattice.
# --------------------------------------------------------------------------------------------


def _lattice(a: float, b: float, s: float) -> np.ndarray:
    """Lattice coordinates ``(k + 0.5) * s`` inside [a, b] (at least the midpoint); float64."""
    k0, k1 = np.ceil(a / s - 0.5 - 1e-9), np.floor(b / s - 0.5 + 1e-9)
    if k1 < k0:
        return np.array([(a + b) / 2.0])
    return (np.arange(k0, k1 + 1) + 0.5) * s


class _Builder:
    """Accumulates coloured surface samples and furniture boxes."""

    def __init__(self, spacing: float):
        self.s = spacing
        self.pts: list[np.ndarray] = []
        self.cols: list[np.ndarray] = []
        self.objects: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def add(self, pts: np.ndarray, cols: np.ndarray) -> None:
        self.pts.append(pts.astype(np.float32))
        self.cols.append(np.clip(cols, 0.0, 1.0).astype(np.float32))

    def plane(self, axis: int, value: float, lo, hi, tex: Texture) -> None:
        """A rectangle with normal ``axis`` at ``value``; ``lo``/``hi`` bound the other axes."""
        a, b = [i for i in range(3) if i != axis]
        uu, vv = np.meshgrid(_lattice(lo[0], hi[0], self.s), _lattice(lo[1], hi[1], self.s))
        u, v = uu.ravel(), vv.ravel()
        pts = np.empty((u.size, 3))
        pts[:, axis], pts[:, a], pts[:, b] = value, u, v
        self.add(pts, tex(u, v, axis))

    def box(self, name: str | None, lo, hi, tex: Texture, skip: tuple[str, ...] = ()) -> None:
        """A closed axis-aligned box; faces on the room boundary or named in ``skip`` (e.g.
        ``"-z"``, ``"+y"``) are left out because nothing can see them."""
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        if name:
            self.objects[name] = (lo.copy(), hi.copy())
        for axis in range(3):
            a, b = [i for i in range(3) if i != axis]
            for sign, val in (("-", lo[axis]), ("+", hi[axis])):
                tag = f"{sign}{'xyz'[axis]}"
                on_wall = abs(val - ROOM_MIN[axis]) < 1e-9 or abs(val - ROOM_MAX[axis]) < 1e-9
                if tag in skip or on_wall:
                    continue
                self.plane(axis, val, (lo[a], lo[b]), (hi[a], hi[b]), tex)

    def cylinder(self, name, cx, cy, z0, z1, r0, r1, tex: Texture, caps=(False, True)) -> None:
        """A (possibly conical) cylinder about the vertical axis through (cx, cy), radius ``r0`` at
        ``z0`` and ``r1`` at ``z1``; ``caps`` = (bottom, top) disks."""
        s = self.s
        if name:
            r = max(r0, r1)
            self.objects[name] = (np.array([cx - r, cy - r, z0]), np.array([cx + r, cy + r, z1]))
        slant = np.hypot(z1 - z0, r1 - r0)
        n_ang = max(8, int(np.ceil(2 * np.pi * max(r0, r1) / s)))
        n_h = max(2, int(np.ceil(slant / s)))
        ang = (np.arange(n_ang) + 0.5) * (2 * np.pi / n_ang)
        t = (np.arange(n_h) + 0.5) / n_h
        aa, tt = np.meshgrid(ang, t)
        aa, tt = aa.ravel(), tt.ravel()
        rr = r0 + (r1 - r0) * tt
        z = z0 + (z1 - z0) * tt
        pts = np.stack([cx + rr * np.cos(aa), cy + rr * np.sin(aa), z], axis=1)
        self.add(pts, tex(aa * max(r0, r1), z, -1))
        for cap, zc, rc in ((caps[0], z0, r0), (caps[1], z1, r1)):
            if not cap:
                continue
            uu, vv = np.meshgrid(_lattice(cx - rc, cx + rc, s), _lattice(cy - rc, cy + rc, s))
            keep = (uu - cx) ** 2 + (vv - cy) ** 2 <= rc * rc
            u, v = uu[keep], vv[keep]
            pts = np.stack([u, v, np.full_like(u, zc)], axis=1)
            self.add(pts, tex(u, v, 2))

    def sphere(self, name, center, radius, tex: Texture) -> None:
        """A sphere sampled on a Fibonacci spiral at about one point per ``spacing**2``."""
        n = max(16, int(4 * np.pi * radius**2 / self.s**2))
        i = np.arange(n) + 0.5
        z = 1 - 2 * i / n
        phi = i * np.pi * (3 - np.sqrt(5))
        rxy = np.sqrt(1 - z * z)
        d = np.stack([rxy * np.cos(phi), rxy * np.sin(phi), z], axis=1)
        pts = np.asarray(center) + radius * d
        if name:
            self.objects[name] = (np.asarray(center) - radius, np.asarray(center) + radius)
        self.add(pts, tex(pts[:, 0] + pts[:, 1], pts[:, 2], -1))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        pts = np.concatenate(self.pts, axis=0)
        cols = np.round(np.concatenate(self.cols, axis=0) * 255.0).astype(np.uint8)
        return pts, cols


# --------------------------------------------------------------------------------------------
# Textures (factories draw their parameters from the scene's random generator).
# --------------------------------------------------------------------------------------------


def _wood(rng: np.random.Generator, base, plank_w: float = 0.0, along: int = 0) -> Texture:
    """Wood: grain lines along u (``along=0``) or v; with ``plank_w > 0``, staggered planks of
    that width with per-plank tint and dark joints."""
    base = _rgb(base)
    dark = base * 0.55
    salt = int(rng.integers(1 << 30))
    plank_len = float(rng.uniform(0.9, 1.5))

    def tex(u, v, axis):
        if along == 1:
            u, v = v, u
        tint = np.full_like(u, 0.5)
        joint = np.zeros(u.shape, bool)
        if plank_w > 0:
            row = np.floor(v / plank_w)
            x = u + _hash01(row, row * 7 + 3, salt) * plank_len
            col = np.floor(x / plank_len)
            tint = _hash01(row, col, salt + 1)
            joint = (_frac(v / plank_w) < 0.012 / plank_w) | (_frac(x / plank_len) < 0.008 / plank_len)
            u = x + tint * 3.0
        warp = _fbm(u * 0.25, v, 0.08, salt + 2, 2)
        grain = 0.5 + 0.5 * np.sin(2 * np.pi * (v * 38.0 + warp * 4.0))
        knots = _noise(u, v, 0.05, salt + 3)
        f = 0.78 + 0.14 * grain + 0.16 * (tint - 0.5) + 0.10 * (knots - 0.5)
        col = _shade(_mix(base, dark, 0.35 * (1 - grain)), f)
        col[joint] = dark * 0.5
        return col

    return tex


def _plaster(rng: np.random.Generator, base, amp: float = 0.14) -> Texture:
    """Painted plaster: the base colour modulated by noise at 0.4 m, 0.06 m and 0.02 m (stucco)."""
    base = _rgb(base)
    salt = int(rng.integers(1 << 30))

    def tex(u, v, axis):
        n = 0.5 * _fbm(u, v, 0.4, salt, 2) + 0.3 * _fbm(u, v, 0.06, salt + 7, 2) + 0.2 * _noise(u, v, 0.02, salt + 8)
        streak = _noise(u * 8.0, v * 0.5, 0.4, salt + 9)
        return _shade(base, 1.0 + amp * (n - 0.5) * 2 + 0.04 * (streak - 0.5))

    return tex


def _fabric(rng: np.random.Generator, base, accent) -> Texture:
    """Upholstery: a plaid of two colours (8-12 cm checks) with soft noise."""
    base, accent = _rgb(base), _rgb(accent)
    salt = int(rng.integers(1 << 30))
    period = float(rng.uniform(0.08, 0.12))

    def tex(u, v, axis):
        a = (np.abs(_frac(u / period) - 0.5) < 0.12).astype(np.float32)
        b = (np.abs(_frac(v / period) - 0.5) < 0.12).astype(np.float32)
        col = _mix(base, accent, 0.35 * a + 0.35 * b)
        return _shade(col, 0.88 + 0.24 * _fbm(u, v, 0.05, salt, 2))

    return tex


def _cardboard(rng: np.random.Generator, base) -> Texture:
    """A painted or cardboard box: noisy base, a tape band on top, a printed label on the sides."""
    base = _rgb(base)
    salt = int(rng.integers(1 << 30))
    tape = _rgb([0.85, 0.75, 0.45]) if rng.random() < 0.5 else _rgb([0.9, 0.9, 0.88])
    label = _hsv(float(rng.random()), 0.8, 0.35)
    ph = float(rng.uniform(0, 1))

    def tex(u, v, axis):
        col = _shade(base, 0.85 + 0.3 * _fbm(u, v, 0.07, salt, 3))
        if axis == 2:
            band = np.abs(_frac(u * 1.7 + ph) - 0.5) < 0.06
            col[band] = tape
        else:
            stripes = (_frac(v * 12.0 + ph) < 0.35) & (np.abs(_frac(u * 2.2 + ph) - 0.5) < 0.18)
            col[stripes] = label
        return col

    return tex


def _solid(col, salt: int, amp: float = 0.12) -> Texture:
    """A colour with mild noise (for small parts such as legs, knobs, lamp poles)."""
    col = _rgb(col)

    def tex(u, v, axis):
        return _shade(col, 1.0 + amp * (_noise(u, v, 0.03, salt) - 0.5) * 2)

    return tex


# --------------------------------------------------------------------------------------------
# The room.
# --------------------------------------------------------------------------------------------


def _room_shell(b: _Builder, rng: np.random.Generator, mirror: float, layout: dict) -> None:
    """Floor, ceiling and the four walls (interior faces only)."""
    x0, y0, z0 = ROOM_MIN
    x1, y1, z1 = ROOM_MAX

    # Floor: wood planks (along x) with a patterned rug under the table.
    floor_wood = _wood(rng, _hsv(rng.uniform(0.06, 0.1), rng.uniform(0.45, 0.65), rng.uniform(0.5, 0.7)),
                       plank_w=float(rng.uniform(0.12, 0.17)))
    rug_a = _hsv(float(rng.random()), 0.55, 0.55)
    rug_b = _hsv(float(rng.random()), 0.35, 0.85)
    rug_c = _hsv(float(rng.random()), 0.7, 0.3)
    tx, ty = layout["table_xy"]
    rug = (tx - 1.3, tx + 1.1, ty - 1.0, ty + 1.0)
    rug_salt = int(rng.integers(1 << 30))

    def floor_tex(u, v, axis):
        col = floor_wood(u, v, axis)
        inside = _inside(u, v, *rug)
        if inside.any():
            ru, rv = u[inside], v[inside]
            # distance to the rug edge -> concentric borders; diamond lattice in the field
            d = np.minimum.reduce([ru - rug[0], rug[1] - ru, rv - rug[2], rug[3] - rv])
            dia = np.abs(_frac(ru / 0.25) - 0.5) + np.abs(_frac(rv / 0.25) - 0.5)
            rc = np.where((dia < 0.22)[:, None], rug_a, rug_b)
            rc = np.where((np.abs(dia - 0.35) < 0.05)[:, None], rug_c, rc)
            rc = np.where(((d < 0.12) | ((d > 0.16) & (d < 0.2)))[:, None], rug_c, rc)
            rc = np.where(((d >= 0.12) & (d <= 0.16))[:, None], rug_a, rc)
            col[inside] = _shade(rc, 0.85 + 0.25 * _fbm(ru, rv, 0.03, rug_salt, 2))
        return col

    b.plane(2, z0, (x0, y0), (x1, y1), floor_tex)

    # Ceiling: 0.6 m acoustic tiles with a bright light panel above the table.
    tile_col = _rgb([0.9, 0.89, 0.86])
    c_salt = int(rng.integers(1 << 30))

    def ceiling_tex(u, v, axis):
        grid = (_frac(u / 0.6) < 0.03) | (_frac(v / 0.6) < 0.03)
        speck = _noise(u, v, 0.015, c_salt)
        col = _shade(tile_col, 0.88 + 0.12 * _fbm(u, v, 0.3, c_salt + 1, 2) - 0.12 * (speck > 0.8))
        col[grid] = tile_col * 0.62
        light = _inside(u, v, tx - 0.6, tx + 0.6, ty - 0.3, ty + 0.3)
        col[light] = _rgb([1.0, 0.98, 0.9])
        frame = light & ~_inside(u, v, tx - 0.56, tx + 0.56, ty - 0.26, ty + 0.26)
        col[frame] = _rgb([0.7, 0.7, 0.72])
        return col

    b.plane(2, z1, (x0, y0), (x1, y1), ceiling_tex)

    # Front wall (x = x1, u = y, v = z): plaster, wainscot with panels, and a framed picture.
    paint = _plaster(rng, _hsv(rng.uniform(0, 1), rng.uniform(0.15, 0.35), rng.uniform(0.75, 0.9)))
    wains = _hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.4), rng.uniform(0.45, 0.65))
    pic_y = layout["picture_y"]
    pic = (pic_y - 0.5, pic_y + 0.5, 1.25, 1.95)
    pic_blobs = [
        (rng.uniform(pic[0] + 0.15, pic[1] - 0.15), rng.uniform(1.4, 1.8), rng.uniform(0.05, 0.14),
         _hsv(float(rng.random()), 0.8, 0.8))
        for _ in range(5)
    ]
    pic_sky = _hsv(float(rng.random()), 0.5, 0.7)
    pic_ground = _hsv(float(rng.random()), 0.6, 0.4)
    pic_salt = int(rng.integers(1 << 30))

    def front_tex(u, v, axis):
        col = paint(u, v, axis)
        low = v < 0.9
        panel = low & ((np.abs(_frac(u / 0.6) - 0.5) > 0.42) | (v < 0.18) | (v > 0.78))
        col[low] = _shade(wains, 0.92 + 0.1 * _noise(u[low], v[low], 0.1, pic_salt))
        col[panel] *= 0.8
        col[(v > 0.86) & (v < 0.92)] = wains * 0.6
        col[v < 0.1] = _rgb([0.92, 0.92, 0.9])
        inside = _inside(u, v, *pic)
        if inside.any():
            pu, pv = u[inside], v[inside]
            d = np.minimum.reduce([pu - pic[0], pic[1] - pu, pv - pic[2], pic[3] - pv])
            horizon = 1.5 + 0.08 * np.sin(pu * 9.0) + 0.05 * _noise(pu, pv, 0.1, pic_salt)
            pc = np.where((pv > horizon)[:, None], pic_sky, pic_ground)
            pc = _shade(pc, 0.75 + 0.5 * _fbm(pu, pv, 0.12, pic_salt + 1, 3))
            for bu, bv, br, bc in pic_blobs:
                pc[(pu - bu) ** 2 + (pv - bv) ** 2 < br * br] = bc
            pc[d < 0.11] = _rgb([0.93, 0.91, 0.85])
            pc[d < 0.05] = _rgb([0.25, 0.16, 0.08]) * (0.8 + 0.4 * _frac(pu[d < 0.05] * 7))[:, None]
            col[inside] = pc
        return col

    b.plane(0, x1, (y0, z0), (y1, z1), front_tex)

    # Back wall (x = x0): vertical striped wallpaper with a diamond motif, and a door.
    s_a = _hsv(rng.uniform(0, 1), rng.uniform(0.25, 0.5), rng.uniform(0.7, 0.85))
    s_b = _hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.6), rng.uniform(0.4, 0.6))
    s_period = float(rng.uniform(0.2, 0.3))
    door_y = layout["door_y"]
    door = (door_y - 0.45, door_y + 0.45, 0.0, 2.05)
    door_wood = _wood(rng, _hsv(0.07, 0.5, 0.45), along=1)
    st_salt = int(rng.integers(1 << 30))

    def back_tex(u, v, axis):
        f = _frac(u / s_period)
        col = np.where((f < 0.55)[:, None], s_a, s_b).astype(np.float32)
        col[np.abs(f - 0.7) < 0.03] = s_b * 0.6
        dia = np.abs(_frac(u / s_period) - 0.27) * 2.5 + np.abs(_frac(v / (s_period * 1.2)) - 0.5)
        col[(f < 0.55) & (dia < 0.16)] = s_b
        col = _shade(col, 0.9 + 0.2 * _fbm(u, v, 0.2, st_salt, 2))
        inside = _inside(u, v, *door)
        if inside.any():
            du, dv = u[inside], v[inside]
            dc = door_wood(du, dv, axis)
            d = np.minimum.reduce([du - door[0], door[1] - du, door[3] - dv])
            pan = _inside(du, dv, door[0] + 0.12, door[1] - 0.12, 1.1, 1.9) | _inside(
                du, dv, door[0] + 0.12, door[1] - 0.12, 0.2, 0.95)
            dc[pan] *= 0.85
            dc[d < 0.06] = _rgb([0.95, 0.95, 0.93])
            knob = (du - (door[1] - 0.1)) ** 2 + (dv - 1.0) ** 2 < 0.035**2
            dc[knob] = _rgb([0.8, 0.7, 0.3])
            col[inside] = dc
        return col

    b.plane(0, x0, (y0, z0), (y1, z1), back_tex)

    # Side walls: a window on one (chosen by the mirror flag), ceramic tiles on the other.
    win_wall_y = y1 if mirror > 0 else y0
    tile_wall_y = y0 if mirror > 0 else y1
    plaster2 = _plaster(rng, _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.3), rng.uniform(0.7, 0.85)))
    wx = layout["window_x"]
    win = (wx - 0.7, wx + 0.7, 0.95, 2.2)
    sky_salt = int(rng.integers(1 << 30))
    hill = _hsv(rng.uniform(0.22, 0.36), 0.6, 0.45)

    def window_tex(u, v, axis):
        col = plaster2(u, v, axis)
        col[v < 0.1] = _rgb([0.92, 0.92, 0.9])
        col[(v > 2.62) & (v < 2.68)] = _rgb([0.95, 0.95, 0.93])  # crown moulding line
        inside = _inside(u, v, *win)
        if inside.any():
            wu, wv = u[inside], v[inside]
            sky = _mix([0.55, 0.75, 0.95], [0.25, 0.45, 0.85], (wv - win[2]) / (win[3] - win[2]))
            cloud = _fbm(wu, wv * 2.0, 0.35, sky_salt, 4)
            sky = _mix(sky, np.ones(3, np.float32), np.clip((cloud - 0.55) * 4.0, 0, 1))
            hz = 1.25 + 0.12 * np.sin(wu * 4.0 + 1.0) + 0.1 * _fbm(wu, wu, 0.3, sky_salt + 5, 2)
            land = wv < hz
            sky[land] = _shade(hill, 0.7 + 0.5 * _fbm(wu[land], wv[land], 0.05, sky_salt + 9, 3))
            d = np.minimum.reduce([wu - win[0], win[1] - wu, wv - win[2], win[3] - wv])
            mull = (np.abs(wu - wx) < 0.025) | (np.abs(wv - 1.6) < 0.025)
            sky[(d < 0.07) | mull] = _rgb([0.96, 0.96, 0.95])
            sky[(d >= 0.07) & (d < 0.085)] = _rgb([0.6, 0.6, 0.62])
            col[inside] = sky
        sill = _inside(u, v, win[0] - 0.08, win[1] + 0.08, win[2] - 0.07, win[2])
        col[sill] = _rgb([0.9, 0.9, 0.88])
        return col

    b.plane(1, win_wall_y, (x0, z0), (x1, z1), window_tex)

    tile_a = _hsv(rng.uniform(0, 1), rng.uniform(0.2, 0.5), rng.uniform(0.6, 0.85))
    tile_b = _hsv(rng.uniform(0, 1), rng.uniform(0.3, 0.6), rng.uniform(0.35, 0.6))
    tile_sz = float(rng.uniform(0.2, 0.3))
    t_salt = int(rng.integers(1 << 30))
    poster_x = layout["poster_x"]
    poster = (poster_x - 0.35, poster_x + 0.35, 1.3, 2.2)
    poster_cols = [_hsv(float(rng.random()), 0.85, 0.9) for _ in range(3)]

    def tile_tex(u, v, axis):
        iu, iv = np.floor(u / tile_sz), np.floor(v / tile_sz)
        r = _hash01(iu, iv, t_salt)
        col = _mix(tile_a, tile_b, (r > 0.8).astype(np.float32))
        col = _shade(col, 0.88 + 0.12 * r + 0.08 * (_noise(u, v, 0.04, t_salt + 1) - 0.5))
        grout = (_frac(u / tile_sz) < 0.015 / tile_sz) | (_frac(v / tile_sz) < 0.015 / tile_sz)
        col[grout] = _rgb([0.82, 0.8, 0.76])
        inside = _inside(u, v, *poster)
        if inside.any():
            pu, pv = u[inside], v[inside]
            pc = np.tile(_rgb([0.96, 0.95, 0.9]), (pu.size, 1))
            rings = np.hypot(pu - poster_x, pv - 1.85)
            pc[_frac(rings / 0.09) < 0.45] = poster_cols[0]
            pc[rings < 0.07] = poster_cols[1]
            pc[(pv < 1.55) & (_frac(pu / 0.1) < 0.5)] = poster_cols[2]
            pc[(pv > 1.43) & (pv < 1.47)] = _rgb([0.1, 0.1, 0.1])
            d = np.minimum.reduce([pu - poster[0], poster[1] - pu, pv - poster[2], poster[3] - pv])
            pc[d < 0.03] = _rgb([0.15, 0.15, 0.15])
            col[inside] = pc
        return col

    b.plane(1, tile_wall_y, (x0, z0), (x1, z1), tile_tex)


def _furniture(b: _Builder, rng: np.random.Generator, mirror: float, layout: dict) -> None:
    """Table (+ vase, book), couch, bookshelf, sideboard, floor lamp, plant and boxes."""
    x0, y0, _ = ROOM_MIN
    x1, y1, _ = ROOM_MAX
    m = mirror

    def ym(a, c):
        """An interval given for the 'couch side' (+y when mirror=+1), mirrored otherwise."""
        return (a, c) if m > 0 else (-c, -a)

    # Table: top and four legs; a vase and a book on it.
    tx, ty = layout["table_xy"]
    hl, hw = layout["table_half"]
    th = 0.75
    top_wood = _wood(rng, _hsv(rng.uniform(0.05, 0.1), rng.uniform(0.5, 0.7), rng.uniform(0.35, 0.6)))
    b.box("table", (tx - hl, ty - hw, th - 0.04), (tx + hl, ty + hw, th), top_wood)
    leg = _solid(_hsv(0.08, 0.5, 0.3), 11)
    for sx in (-1, 1):
        for sy in (-1, 1):
            lx, ly = tx + sx * (hl - 0.08), ty + sy * (hw - 0.08)
            b.box(None, (lx - 0.03, ly - 0.03, 0.0), (lx + 0.03, ly + 0.03, th - 0.04), leg, skip=("+z",))
    vx, vy = tx + rng.uniform(-0.3, 0.3) * hl, ty + rng.uniform(-0.4, 0.4) * hw
    vase_col = _hsv(float(rng.random()), 0.7, 0.75)
    v_salt = int(rng.integers(1 << 30))

    def vase_tex(u, v, axis):
        bands = _frac(v * 14.0) < 0.3
        col = _shade(vase_col, 0.85 + 0.3 * _noise(u, v, 0.03, v_salt))
        col[bands] *= 0.55
        return col

    b.cylinder("vase", vx, vy, th, th + 0.28, 0.07, 0.045, vase_tex, caps=(False, True))
    bx, by = tx - 0.5 * hl * np.sign(vx - tx + 1e-9), ty + rng.uniform(-0.3, 0.3) * hw
    b.box("book_on_table", (bx - 0.15, by - 0.11, th), (bx + 0.15, by + 0.11, th + 0.05),
          _cardboard(rng, _hsv(float(rng.random()), 0.7, 0.55)), skip=("-z",))

    # Couch along the couch-side wall (its seat faces the room centre).
    cx0 = layout["couch_x"]
    cl = 2.0
    fab = _fabric(rng, _hsv(rng.uniform(0, 1), rng.uniform(0.4, 0.7), rng.uniform(0.35, 0.6)),
                  _hsv(rng.uniform(0, 1), 0.5, 0.8))
    fab_dark = _fabric(rng, _hsv(rng.uniform(0, 1), rng.uniform(0.4, 0.7), rng.uniform(0.25, 0.4)),
                       _hsv(rng.uniform(0, 1), 0.4, 0.6))
    depth = 0.9
    ya, yb = ym(y1 - depth, y1)
    b.objects["couch"] = (np.array([cx0, ya, 0.0]), np.array([cx0 + cl, yb, 0.85]))
    b.box(None, (cx0 + 0.2, ya, 0.0), (cx0 + cl - 0.2, yb, 0.25), fab_dark, skip=("+z", "-x", "+x"))
    n_cush = 2 if rng.random() < 0.5 else 3
    w = (cl - 0.4) / n_cush
    for i in range(n_cush):
        seat = ym(y1 - depth, y1 - 0.2)
        b.box(None, (cx0 + 0.2 + i * w, seat[0], 0.25), (cx0 + 0.2 + (i + 1) * w, seat[1], 0.45),
              _fabric(rng, _hsv(rng.uniform(0, 1), 0.5, 0.6), _hsv(rng.uniform(0, 1), 0.4, 0.85)),
              skip=("-z",))
    back = ym(y1 - 0.2, y1)
    b.box(None, (cx0 + 0.2, back[0], 0.25), (cx0 + cl - 0.2, back[1], 0.85), fab_dark, skip=("-z",))
    for ax0 in (cx0, cx0 + cl - 0.2):
        b.box(None, (ax0, ya, 0.0), (ax0 + 0.2, yb, 0.62), fab_dark)

    # Bookshelf against the front wall, filled with books.
    sy0 = layout["shelf_y"]
    sw, sd, sh = 1.0, 0.35, 1.9
    shelf_wood = _wood(rng, _hsv(rng.uniform(0.05, 0.12), rng.uniform(0.3, 0.6), rng.uniform(0.3, 0.7)), along=1)
    xs = x1 - sd
    b.objects["bookshelf"] = (np.array([xs, sy0 - sw / 2, 0.0]), np.array([x1, sy0 + sw / 2, sh]))
    b.box(None, (xs, sy0 - sw / 2, 0.0), (x1, sy0 - sw / 2 + 0.02, sh), shelf_wood)
    b.box(None, (xs, sy0 + sw / 2 - 0.02, 0.0), (x1, sy0 + sw / 2, sh), shelf_wood)
    b.box(None, (x1 - 0.015, sy0 - sw / 2 + 0.02, 0.0), (x1, sy0 + sw / 2 - 0.02, sh),
          _solid(_hsv(0.08, 0.3, 0.35), 5), skip=("-y", "+y", "-z", "+z"))
    levels = np.linspace(0.08, sh - 0.02, 6)
    inner = (sy0 - sw / 2 + 0.02, sy0 + sw / 2 - 0.02)
    for k, zl in enumerate(levels):
        b.box(None, (xs, inner[0], zl - 0.02 if k else 0.0), (x1 - 0.015, inner[1], zl), shelf_wood,
              skip=("-y", "+y", "+x"))
    for zl, zn in zip(levels[:-1], levels[1:]):
        books = []  # (y, thickness, height, depth, colour); None marks a gap
        y = inner[0] + rng.uniform(0.0, 0.05)
        while True:
            t = float(rng.uniform(0.025, 0.055))
            if y + t > inner[1]:
                break
            if rng.random() < 0.08:
                y += float(rng.uniform(0.04, 0.12))
                books.append(None)
                continue
            hgt = float(min(rng.uniform(0.17, 0.3), zn - zl - 0.04))
            dpt = float(rng.uniform(0.17, 0.25))
            col = _hsv(float(rng.random()), float(rng.uniform(0.4, 0.9)), float(rng.uniform(0.25, 0.85)))
            books.append((y, t, hgt, dpt, col))
            y += t
        for i, bk in enumerate(books):
            if bk is None:
                continue
            by_, t, hgt, dpt, col = bk
            skip = ["-z", "+x"]
            # a side face fully covered by a taller and deeper neighbour cannot be seen
            for tag, j in (("-y", i - 1), ("+y", i + 1)):
                nb = books[j] if 0 <= j < len(books) else None
                if nb is not None and nb[2] >= hgt and nb[3] >= dpt:
                    skip.append(tag)
            b.box(None, (x1 - 0.015 - dpt, by_, zl), (x1 - 0.015, by_ + t, zl + hgt), _cardboard(rng, col),
                  skip=tuple(skip))

    # Sideboard: against the front wall on the other side of the picture.
    sb_y = layout["sideboard_y"]
    sbw, sbd, sbh = 1.2, 0.45, 0.8
    sb_col = _hsv(rng.uniform(0, 1), rng.uniform(0.1, 0.4), rng.uniform(0.3, 0.8))
    sb_salt = int(rng.integers(1 << 30))
    sb_top = _wood(rng, _hsv(0.08, 0.55, 0.5), along=1)
    sb_lo = np.array([x1 - sbd, sb_y - sbw / 2, 0.0])
    sb_hi = np.array([x1, sb_y + sbw / 2, sbh])

    def sideboard_tex(u, v, axis):
        if axis == 2:
            return sb_top(u, v, axis)
        col = _shade(sb_col, 0.9 + 0.2 * _fbm(u, v, 0.1, sb_salt, 2))
        if axis == 0:  # front: two doors with inset panels and knobs
            du = _frac((u - sb_lo[1]) / (sbw / 2))
            edge = (du < 0.02) | (du > 0.98) | (v < 0.08) | (v > sbh - 0.04)
            panel = (du > 0.12) & (du < 0.88) & (v > 0.18) & (v < sbh - 0.12)
            col[panel] *= 0.82
            col[edge] *= 0.55
            for ky in (sb_y - 0.06, sb_y + 0.06):
                col[(u - ky) ** 2 + (v - 0.55) ** 2 < 0.02**2] = _rgb([0.85, 0.75, 0.35])
        return col

    b.box("sideboard", sb_lo, sb_hi, sideboard_tex)

    # Floor lamp in the couch-side corner near the back wall.
    lx, ly = layout["lamp_xy"]
    shade_col = _hsv(rng.uniform(0.05, 0.15), rng.uniform(0.3, 0.6), 0.9)
    metal = _solid([0.25, 0.25, 0.27], 17, amp=0.2)

    def shade_tex(u, v, axis):
        stripes = _frac(u / 0.05) < 0.5
        col = _shade(shade_col, 0.9 + 0.1 * _noise(u, v, 0.02, 23))
        col[stripes] *= 0.82
        col[np.abs(v - 1.36) < 0.015] = _rgb([0.3, 0.2, 0.1])
        return col

    b.cylinder("lamp", lx, ly, 0.0, 0.03, 0.16, 0.16, metal, caps=(False, True))
    b.cylinder(None, lx, ly, 0.03, 1.35, 0.015, 0.015, metal, caps=(False, False))
    b.cylinder(None, lx, ly, 1.35, 1.65, 0.22, 0.14, shade_tex, caps=(False, False))
    b.objects["lamp"] = (np.array([lx - 0.22, ly - 0.22, 0.0]), np.array([lx + 0.22, ly + 0.22, 1.65]))

    # Potted plant in the window-side front corner (beside the sideboard).
    px, py = layout["plant_xy"]
    pot_col = _hsv(rng.uniform(0.0, 0.1), 0.6, 0.55)
    b.cylinder("plant", px, py, 0.0, 0.4, 0.15, 0.2, _solid(pot_col, 29, amp=0.25), caps=(False, True))
    leaf_salt = int(rng.integers(1 << 30))
    green = _hsv(rng.uniform(0.25, 0.38), 0.7, 0.5)

    def leaf_tex(u, v, axis):
        n = _fbm(u, v, 0.06, leaf_salt, 3)
        return _mix(green * 0.5, green * 1.3, n)

    b.sphere(None, (px, py, 0.7), 0.3, leaf_tex)
    b.objects["plant"] = (np.array([px - 0.3, py - 0.3, 0.0]), np.array([px + 0.3, py + 0.3, 1.0]))

    # Stack of boxes in the window-side back corner.
    bx0 = x0 + 0.05
    by0 = -(y1 - 0.05) if m > 0 else (y1 - 0.05)  # corner on the side opposite the couch
    sgn = 1.0 if m > 0 else -1.0
    n_boxes = int(rng.integers(3, 6))
    palette = [_rgb([0.8, 0.62, 0.4]), _hsv(0.0, 0.75, 0.75), _hsv(0.6, 0.7, 0.7), _hsv(0.15, 0.8, 0.9),
               _hsv(0.33, 0.6, 0.55), _hsv(0.8, 0.5, 0.6)]
    order = rng.permutation(len(palette))
    footprint = [(0.0, 0.0), (0.5, 0.0), (0.0, 0.45)]
    z_at = {}
    lo_all, hi_all = np.full(3, np.inf), np.full(3, -np.inf)
    for i in range(n_boxes):
        fx, fy = footprint[i % 3]
        w, d, h = (float(rng.uniform(0.3, 0.45)), float(rng.uniform(0.3, 0.42)), float(rng.uniform(0.22, 0.4)))
        z = z_at.get(i % 3, 0.0)
        lo = np.array([bx0 + fx, by0 + sgn * fy, z])
        hi = lo + np.array([w, sgn * d, h])
        lo, hi = np.minimum(lo, hi), np.maximum(lo, hi)
        if i >= 3:  # stacked: smaller than the box below it
            below = b.objects[f"box{i - 3}"]
            hi[:2] = np.minimum(hi[:2], below[1][:2] - 0.03)
            lo[:2] = np.maximum(lo[:2], below[0][:2] + 0.03)
        z_at[i % 3] = hi[2]
        b.box(f"box{i}", lo, hi, _cardboard(rng, palette[order[i]]), skip=("-z",))
        lo_all, hi_all = np.minimum(lo_all, lo), np.maximum(hi_all, hi)
    b.objects["boxes"] = (lo_all, hi_all)


def _layout(rng: np.random.Generator) -> dict:
    """Seeded positions. The camera zone x in [-2.6, -0.1], |y| < 1.3 stays free of furniture."""
    m = 1.0 if rng.random() < 0.5 else -1.0
    y1 = ROOM_MAX[1]
    table_half = (float(rng.uniform(0.55, 0.75)), float(rng.uniform(0.38, 0.45)))
    if rng.random() < 0.35:
        table_half = (table_half[1] + 0.05, table_half[0] - 0.05)
    table_xy = (float(rng.uniform(0.9, 1.2)), float(rng.uniform(-0.4, 0.4)))
    shelf_y = float(m * rng.uniform(0.7, 1.6))
    sideboard_y = float(-m * rng.uniform(1.1, 1.6))
    return {
        "mirror": m,
        "table_xy": table_xy,
        "table_half": table_half,
        "couch_x": float(rng.uniform(-1.0, 0.2)) - 1.0,
        "shelf_y": shelf_y,
        "sideboard_y": sideboard_y,
        "picture_y": float(-m * rng.uniform(0.2, 0.6)) if abs(shelf_y) > 0.9 else float(-m * 0.3),
        "door_y": float(m * rng.uniform(-0.6, 0.6)),
        "window_x": float(rng.uniform(-0.5, 0.8)),
        "poster_x": float(rng.uniform(-0.5, 1.5)),
        "lamp_xy": (float(rng.uniform(-2.75, -2.6)), float(m * rng.uniform(2.2, 2.3))),
        "plant_xy": (float(ROOM_MAX[0] - 0.3), float(-m * (y1 - 0.3))),
        "camera_xy": (float(rng.uniform(-1.5, -1.2)), float(rng.uniform(-0.25, 0.25))),
    }


def make_room(seed: int = 0, spacing: float = 0.01) -> ProceduralScene:
    """Build the procedural room for ``seed`` sampled every ``spacing`` metres.

    Args:
        seed: any integer; the same seed (and spacing) gives the same scene, bit for bit.
        spacing: sampling pitch in metres (0.002 to 0.2); about 1.3 million points at 0.01.

    Returns:
        A :class:`ProceduralScene`.

    Raises:
        InputError: for a non-integer seed or a spacing outside [0.002, 0.2].
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed must be an integer, got {seed!r}")
    try:
        spacing = float(spacing)
    except (TypeError, ValueError):
        raise InputError(f"spacing must be a number, got {spacing!r}") from None
    if not np.isfinite(spacing) or not 0.002 <= spacing <= 0.2:
        raise InputError(f"spacing must be in [0.002, 0.2] metres, got {spacing}")

    rng = np.random.default_rng(np.random.SeedSequence([int(seed) & 0xFFFFFFFFFFFF, 0x5A7]))
    layout = _layout(rng)
    builder = _Builder(spacing)
    _room_shell(builder, rng, layout["mirror"], layout)
    _furniture(builder, rng, layout["mirror"], layout)
    points, colors = builder.result()

    cam_x, cam_y = layout["camera_xy"]
    tx, ty = layout["table_xy"]
    eye = np.array([cam_x, cam_y, CAMERA_HEIGHT])
    start_pose = validate_pose(look_at(eye, [tx, ty, CAMERA_HEIGHT]), "start_pose")
    return ProceduralScene(
        points=points,
        colors=colors,
        start_pose=start_pose,
        center=np.array([tx, ty, 0.95]),
        bounds=(ROOM_MIN.copy(), ROOM_MAX.copy()),
        seed=int(seed),
        spacing=spacing,
        objects=builder.objects,
    )
