"""A PLY file as the world (``world.source=ply``): a map saved with entities keeps them, a plain
point cloud written by another tool loads all static as before.

Real inputs: a real WorldSimulator in the built-in room (projection generator), its map saved to
disk with ``save_map``, and a binary PLY without counts or entity ids written here byte by byte.
"""

import numpy as np
import torch

from spatia_core import SpatiaConfig
from spatia_core.config import WorldConfig
from spatia_core.geometry import Intrinsics
from spatia_core.memory import SpatialMemory, entities
from spatia_core.render import render_memory
from spatia_core.simulator import WorldSimulator
from spatia_core.worlds import load_world
from spatia_core.worlds.procedural import make_room
from test_entities import MAGENTA, box_points  # noqa: E402  (test/core is on sys.path)


def _cfg(tmp_path, **extra):
    return SpatiaConfig().with_overrides({
        "camera.width": 96, "camera.height": 72, "memory.voxel_size": 0.03, "render.compile": False,
        "sim.rate_hz": 10.0, "sim.map_dir": str(tmp_path), **extra,
    })


def _cube(edge=0.3, spacing=0.01):
    return box_points(edge, spacing)  # the entity tests' magenta cube


def _magenta(rgb):
    return (rgb[..., 0] > 230) & (rgb[..., 1] < 25) & (rgb[..., 2] > 230)


def test_saved_map_as_world_keeps_its_entities(tmp_path):
    sim = WorldSimulator(_cfg(tmp_path))
    cam = sim.base.camera_pose()
    pose = np.eye(4)
    pose[:3, 3] = cam[:3, 3] + cam[:3, :3] @ np.array([0.0, 0.0, 1.2])  # 1.2 m ahead of the camera
    pts, cols = _cube()
    spawned = sim.spawn_entity("crate", points=pts, colors=cols, pose=pose)
    path = sim.save_map("with_crate.ply")
    n_voxels, keys = len(sim.world.memory), sim.world.memory.keys.clone()

    again = WorldSimulator(_cfg(tmp_path, **{"world.source": "ply", "world.path": str(path)}))
    got = again.entities()
    assert [e.name for e in got] == ["crate"]
    e = got[0]
    assert (e.id, e.n_voxels, e.scale, e.source) == (spawned.id, spawned.n_voxels, spawned.scale, spawned.source)
    np.testing.assert_array_equal(e.pose, spawned.pose)
    np.testing.assert_allclose(e.lo, spawned.lo, atol=1e-6)
    np.testing.assert_allclose(e.hi, spawned.hi, atol=1e-6)
    mem = again.world.memory
    assert len(mem) == n_voxels and torch.equal(torch.sort(mem.keys).values, torch.sort(keys).values)
    assert int((mem.entity_ids == e.id).sum()) == e.n_voxels
    rgb = again.world.render(cam[None]).numpy()["rgb"][0]
    h, w = rgb.shape[:2]
    assert _magenta(rgb[h // 2 - 6: h // 2 + 7, w // 2 - 6: w // 2 + 7]).mean() > 0.9  # the crate, straight ahead
    # and it still behaves as an entity: deleting it brings back what it covered, no magenta left
    again.delete_entity("crate")
    assert again.entities() == [] and not _magenta(again.world.render(cam[None]).numpy()["rgb"][0]).any()


def test_plain_point_cloud_world_loads_all_static(tmp_path):
    room = make_room(0, spacing=0.05)
    rows = np.empty(len(room.points), [("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                       ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    rows["x"], rows["y"], rows["z"] = room.points.astype(np.float32).T
    rows["red"], rows["green"], rows["blue"] = room.colors.T
    header = ("ply\nformat binary_little_endian 1.0\ncomment another tool\nelement vertex %d\nproperty float x\n"
              "property float y\nproperty float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\n"
              "end_header\n" % len(rows)).encode()
    (tmp_path / "cloud.ply").write_bytes(header + rows.tobytes())

    mem = SpatialMemory(voxel_size=0.05)
    init = load_world(WorldConfig(source="auto", path=str(tmp_path / "cloud.ply")), mem)
    assert init.source == "ply" and len(mem) > 1000
    assert int(mem.entity_ids.abs().sum()) == 0 and entities.entities(mem) == []
    lo, hi = room.points.min(0), room.points.max(0)
    np.testing.assert_allclose(init.center, (lo + hi) / 2, atol=0.05)
    np.testing.assert_allclose(init.start_pose[:3, 3], init.center)
    seen = render_memory(mem, Intrinsics.from_fov(70.0, 96, 72), init.start_pose, compile=False).numpy()
    assert seen["mask"][0].mean() > 0.5  # the start view shows the room
