"""Free-space carving: a voxel a new frame sees through loses support and is eventually removed.

Unit cases on a wall with a floater in front of it (true depth, the memory's own render), and the
world loop: the built-in room with a floater sheet fused in, a scripted generator showing the true
room with its true depth, as a generative model with a depth estimate would.
"""

import numpy as np
import pytest
import torch

from spatia_core import SpatiaConfig, SpatiaWorld
from spatia_core.generators import GenerationResult
from spatia_core.geometry import Intrinsics
from spatia_core.memory import SpatialMemory, save_ply, spawn_entity
from spatia_core.memory.support import through_voxels
from spatia_core.render import render_memory
from spatia_core.worlds.procedural import make_room

VOXEL = 0.04
K = Intrinsics(60.0, 60.0, 40.0, 30.0, 80, 60)


def plane(z: float, half: float, spacing: float = 0.02) -> np.ndarray:
    g = np.arange(-half, half, spacing) + spacing / 2
    x, y = np.meshgrid(g, g)
    return np.stack([x.ravel(), y.ravel(), np.full(x.size, z)], 1)


def wall_and_floater(floater_counts: int = 2):
    """Memory: a wall at z=2 seen whole by the identity camera, a 0.2 m floater sheet at z=1."""
    mem = SpatialMemory(voxel_size=VOXEL)
    wall = plane(2.0, 2.0)
    mem.insert_points(wall, np.full_like(wall, 0.5))
    floater = plane(1.0, 0.1)
    floater_keys = mem.write_voxels(torch.as_tensor(floater).float(), torch.ones(len(floater), 3),
                                    counts=floater_counts).keys
    truth = SpatialMemory(voxel_size=VOXEL)
    truth.insert_points(wall, np.full_like(wall, 0.5))
    return mem, floater_keys, truth


def fuse_true_view(mem, truth, pose=np.eye(4), **kw):
    seen = render_memory(mem, K, pose[None], compile=False)
    true = render_memory(truth, K, pose[None], compile=False)
    rgb = (true.rgb[0].numpy() * 255).astype(np.uint8)
    return mem.insert_frame(rgb, true.depth[0].numpy(), K, pose, exclude_mask=seen.mask[0].numpy(),
                            observed=seen.index[0], rendered_depth=seen.depth[0], **kw)


def present(mem, keys) -> int:
    return int((mem.find(keys) >= 0).sum())


def test_a_floater_loses_one_observation_per_view_then_goes_and_the_wall_stays():
    mem, floater, truth = wall_and_floater(floater_counts=2)
    n_wall = len(mem) - floater.numel()
    first = fuse_true_view(mem, truth)
    assert first.voxels_unsupported == floater.numel() and first.voxels_removed == 0
    assert present(mem, floater) == floater.numel()
    assert (mem.counts[mem.find(floater)] == 1).all()
    second = fuse_true_view(mem, truth)
    assert second.voxels_removed == floater.numel() and second.remap is not None
    assert present(mem, floater) == 0
    assert len(mem) == n_wall  # the wall behind was there already: re-observed, nothing new, nothing lost
    after = render_memory(mem, K, np.eye(4)[None], compile=False)
    true = render_memory(truth, K, np.eye(4)[None], compile=False)
    assert torch.equal(after.depth, true.depth)


def test_a_voxel_seen_very_often_is_not_immortal():
    mem, floater, truth = wall_and_floater(floater_counts=1000)
    for _ in range(mem.max_weight):
        fuse_true_view(mem, truth)
    assert present(mem, floater) == 0


def test_nearer_depth_and_exempt_pixels_take_no_support():
    mem, floater, truth = wall_and_floater(floater_counts=1)
    seen = render_memory(mem, K, np.eye(4)[None], compile=False)
    nearer = torch.where(seen.mask[0], seen.depth[0] * 0.5, 0.0)  # something in front of everything
    assert through_voxels(seen.index[0], nearer, seen.depth[0], 0.05, VOXEL).numel() == 0
    exempt = np.ones((K.height, K.width), bool)  # all dynamic: no vote
    r = fuse_true_view(mem, truth, carve_exempt=exempt)
    assert r.voxels_unsupported == 0 and present(mem, floater) == floater.numel()


def test_entity_voxels_are_never_carved():
    mem = SpatialMemory(voxel_size=VOXEL)
    wall = plane(2.0, 2.0)
    mem.insert_points(wall, np.full_like(wall, 0.5))
    truth = SpatialMemory(voxel_size=VOXEL)
    truth.insert_points(wall, np.full_like(wall, 0.5))
    box = plane(0.0, 0.1)
    spawn_entity(mem, "sheet", points=box, colors=np.full((len(box), 3), 200, np.uint8), pose=_at(1.0))
    n = len(mem)
    for _ in range(3):
        assert fuse_true_view(mem, truth).voxels_unsupported == 0
    assert len(mem) == n


def _at(z):
    t = np.eye(4)
    t[2, 3] = z
    return t


def test_carving_needs_the_views_index_map():
    mem, _, truth = wall_and_floater()
    seen = render_memory(mem, K, np.eye(4)[None], compile=False)
    with pytest.raises(Exception, match="index map"):
        mem.insert_frame(np.zeros((60, 80, 3), np.uint8), np.ones((60, 80), np.float32), K, np.eye(4),
                         observed=seen.index[0].reshape(-1), rendered_depth=seen.depth[0])


# -- the world loop ---------------------------------------------------------------------------

