"""Scene projection: z-buffer order, closed surfaces, no see-through, batches (both kernels)."""

import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)
import torch

from spatia_core import Intrinsics, SpatialMemory, look_at
from spatia_core import render_numba
from spatia_core.render import render_memory, render_points


@pytest.fixture(params=["numba", "torch"])
def kernel(request):
    _prereq.require(request.param != "numba" or render_numba.AVAILABLE, "numba is not installed (requirements.txt)")
    return request.param


def _wall(x, half=3.0, spacing=0.01, color=(200, 200, 200)):
    """Points of a square wall at world x = ``x`` on the voxel lattice, facing -x."""
    g = (np.arange(-half, half, spacing) + spacing / 2).astype(np.float32)
    yy, zz = np.meshgrid(g, g + half, indexing="ij")
    pts = np.stack([np.full(yy.size, x + spacing / 2, np.float32), yy.ravel(), zz.ravel()], 1)
    return pts, np.tile(np.array(color, np.uint8), (len(pts), 1))


@pytest.fixture(scope="module")
def wall_memory():
    mem = SpatialMemory(voxel_size=0.01)
    wall, grey = _wall(2.0)
    red_pts, red = _wall(2.5, half=1.0, color=(255, 0, 0))  # behind the wall
    mem.insert_points(np.concatenate([wall, red_pts]), np.concatenate([grey, red]))
    return mem


@pytest.mark.parametrize("distance", [0.15, 0.3, 0.6, 1.0, 1.9])
def test_near_wall_is_closed_and_hides_what_is_behind(wall_memory, distance, kernel):
    k = Intrinsics.from_fov(60, 160, 120)
    pose = look_at([2.0 - distance, 0.0, 3.0], [3.0, 0.0, 3.0])
    out = render_memory(wall_memory, k, pose, kernel=kernel)
    rgb = out.rgb[0]
    red = (rgb[..., 0] > 0.9) & (rgb[..., 1] < 0.1)
    assert out.mask.all(), f"holes in a wall at {distance} m: coverage {out.coverage().item():.4f}"
    assert not red.any(), f"{int(red.sum())} pixels see through the wall at {distance} m"
    assert torch.allclose(out.depth[0][out.mask[0]].median(), torch.tensor(distance), atol=0.02)


def test_nearest_point_wins_regardless_of_order(kernel):
    k = Intrinsics.from_fov(60, 64, 48)
    pose = look_at([0, 0, 3.0], [1, 0, 3.0])
    near, grey = _wall(1.0, half=2.0, spacing=0.02)
    far, red = _wall(2.0, half=2.0, spacing=0.02, color=(255, 0, 0))
    for order in (1, -1):
        pts = np.concatenate([near, far])[::order]
        cols = np.concatenate([grey, red])[::order]
        out = render_points(torch.from_numpy(pts.copy()), torch.from_numpy(cols.copy()), k, pose, voxel_size=0.02,
                            kernel=kernel)
        assert out.mask.all()
        assert torch.allclose(out.depth, torch.full_like(out.depth, 1.01), atol=0.011)
        assert (out.rgb[..., 0] < 0.9).all()


def test_batch_equals_single_views(wall_memory, kernel):
    k = Intrinsics.from_fov(70, 96, 72)
    poses = np.stack([look_at([1.0, y, 3.0], [3.0, y * 0.5, 2.5]) for y in (-0.5, 0.0, 0.5)])
    batch = render_memory(wall_memory, k, poses, kernel=kernel)
    for i, pose in enumerate(poses):
        single = render_memory(wall_memory, k, pose, kernel=kernel)
        assert torch.equal(single.index[0], batch.index[i])
        assert torch.equal(single.rgb[0], batch.rgb[i])


def test_points_behind_the_camera_are_not_drawn(wall_memory, kernel):
    k = Intrinsics.from_fov(60, 64, 48)
    pose = look_at([2.5, 0, 3.0], [5.0, 0, 3.0])  # past both walls, looking away
    out = render_memory(wall_memory, k, pose, kernel=kernel)
    assert not out.mask.any()


def test_index_points_at_the_visible_voxels(wall_memory, kernel):
    k = Intrinsics.from_fov(60, 64, 48)
    out = render_memory(wall_memory, k, look_at([1.0, 0, 3.0], [2.0, 0, 3.0]), kernel=kernel)
    idx = out.index[0][out.mask[0]]
    assert torch.allclose(wall_memory.xyz[idx, 0], torch.tensor(2.005), atol=1e-4)


def test_square_min_filter_matches_brute_force():
    from spatia_core.render import _EMPTY, _square_min

    gen = torch.Generator().manual_seed(0)
    for r in (1, 2, 3, 5, 8):
        img = torch.randint(0, 1000, (17, 23), generator=gen)
        img[torch.rand(17, 23, generator=gen) < 0.7] = _EMPTY
        ref = torch.stack([torch.stack([img[max(0, y - r): y + r + 1, max(0, x - r): x + r + 1].min()
                                        for x in range(23)]) for y in range(17)])
        assert torch.equal(_square_min(img, r), ref)


def test_expanded_and_filtered_large_splats_render_the_same(monkeypatch):
    import spatia_core.render as render

    mem = SpatialMemory(voxel_size=0.05)  # coarse voxels: most splats are large
    wall, grey = _wall(2.0, half=2.0, spacing=0.05)
    box, red = _wall(1.2, half=0.3, spacing=0.05, color=(255, 0, 0))
    mem.insert_points(np.concatenate([wall, box]), np.concatenate([grey, red]))
    k = Intrinsics.from_fov(70, 96, 72)
    pose = look_at([0.2, 0.1, 2.0], [2.0, -0.2, 1.8])
    outs = []
    for limit in (1e9, 0.0):  # expand every radius / filter every radius
        monkeypatch.setattr(render, "_EXPAND_LIMIT", limit)
        outs.append(render_memory(mem, k, pose, kernel="torch"))  # the torch kernel's two paths
    assert torch.equal(outs[0].index, outs[1].index) and torch.equal(outs[0].depth, outs[1].depth)
    assert outs[0].mask.all()
