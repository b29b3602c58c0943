"""The built-in procedural room: determinism, sampling density, free space around the start camera."""

import time

import numpy as np
import pytest
from scipy.spatial import cKDTree

from spatia_core.errors import InputError
from spatia_core.geometry import validate_pose
from spatia_core.trajectories import make_trajectory
from spatia_core.worlds.procedural import ProceduralScene, make_room


def _n_distinct(keys: np.ndarray) -> int:
    """Number of distinct int64 keys (sorting is much faster than np.unique's hashing here)."""
    s = np.sort(keys)
    return int(1 + np.count_nonzero(np.diff(s))) if len(s) else 0


@pytest.fixture(scope="module")
def room() -> ProceduralScene:
    t0 = time.perf_counter()
    scene = make_room(seed=0, spacing=0.01)
    dt = time.perf_counter() - t0
    print(f"\nmake_room(seed=0, spacing=0.01): {len(scene.points)} points in {dt:.2f} s")
    assert dt < 6.0  # ~0.5-1 s on 2 CPU cores; generous for loaded CI machines
    return scene


def test_types_shapes_and_bounds(room):
    assert room.points.dtype == np.float32 and room.points.ndim == 2 and room.points.shape[1] == 3
    assert room.colors.dtype == np.uint8 and room.colors.shape == room.points.shape
    assert 1_000_000 <= len(room.points) <= 1_700_000
    lo, hi = room.bounds
    assert np.all(room.points >= lo - 1e-4) and np.all(room.points <= hi + 1e-4)
    size = hi - lo
    assert 5.5 < size[0] < 6.5 and 4.5 < size[1] < 5.5 and 2.6 < size[2] < 3.0 and lo[2] == 0.0
    assert room.center.shape == (3,) and np.all(room.center > lo) and np.all(room.center < hi)


def test_spacing_fills_voxels_without_duplicates(room):
    ijk = np.floor(room.points / room.spacing).astype(np.int64) + 4096
    keys = (ijk[:, 0] << 26) | (ijk[:, 1] << 13) | ijk[:, 2]
    distinct = _n_distinct(keys) / len(keys)
    assert distinct >= 0.9, f"only {distinct:.1%} of points fall in distinct voxels"
    # the floor is a closed surface: every 1 cm voxel of it holds a point
    assert _n_distinct(keys[room.points[:, 2] == 0.0]) == 600 * 500


def test_deterministic_and_seed_dependent():
    a, b = make_room(seed=3, spacing=0.03), make_room(seed=3, spacing=0.03)
    assert np.array_equal(a.points, b.points) and np.array_equal(a.colors, b.colors)
    assert np.array_equal(a.start_pose, b.start_pose)
    c = make_room(seed=4, spacing=0.03)
    assert not np.allclose(c.start_pose, a.start_pose)
    assert len(c.points) != len(a.points) or not np.array_equal(c.points, a.points)
    n = min(len(a.colors), len(c.colors))
    assert np.mean(np.any(a.colors[:n] != c.colors[:n], axis=1)) > 0.5  # colours differ almost everywhere


def test_start_pose_is_upright_and_looks_at_furniture(room):
    pose = validate_pose(room.start_pose)
    eye, fwd = pose[:3, 3], pose[:3, 2]
    assert eye[2] == pytest.approx(1.2) and abs(fwd[2]) < 1e-9 and pose[2, 1] < -0.999
    lo, hi = room.bounds
    assert np.all(eye > lo + 1.0) and np.all(eye[:2] < hi[:2] - 1.0)
    # nothing within 0.3 m of the camera
    d = np.linalg.norm(room.points - eye.astype(np.float32), axis=1)
    assert d.min() > 0.3
    # the table is in view, and the first surface straight ahead is not a wall at close range
    table = (room.objects["table"][0] + room.objects["table"][1]) / 2
    to_table = (table - eye) / np.linalg.norm(table - eye)
    assert to_table @ fwd > np.cos(np.deg2rad(25))
    rel = room.points - eye.astype(np.float32)
    along = rel @ fwd.astype(np.float32)
    off = np.linalg.norm(rel - along[:, None] * fwd.astype(np.float32), axis=1)
    ahead = (along > 0) & (off < 0.05 * along)
    assert along[ahead].min() > 1.2


@pytest.mark.parametrize("seed", [0, 1, 2, 7])
def test_free_space_for_the_standard_trajectories(seed):
    scene = make_room(seed=seed, spacing=0.02)
    tree = cKDTree(scene.points)
    for name, kwargs in (("forward_back", {"distance": 1.0}), ("orbit", {"radius": 0.5}),
                         ("orbit", {"radius": 0.5, "side": "left"}), ("loop", {"radius": 0.5}),
                         ("loop", {"radius": 0.5, "facing": "tangent"}),
                         ("loop", {"radius": 0.5, "facing": "tangent", "turn": "right"})):
        poses = make_trajectory(name, scene.start_pose, 48, **kwargs)
        clearance, _ = tree.query(poses[:, :3, 3])
        assert clearance.min() > 0.4, f"seed {seed} {name} {kwargs}: {clearance.min():.2f} m"
    # ~1 m free around the camera in x and y at any height
    eye = scene.start_pose[:3, 3]
    box = np.all(np.abs(scene.points[:, :2] - eye[:2]) < 1.0, axis=1)
    inner = box & (scene.points[:, 2] > 0.01) & (scene.points[:, 2] < scene.bounds[1][2] - 0.01)
    assert not inner.any()


def test_textures_have_colour_variety_and_structure(room):
    q = room.colors // 16
    n_colours = len(np.unique(q.astype(np.int32) @ np.array([256, 16, 1], np.int32)))
    assert n_colours > 400
    assert room.colors.std(axis=0).min() > 30
    # big surfaces are not flat colour: floor, ceiling and each wall vary
    lo, hi = room.bounds
    for axis, value in ((2, lo[2]), (2, hi[2]), (0, lo[0]), (0, hi[0]), (1, lo[1]), (1, hi[1])):
        on = np.abs(room.points[:, axis] - value) < 1e-4
        lum = room.colors[on].astype(np.float32).mean(axis=1)
        assert on.sum() > 100_000 and lum.std() > 8, (axis, value, lum.std())
        # sharp edges too (joints, frames, stripes): some neighbouring samples differ a lot
        assert (np.abs(np.diff(lum)) > 10).mean() > 0.003


def test_bad_arguments():
    with pytest.raises(InputError):
        make_room(seed=0, spacing=0.0)
    with pytest.raises(InputError):
        make_room(seed=0, spacing=float("nan"))
    with pytest.raises(InputError):
        make_room(seed="zero")