class TrueRoomGenerator:
    """Shows the true room (colour and depth) at each commanded pose."""

    name = "true_room"
    uses_references = False

    def __init__(self, truth: SpatialMemory):
        self.truth = truth

    def generate(self, request):
        s = render_memory(self.truth, request.intrinsics, np.asarray(request.poses), compile=False)
        frames = (s.rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
        return GenerationResult(frames, torch.where(s.mask, s.depth, 0.0).numpy().astype(np.float32))


def floater_world(tmp_path, carve: bool):
    room = make_room(0, spacing=VOXEL)
    truth = SpatialMemory(voxel_size=VOXEL)
    truth.insert_points(room.points, room.colors)
    start = room.start_pose
    sheet = plane(0.0, 0.15, 0.02) @ start[:3, :3].T + start[:3, :3] @ np.array([0.0, 0.0, 0.8]) + start[:3, 3]
    polluted = SpatialMemory(voxel_size=VOXEL)
    polluted.insert_points(room.points, room.colors)
    polluted.insert_points(sheet, np.full((len(sheet), 3), 255, np.uint8))
    ply = tmp_path / f"polluted_{carve}.ply"
    save_ply(polluted, ply)
    cfg = SpatiaConfig().with_overrides({"camera.width": 96, "camera.height": 72, "memory.voxel_size": VOXEL,
                                         "render.compile": False, "update.carve": carve, "generator.clip_frames": 4,
                                         "world.source": "ply", "world.path": str(ply)})
    world = SpatiaWorld(cfg, generator=TrueRoomGenerator(truth))
    world.reset()
    poses = np.repeat(start[None], 8, 0)
    poses[:, :3, 3] += np.linspace(0, 0.1, 8)[:, None] * start[:3, 0]  # a slight sideways drift
    results = list(world.run(poses, clip_frames=4))
    return world, truth, room, sheet, results


def nearer_share(world, truth, pose) -> float:
    """Share of pixels of the world's view at ``pose`` showing a surface > 5 % nearer than the true room."""
    view = world.render(pose[None])
    true = render_memory(truth, world.intrinsics, pose[None], compile=False)
    return float((view.mask & (view.depth < 0.95 * true.depth)).float().mean())


def test_the_world_loop_carves_a_floater_and_keeps_the_room(tmp_path):
    kept, _, _, sheet, _ = floater_world(tmp_path, carve=False)
    world, truth, room, sheet, results = floater_world(tmp_path, carve=True)
    keys = world.memory.voxelise(torch.as_tensor(sheet).float(), torch.zeros(len(sheet), 3))[0]
    assert present(kept.memory, keys) == keys.numel()  # without carving the floater stays
    assert present(world.memory, keys) == 0
    room_keys = truth.keys
    assert present(world.memory, room_keys) == room_keys.numel()  # no voxel of the room was lost
    assert sum(r.fused_poses is not None for r in results) == 2
    last = results[-1].poses[-1]
    # The floater hid ~11 % of the view; what is left nearer than the truth are a few voxels fused
    # from the refilled pixels (splat depth is constant across a splat, so its back-projection
    # does not lie exactly on a slanted surface).
    assert nearer_share(kept, truth, last) > 0.05
    assert nearer_share(world, truth, last) < 0.01


def test_index_maps_rendered_before_a_removal_follow_the_remap():
    mem, floater, truth = wall_and_floater(floater_counts=1)
    before = render_memory(mem, K, np.eye(4)[None], compile=False).index[0]
    keys_before = torch.where(before >= 0, mem.keys[before.clamp(min=0)], -1)
    r = fuse_true_view(mem, truth)
    assert r.voxels_removed == floater.numel()
    moved = torch.where(before >= 0, r.remap[before.clamp(min=0)], before)
    kept = moved >= 0
    assert torch.equal(mem.keys[moved[kept]], keys_before[kept])  # the same voxels, at their new places
    gone = (before >= 0) & ~kept  # the floater's pixels
    assert int(gone.sum()) > 0 and bool(torch.isin(keys_before[gone], floater).all())


def test_the_projection_backend_never_carves(tmp_path):
    """Its depth is the memory's own: even a floater stays, and the memory does not change."""
    room = make_room(0, spacing=VOXEL)
    polluted = SpatialMemory(voxel_size=VOXEL)
    polluted.insert_points(room.points, room.colors)
    start = room.start_pose
    sheet = plane(0.0, 0.15, 0.02) @ start[:3, :3].T + start[:3, :3] @ np.array([0.0, 0.0, 0.8]) + start[:3, 3]
    polluted.insert_points(sheet, np.full((len(sheet), 3), 255, np.uint8))
    save_ply(polluted, tmp_path / "p.ply")
    cfg = SpatiaConfig().with_overrides({"camera.width": 96, "camera.height": 72, "memory.voxel_size": VOXEL,
                                         "render.compile": False, "generator.clip_frames": 4,
                                         "world.source": "ply", "world.path": str(tmp_path / "p.ply")})
    world = SpatiaWorld(cfg)
    world.reset()
    keys, xyz = world.memory.keys.clone(), world.memory.xyz.clone()
    poses = np.repeat(start[None], 8, 0)
    poses[:, :3, 3] += np.linspace(0, 0.1, 8)[:, None] * start[:3, 0]
    assert sum(r.carved for r in world.run(poses, clip_frames=4)) == 0
    assert torch.equal(world.memory.keys, keys) and torch.equal(world.memory.xyz, xyz)
