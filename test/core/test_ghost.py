"""Ghost test: an object moving through a static scene leaves no trace in the memory.

Synthetic, with ground truth. The static scene is the procedural room; the world's memory starts
with the part of it seen in the right half of the start view removed. A scripted generator
returns the true room rendered at the commanded poses with a small cube flying through the
removed (uncovered) region, plus the true depth. The world fuses uncovered pixels, so without
dynamics masking the cube is fused as a ghost; with ``update.dynamics=residual`` it is not,
while the static geometry revealed behind and around it is.
"""

from functools import lru_cache

import numpy as np
import torch
from scipy.spatial import cKDTree

from spatia_core import SpatiaConfig, SpatiaWorld
from spatia_core.generators import GenerationResult
from spatia_core.memory import SpatialMemory, save_ply
from spatia_core.render import render_memory
from spatia_core.worlds.procedural import make_room

VOXEL = 0.04
CUBE = 0.12  # cube edge, metres
STEP = 0.1  # cube displacement per frame, metres
CLIP, CLIPS = 5, 2


def cube_points(spacing: float = 0.01) -> tuple[np.ndarray, np.ndarray]:
    """Surface points (centred at 0) and checker colours of a cube of edge ``CUBE``."""
    g = (np.arange(int(CUBE / spacing)) + 0.5) * spacing - CUBE / 2
    uu, vv = [a.ravel() for a in np.meshgrid(g, g)]
    pts, cols = [], []
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        for side in (-CUBE / 2, CUBE / 2):
            p = np.zeros((uu.size, 3))
            p[:, axis], p[:, a], p[:, b] = side, uu, vv
            checker = ((np.floor(uu / 0.03) + np.floor(vv / 0.03)) % 2).astype(bool)
            pts.append(p)
            cols.append(np.where(checker[:, None], [230, 30, 30], [250, 220, 40]))
    return np.concatenate(pts), np.concatenate(cols).astype(np.uint8)


class FlyingCubeGenerator:
    """Renders the true room with the cube at its position for each generated frame."""

    name = "flying_cube"
    uses_references = False

    def __init__(self, static: SpatialMemory, cube_path):
        self.static = static
        self.cube_xyz, self.cube_rgb = cube_points()
        self.cube_path = cube_path  # (N, 3) cube centres, one per generated frame
        self.n = 0

    def generate(self, request):
        frames, depths = [], []
        for pose in request.poses:
            s = render_memory(self.static, request.intrinsics, pose[None], compile=False)
            obj = SpatialMemory(voxel_size=0.01)
            obj.insert_points(self.cube_xyz + self.cube_path[self.n], self.cube_rgb)
            o = render_memory(obj, request.intrinsics, pose[None], compile=False)
            front = o.mask & (~s.mask | (o.depth < s.depth))
            rgb = torch.where(front[..., None], o.rgb, s.rgb)
            depth = torch.where(front, o.depth, torch.where(s.mask, s.depth, 0.0))
            frames.append((rgb[0].clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy())
            depths.append(depth[0].numpy().astype(np.float32))
            self.n += 1
        return GenerationResult(np.stack(frames), np.stack(depths))


@lru_cache(maxsize=1)
def scene():
    """The true room, its memory, the cube's path and the partial start map (computed once)."""
    room = make_room(0, spacing=VOXEL)
    static = SpatialMemory(voxel_size=VOXEL)
    static.insert_points(room.points, room.colors)
    start = room.start_pose
    # the cube flies right then back left, 1 m in front of the camera at camera height
    xs = 0.15 + STEP * np.concatenate([np.arange(CLIP), np.arange(CLIP)[::-1]])
    cube_path = np.stack([start[:3, :3] @ np.array([x, 0.0, 1.0]) + start[:3, 3] for x in xs])
    # the start map lacks what the right half of the start view shows beyond 1.6 m (behind the flight)
    cam = (room.points - start[:3, 3]) @ start[:3, :3]
    removed = (cam[:, 2] > 1.6) & (cam[:, 0] > 0.05 * cam[:, 2])
    partial = SpatialMemory(voxel_size=VOXEL)
    partial.insert_points(room.points[~removed], room.colors[~removed])
    return room, static, cube_path, partial, room.points[removed]


def run_rollout(dynamics: str, tmp_path):
    """Roll out the world from the partial map; returns (world, clip results)."""
    room, static, cube_path, partial, _ = scene()
    ply = tmp_path / "partial.ply"
    if not ply.exists():
        save_ply(partial, ply)
    cfg = SpatiaConfig().with_overrides({"camera.width": 96, "camera.height": 72, "memory.voxel_size": VOXEL,
                                         "render.compile": False, "update.dynamics": dynamics,
                                         "generator.clip_frames": CLIP, "world.source": "ply", "world.path": str(ply)})
    world = SpatiaWorld(cfg, generator=FlyingCubeGenerator(static, cube_path))
    world.reset()
    start = room.start_pose
    poses = np.repeat(start[None], CLIP * CLIPS, 0)
    poses[:, :3, 3] += np.linspace(0, 0.05, len(poses))[:, None] * start[:3, 0]  # a slight sideways drift
    return world, list(world.run(poses, clip_frames=CLIP))


def voxels_near_cube(memory, cube_path, tol: float) -> int:
    xyz = memory.xyz.numpy()
    half = CUBE / 2 + tol
    return int(sum((np.abs(xyz - c).max(1) <= half).sum() for c in cube_path))


def recovered_share(memory, pts: np.ndarray, visible: np.ndarray) -> float:
    """Share of the ``visible`` removed true points with a memory voxel within 1.5 voxels."""
    d, _ = cKDTree(memory.xyz.numpy()).query(pts[visible])
    return float((d < 1.5 * VOXEL).mean())


def test_moving_object_leaves_no_ghost_but_static_scene_is_fused(tmp_path):
    room, _, path, _, removed = scene()
    plain, _ = run_rollout("none", tmp_path)
    masked, results = run_rollout("residual", tmp_path)
    tol = VOXEL  # one voxel: the cube's rim pixels are blended by the splat renderer

    # the scene is meaningful: no static geometry near the cube's flight
    assert (np.abs(room.points[:, None, :] - path[None]).max(-1) <= CUBE / 2 + tol).sum() == 0
    # without dynamics masking the cube is fused: a ghost along its path
    ghost = voxels_near_cube(plain.memory, path, tol)
    assert ghost > 20, ghost
    # with the residual detector: nothing near any of the cube's positions
    assert voxels_near_cube(masked.memory, path, tol) == 0
    assert all(r.dynamic is not None and r.dynamic.shape == r.frames.shape[:3] for r in results)
    # the static scene revealed behind and around the cube is still fused, as without masking
    d, _ = cKDTree(plain.memory.xyz.numpy()).query(removed)
    visible = d < 1.5 * VOXEL  # removed points the rollout saw at all
    assert visible.mean() > 0.2
    share = recovered_share(masked.memory, removed, visible)
    assert share > 0.85, share
