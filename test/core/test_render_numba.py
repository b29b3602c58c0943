"""The numba CPU kernel renders exactly what the torch kernel renders, and is chosen safely."""

import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)
import torch

from spatia_core import Intrinsics, SpatialMemory, SpatiaConfig, look_at
from spatia_core import render_numba
from spatia_core.errors import BackendUnavailableError, InputError
from spatia_core.render import render_memory, render_points

pytestmark = _prereq.mark(not render_numba.AVAILABLE, "numba is not installed (requirements.txt)")


def _scene(seed=0):
    """A 1 cm room shell with a box and scattered clutter: every splat size occurs in its views."""
    rng = np.random.default_rng(seed)
    s = 0.01
    g = np.arange(-1.5, 1.5, s) + s / 2
    a, b = np.meshgrid(g, g, indexing="ij")
    floor = np.stack([a.ravel(), b.ravel(), np.full(a.size, s / 2)], 1)
    wall = np.stack([np.full(a.size, 1.5 - s / 2), a.ravel(), b.ravel() + 1.5], 1)
    side = np.stack([a.ravel(), np.full(a.size, 1.5 - s / 2), b.ravel() + 1.5], 1)
    c = np.arange(0, 0.3, s) + s / 2
    box = np.stack(np.meshgrid(c, c, c, indexing="ij"), -1).reshape(-1, 3) + [0.2, -0.2, 0.8]
    clutter = rng.uniform([-1.5, -1.5, 0.0], [1.5, 1.5, 3.0], (20000, 3))
    pts = np.concatenate([floor, wall, side, box, clutter]).astype(np.float32)
    rgb = rng.integers(0, 256, (len(pts), 3), dtype=np.uint8)
    mem = SpatialMemory(voxel_size=s, block_size=0.5)
    mem.insert_points(pts, rgb)
    return mem


POSES = [look_at([-1.0, 0.0, 1.2], [1.0, 0.2, 1.0]),  # across the room
         look_at([0.0, -0.2, 0.95], [0.35, -0.05, 0.95]),  # 10-20 cm from the box: large splats
         look_at([-1.4, -1.4, 2.8], [1.0, 1.0, 0.0]),  # from a corner, steeply down
         look_at([1.2, 0.0, 1.0], [2.5, 0.0, 1.0])]  # at the wall from 30 cm, clutter behind the camera


@pytest.mark.parametrize("size", [(160, 120), (97, 61)])  # odd sizes: the 2-pixel grid's last cells
def test_numba_kernel_equals_torch_kernel(size):
    mem = _scene()
    k = Intrinsics.from_fov(75, *size)
    numba_out = render_memory(mem, k, np.stack(POSES), kernel="numba")
    torch_out = render_memory(mem, k, np.stack(POSES), kernel="torch", compile=False)
    assert torch_out.mask.float().mean() > 0.5
    assert torch.equal(numba_out.index, torch_out.index)
    assert torch.equal(numba_out.depth, torch_out.depth)
    assert torch.equal(numba_out.rgb, torch_out.rgb)
    assert torch.equal(numba_out.mask, torch_out.mask)


def test_numba_kernel_without_blocks_and_uint8_colours():
    mem = _scene(1)
    k = Intrinsics.from_fov(60, 80, 60)
    rgb8 = (mem.rgb * 255 + 0.5).to(torch.uint8)
    for pose in POSES:
        a = render_points(mem.xyz, rgb8, k, pose, mem.voxel_size, kernel="numba")
        b = render_points(mem.xyz, rgb8, k, pose, mem.voxel_size, kernel="torch", compile=False)
        assert torch.equal(a.index, b.index) and torch.equal(a.depth, b.depth) and torch.equal(a.rgb, b.rgb)


def test_auto_falls_back_to_torch_and_numba_says_what_is_missing(monkeypatch):
    mem = _scene(2)
    k = Intrinsics.from_fov(60, 64, 48)
    expected = render_memory(mem, k, POSES[0], kernel="torch", compile=False)
    monkeypatch.setattr(render_numba, "AVAILABLE", False)
    assert torch.equal(render_memory(mem, k, POSES[0]).index, expected.index)  # auto: torch
    with pytest.raises(BackendUnavailableError, match="numba"):
        render_memory(mem, k, POSES[0], kernel="numba")
    with pytest.raises(InputError, match="kernel"):
        render_memory(mem, k, POSES[0], kernel="opengl")
    with pytest.raises(InputError, match="render.kernel"):
        SpatiaConfig().with_overrides({"render.kernel": "opengl"})


@pytest.mark.parametrize("size", [(160, 120), (97, 61)])  # odd rows: a band boundary inside the 2-pixel grid
def test_a_view_split_over_threads_is_the_same_view(size, monkeypatch):
    """Each thread z-buffers a share of the blocks; merged and resolved in row bands, the pixels
    are those of one thread, and of the torch kernel, for 2, 3 and 5 threads."""
    import spatia_core.render as render_mod
    mem = _scene()
    k = Intrinsics.from_fov(75, *size)
    poses = np.stack(POSES)
    one = render_memory(mem, k, poses, kernel="numba", threads=1)
    calls = []
    real = render_mod._in_parallel
    monkeypatch.setattr(render_mod, "_in_parallel", lambda tasks: (calls.append(len(tasks)), real(tasks)))
    monkeypatch.setattr(render_mod, "_POINTS_PER_THREAD", 1)  # split every view, however few points it sees
    for threads in (2, 3, 5):
        calls.clear()
        many = render_memory(mem, k, poses, kernel="numba", threads=threads)
        assert calls and max(calls) == threads  # the views were split
        for f in ("index", "depth", "rgb", "mask"):
            assert torch.equal(getattr(many, f), getattr(one, f)), (threads, f)
    assert torch.equal(one.index, render_memory(mem, k, poses, kernel="torch", compile=False).index)


def test_threaded_views_from_several_callers_at_once():
    """Callers on several threads at once (e.g. the node's render and a service) each get their
    own z-buffers: every view comes out as when rendered alone."""
    from concurrent.futures import ThreadPoolExecutor
    mem = _scene(3)
    k = Intrinsics.from_fov(75, 160, 120)
    alone = [render_memory(mem, k, p, kernel="numba", threads=1) for p in POSES]
    with ThreadPoolExecutor(4) as pool:
        outs = list(pool.map(lambda i: render_memory(mem, k, POSES[i % 4], kernel="numba", threads=2), range(16)))
    for i, out in enumerate(outs):
        assert torch.equal(out.index, alone[i % 4].index) and torch.equal(out.rgb, alone[i % 4].rgb)


def test_render_threads_setting():
    from spatia_core.render import render_threads
    assert render_threads(3) == 3 and 1 <= render_threads(0) <= 4
    with pytest.raises(InputError, match="threads"):
        render_threads(-1)
    with pytest.raises(InputError, match="render.threads"):
        SpatiaConfig().with_overrides({"render.threads": -1})
    assert SpatiaConfig().with_overrides({"render.threads": 2}).render.threads == 2
