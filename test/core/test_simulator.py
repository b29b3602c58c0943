"""WorldSimulator: lockstep time, velocity integration, placement, confined map files, edits."""

import numpy as np
import pytest

from spatia_core import InputError, SpatiaConfig
from spatia_core.simulator import WorldSimulator


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    cfg = SpatiaConfig().with_overrides({
        "camera.width": 96, "camera.height": 72, "memory.voxel_size": 0.03,
        "sim.rate_hz": 10.0, "sim.map_dir": str(tmp_path_factory.mktemp("maps")),
    })
    return WorldSimulator(cfg)


def test_time_advances_one_period_per_frame(sim):
    t0 = sim.sim_time_ns
    frames = [sim.step() for _ in range(3)]
    assert [f.stamp_ns - t0 for f in frames] == [100_000_000, 200_000_000, 300_000_000]
    assert frames[0].rgb.shape == (72, 96, 3) and frames[0].depth.dtype == np.float32
    assert frames[-1].index == frames[0].index + 2


def test_velocity_moves_the_camera_and_expires(sim):
    start = sim.base.pose.copy()
    sim.command_velocity(1.0, 0.0, 0.0)
    f = sim.step()
    np.testing.assert_allclose(np.linalg.inv(start) @ f.base_pose, _shift(0.1), atol=1e-9)
    assert f.twist.tolist() == [1.0, 0.0, 0.0]
    for _ in range(5):  # cmd_timeout 0.5 s at 10 Hz: the command stops after 5 frames
        f = sim.step()
    assert f.twist.tolist() == [0.0, 0.0, 0.0]
    with pytest.raises(InputError):
        sim.command_velocity(np.nan, 0, 0)


def _shift(dx):
    out = np.eye(4)
    out[0, 3] = dx
    return out


def test_place_camera_and_bad_poses(sim):
    target = sim.base.camera_pose().copy()
    target[:3, 3] += [0.2, 0.1, 0.0]
    f = sim.step(camera_pose=target)
    np.testing.assert_allclose(f.camera_pose, target, atol=1e-9)
    for bad in (np.full((4, 4), np.nan), np.diag([1, 1, 1, 1.0]) * 2):
        with pytest.raises(InputError):
            sim.place_camera(bad)


def test_map_files_are_confined(sim):
    path = sim.save_map("a.ply")
    assert path.parent == sim.map_dir and path.is_file()
    n = len(sim.world.memory)
    sim.load_map("a.ply")
    assert len(sim.world.memory) == n
    for bad in ("../evil.ply", "/tmp/x.ply", "sub/x.ply", "x.txt", ""):
        with pytest.raises(InputError):
            sim.save_map(bad)
    with pytest.raises(Exception):
        sim.load_map("missing.ply")
    assert len(sim.world.memory) == n


def test_edit_changes_the_view(sim):
    cam = sim.base.camera_pose()
    ahead = cam[:3, 3] + cam[:3, 2] * 1.0
    before = sim.step(camera_pose=cam).rgb.astype(int)
    n = sim.edit("recolor_box", ahead - 5, ahead + 5, [255, 0, 255])
    assert n > 0
    after = sim.step(camera_pose=cam).rgb.astype(int)
    magenta = (after[..., 0] > 240) & (after[..., 1] < 15) & (after[..., 2] > 240)
    assert magenta.mean() > 0.5 and not ((before[..., 0] > 240) & (before[..., 1] < 15)).mean() > 0.5
    with pytest.raises(InputError):
        sim.edit("explode")


def test_reset_keeps_time_monotonic(sim):
    t = sim.sim_time_ns
    sim.reset()
    assert sim.step().stamp_ns > t
    xyz, rgb = sim.memory_cloud(1000)
    assert len(xyz) <= 1000 and rgb.dtype == np.uint8


def test_projection_backend_leaves_geometry_unchanged(sim):
    """Re-showing the memory must not grow or move it (only observation counts change)."""
    sim.reset()
    mem = sim.world.memory
    n, xyz = len(mem), mem.xyz.clone()
    counts = mem.counts.clone()
    sim.command_velocity(0.5, 0.0, 0.4)
    for _ in range(12):
        sim.step()
    assert len(mem) == n
    assert (mem.xyz == xyz).all()
    assert (mem.counts >= counts).all() and (mem.counts > counts).any()


def test_frames_are_published_before_the_memory_update(sim):
    """``step(publish=...)`` hands the frame out first; the banked frame's fusion comes after."""
    while sim.frame_index % sim.config.sim.bank_every:  # the next frame is fused into the memory
        sim.step()
    seen = []
    fused_before = sim.world.memory.frames_fused
    banked_before = len(sim.world.bank.frames)

    def publish(frame):
        seen.append((frame, sim.world.memory.frames_fused, len(sim.world.bank.frames)))

    frame = sim.step(publish=publish)
    assert len(seen) == 1 and seen[0][0] is frame
    assert seen[0][1:] == (fused_before, banked_before)  # published before the update
    assert sim.world.memory.frames_fused == fused_before + 1 and len(sim.world.bank.frames) == banked_before + 1
    assert frame.stamp_ns == sim.sim_time_ns and frame.index == sim.frame_index - 1
