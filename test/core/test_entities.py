"""Entities in the memory: spawn, move, delete, list, save/load, and no ghost in the built-in room.

Real inputs: the built-in procedural room in a real WorldSimulator (projection generator, so its
frames are the rendered memory and every step fuses them back), real PLY files on disk.
"""

import numpy as np
import pytest
import torch

from spatia_core import SpatiaConfig
from spatia_core.errors import EntityError, FileFormatError, InputError
from spatia_core.memory import MemoryEditor, SpatialMemory, entities, load_ply, save_ply
from spatia_core.render import render_memory
from spatia_core.simulator import WorldSimulator
from spatia_core.worlds.procedural import make_room

MAGENTA = np.uint8([255, 0, 255])
BOX = 0.3  # box edge, metres


def box_points(edge=BOX, spacing=0.01):
    """Surface points of a cube of ``edge`` centred at 0 and its (magenta) colours."""
    g = (np.arange(int(round(edge / spacing))) + 0.5) * spacing - edge / 2
    uu, vv = [a.ravel() for a in np.meshgrid(g, g)]
    pts = []
    for axis in range(3):
        a, b = [i for i in range(3) if i != axis]
        for side in (-edge / 2, edge / 2):
            p = np.zeros((uu.size, 3))
            p[:, axis], p[:, a], p[:, b] = side, uu, vv
            pts.append(p)
    pts = np.concatenate(pts)
    return pts, np.tile(MAGENTA, (len(pts), 1))


def at(cam, right, ahead=1.2):
    """Entity pose ``right`` m to the right of and ``ahead`` m in front of the camera ``cam``."""
    pose = np.eye(4)
    pose[:3, 3] = cam[:3, 3] + cam[:3, :3] @ np.array([right, 0.0, ahead])
    return pose


def magenta(rgb_u8: np.ndarray) -> np.ndarray:
    return (rgb_u8[..., 0] > 230) & (rgb_u8[..., 1] < 25) & (rgb_u8[..., 2] > 230)


def window(k, cam, centre, half_px=6):
    """Slice of the pixels around the projection of world point ``centre``."""
    c = (centre - cam[:3, 3]) @ cam[:3, :3]
    u, v = int(k.fx * c[0] / c[2] + k.cx), int(k.fy * c[1] / c[2] + k.cy)
    return slice(max(v - half_px, 0), v + half_px + 1), slice(max(u - half_px, 0), u + half_px + 1)


def consistent(mem: SpatialMemory, infos) -> None:
    """Voxel counts agree: static + every entity's voxels = all voxels, ids are known."""
    ids = mem.entity_ids
    assert int((ids == 0).sum()) + sum(i.n_voxels for i in infos) == len(mem)
    assert set(torch.unique(ids).tolist()) <= {0} | {i.id for i in infos}


@pytest.fixture()
def sim(tmp_path):
    cfg = SpatiaConfig().with_overrides({
        "camera.width": 96, "camera.height": 72, "memory.voxel_size": 0.03, "render.compile": False,
        "sim.rate_hz": 10.0, "sim.map_dir": str(tmp_path),
    })
    return WorldSimulator(cfg)


def test_entity_moves_and_deletes_without_ghost_in_the_builtin_room(sim):
    mem, k = sim.world.memory, sim.world.intrinsics
    cam = sim.base.camera_pose()
    render = lambda: render_memory(mem, k, cam, compile=False).numpy()["rgb"][0]  # noqa: E731
    before, n_before = render(), len(mem)
    assert not magenta(before).any()  # the room has no magenta: what shows it is the box
    pts, cols = box_points()
    a, b = at(cam, -0.45), at(cam, 0.45)
    win_a, win_b = window(k, cam, a[:3, 3]), window(k, cam, b[:3, 3])

    info = sim.spawn_entity("crate", points=pts, colors=cols, pose=a)
    assert info.id >= 1 and info.n_voxels > 100 and info.source == "points"
    assert np.all(info.lo <= a[:3, 3]) and np.all(info.hi >= a[:3, 3])
    np.testing.assert_allclose(info.hi - info.lo, BOX, atol=0.04)
    consistent(mem, sim.entities())
    img = render()
    assert magenta(img[win_a]).mean() > 0.9 and not magenta(img[win_b]).any()
    for _ in range(3):  # frames fuse the view (which shows the box) back into the memory
        frame = sim.step(camera_pose=cam)
        assert magenta(frame.rgb[win_a]).mean() > 0.9
    assert sim.entity("crate").n_voxels == info.n_voxels  # fusion neither absorbs nor grows it
    consistent(mem, sim.entities())

    moved = sim.set_entity_pose("crate", b)
    np.testing.assert_allclose(moved.pose, b)
    assert moved.n_voxels == info.n_voxels  # the same source points at the same orientation
    np.testing.assert_allclose((moved.lo + moved.hi) / 2 - (info.lo + info.hi) / 2, b[:3, 3] - a[:3, 3], atol=0.04)
    img = render()
    assert magenta(img[win_b]).mean() > 0.9  # the new place shows it
    assert not magenta(img[win_a]).any()  # no ghost
    diff = np.abs(img[win_a].astype(int) - before[win_a].astype(int)).max(-1)
    assert (diff <= 2).mean() > 0.95  # the old place shows the room as it was
    for _ in range(3):  # and stays that way while frames update the memory
        frame = sim.step(camera_pose=cam)
        assert not magenta(frame.rgb[win_a]).any() and magenta(frame.rgb[win_b]).mean() > 0.9
    consistent(mem, sim.entities())

    sim.delete_entity("crate")
    img = render()
    assert not magenta(img).any()
    assert sim.entities() == [] and int((mem.entity_ids != 0).sum()) == 0
    assert len(mem) == n_before  # everything it covered came back, nothing of it stayed
    diff = np.abs(img.astype(int) - before.astype(int)).max(-1)
    assert (diff <= 2).mean() > 0.98
    with pytest.raises(EntityError) as err:
        sim.entity("crate")
    assert err.value.reason == "unknown"


def test_errors_say_why(sim):
    pts, cols = box_points(0.1)
    sim.spawn_entity("a/b-1_c", points=pts, colors=cols)
    cases = [
        (lambda: sim.spawn_entity("a/b-1_c", points=pts), "exists"),
        (lambda: sim.spawn_entity("", points=pts), "bad_name"),
        (lambda: sim.spawn_entity("has space", points=pts), "bad_name"),
        (lambda: sim.spawn_entity("x" * 65, points=pts), "bad_name"),
        (lambda: sim.spawn_entity("n", points=pts, pose=np.full((4, 4), np.nan)), "bad_pose"),
        (lambda: sim.spawn_entity("n", points=pts, pose=np.diag([2.0, 1, 1, 1])), "bad_pose"),
        (lambda: sim.spawn_entity("n", points=pts, scale=0.0), "bad_pose"),
        (lambda: sim.spawn_entity("n", points=pts, pose=at(np.eye(4), 1e6)), "bad_pose"),
        (lambda: sim.spawn_entity("n", points=np.zeros((0, 3))), "empty"),
        (lambda: sim.spawn_entity("n"), "empty"),
        (lambda: sim.delete_entity("nope"), "unknown"),
        (lambda: sim.set_entity_pose("nope", np.eye(4)), "unknown"),
        (lambda: sim.set_entity_pose("a/b-1_c", np.full((4, 4), np.inf)), "bad_pose"),
        (lambda: sim.set_entity_pose("a/b-1_c", at(np.eye(4), 1e6)), "bad_pose"),
    ]
    mem = sim.world.memory
    state = (len(mem), mem.keys.clone(), mem.xyz.clone())
    for call, reason in cases:
        with pytest.raises(EntityError) as err:
            call()
        assert err.value.reason == reason and reason in str(err.value)
        assert isinstance(err.value, InputError)
    with pytest.raises(InputError):  # malformed points are plain input errors
        sim.spawn_entity("n", points=np.full((3, 3), np.nan))
    with pytest.raises(InputError):
        sim.spawn_entity("n", points=pts, colors=cols[:5])
    # nothing changed by any refused call
    assert len(mem) == state[0] and torch.equal(mem.keys, state[1]) and torch.equal(mem.xyz, state[2])
    assert [e.name for e in sim.entities()] == ["a/b-1_c"]


def test_spawn_from_ply_and_save_load_round_trip(sim, tmp_path):
    pts, cols = box_points(0.2)
    src = SpatialMemory(voxel_size=0.005)
    src.insert_points(pts, cols)
    save_ply(src, tmp_path / "crate.ply")
    cam = sim.base.camera_pose()
    one = sim.spawn_entity("crate", ply=tmp_path / "crate.ply", pose=at(cam, -0.4), scale=1.5)
    assert one.source == str(tmp_path / "crate.ply") and one.scale == 1.5
    np.testing.assert_allclose(one.hi - one.lo, 0.3, atol=0.04)
    two = sim.spawn_entity("ball", points=pts * 0.5, colors=cols // 2, pose=at(cam, 0.4))
    sim.set_entity_pose("ball", at(cam, 0.3))
    path = sim.save_map("with_entities.ply")

    mem = sim.world.memory
    loaded = SpatialMemory(voxel_size=mem.voxel_size)
    load_ply(path, loaded)
    order_a, order_b = torch.argsort(mem.keys), torch.argsort(loaded.keys)
    assert torch.equal(mem.keys[order_a], loaded.keys[order_b])
    assert torch.equal(mem.entity_ids[order_a], loaded.entity_ids[order_b])
    got = {e.name: e for e in entities.entities(loaded)}
    for e in sim.entities():
        g = got[e.name]
        assert (g.id, g.scale, g.source, g.n_voxels) == (e.id, e.scale, e.source, e.n_voxels)
        np.testing.assert_array_equal(g.pose, e.pose)
        np.testing.assert_allclose(g.lo, e.lo, atol=1e-6)
    # moves and deletes after loading do what they do in the original memory, render for render
    k = sim.world.intrinsics
    for m in (mem, loaded):
        entities.set_entity_pose(m, "crate", at(cam, 0.0, 1.5))
        entities.delete_entity(m, "ball")
    ra = render_memory(mem, k, cam, compile=False).numpy()["rgb"][0]
    rb = render_memory(loaded, k, cam, compile=False).numpy()["rgb"][0]
    assert (np.abs(ra.astype(int) - rb.astype(int)).max(-1) <= 1).mean() > 0.99
    assert len(mem) == len(loaded)
    assert two.id != one.id
    # a new entity after loading gets a fresh id
    assert entities.spawn_entity(loaded, "new", points=pts).id > max(one.id, two.id)


def test_failed_load_leaves_memory_and_entities_untouched(sim, tmp_path):
    pts, cols = box_points(0.1)
    sim.spawn_entity("keep", points=pts, colors=cols, pose=at(sim.base.camera_pose(), 0.0))
    path = sim.save_map("good.ply")
    raw = path.read_bytes()
    bad_files = {
        "bad_json.ply": raw.replace(b'comment spatia_entity {"name"', b'comment spatia_entity {"nam', 1),
        "bad_pose.ply": raw.replace(b'"pose":[1.0', b'"pose":[2.0', 1),
        "truncated.ply": raw[:-40],
        "stray_id.ply": raw.replace(b'"id":1,', b'"id":7,', 1),
    }
    mem = sim.world.memory
    keys, ids = mem.keys.clone(), mem.entity_ids.clone()
    for name, data in bad_files.items():
        assert data != raw, name
        (tmp_path / name).write_bytes(data)
        with pytest.raises(FileFormatError):
            sim.load_map(name)
        assert torch.equal(mem.keys, keys) and torch.equal(mem.entity_ids, ids), name
        assert [e.name for e in sim.entities()] == ["keep"], name


def test_old_maps_without_entity_ids_load_as_static(tmp_path):
    room = make_room(0, spacing=0.05)
    rows = np.empty(len(room.points), [("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"),
                                       ("blue", "u1"), ("count", "<i4")])
    rows["x"], rows["y"], rows["z"] = room.points.astype(np.float32).T
    rows["red"], rows["green"], rows["blue"] = room.colors.T
    rows["count"] = 3
    header = ("ply\nformat binary_little_endian 1.0\nelement vertex %d\nproperty float x\nproperty float y\n"
              "property float z\nproperty uchar red\nproperty uchar green\nproperty uchar blue\nproperty int count\n"
              "end_header\n" % len(rows)).encode()
    (tmp_path / "old.ply").write_bytes(header + rows.tobytes())
    mem = load_ply(tmp_path / "old.ply", SpatialMemory(voxel_size=0.05))
    assert len(mem) > 1000 and int(mem.entity_ids.abs().sum()) == 0 and entities.entities(mem) == []


def test_fusion_never_changes_entity_voxels_and_eviction_keeps_them():
    mem = SpatialMemory(voxel_size=0.02, max_voxels=3000, evict_fraction=0.5)
    pts, cols = box_points(0.2)
    info = entities.spawn_entity(mem, "box", points=pts, colors=cols)
    mine = mem.entity_ids == info.id
    xyz, rgb = mem.xyz[mine].clone(), mem.rgb[mine].clone()
    # observations right on the box's voxels, in another colour: the entity voxels stay as they are
    mem.insert_points(pts + 0.001, np.zeros_like(cols))
    mine = mem.entity_ids == info.id
    assert torch.equal(mem.xyz[mine], xyz) and torch.equal(mem.rgb[mine], rgb)
    assert int((mem.entity_ids == 0).sum()) == 0  # nothing fused there became static
    # many static observations elsewhere: the size bound evicts static voxels, never the entity's
    rng = np.random.default_rng(0)
    for _ in range(5):
        far = rng.uniform(1, 3, (2000, 3))
        mem.insert_points(far, rng.integers(0, 255, (2000, 3), dtype=np.uint8))
    assert len(mem) <= 3000
    assert entities.entity(mem, "box").n_voxels == info.n_voxels
    consistent(mem, entities.entities(mem))
    entities.delete_entity(mem, "box")
    assert int((mem.entity_ids != 0).sum()) == 0


def test_covered_static_voxels_come_back_and_undo_keeps_entities():
    mem = SpatialMemory(voxel_size=0.02)
    g = np.stack(np.meshgrid(np.arange(-1, 1, 0.02) + 0.01, np.arange(-1, 1, 0.02) + 0.01, [0.005]), -1).reshape(-1, 3)
    mem.insert_points(g, np.full((len(g), 3), 90, np.uint8))  # a floor
    floor = (mem.keys.clone(), mem.xyz.clone(), mem.rgb.clone())
    pts, cols = box_points(0.2)
    ed = MemoryEditor(mem)
    assert ed.remove_box([-0.05, -0.05, -1], [0.05, 0.05, 1]) == 36  # an edit under the box, undone later
    info = entities.spawn_entity(mem, "box", points=pts + [0, 0, 0.1], colors=cols)  # its bottom sits on the floor
    assert int((mem.entity_ids == 0).sum()) < len(floor[0]) - 36 - 50  # it covers floor voxels
    ed.undo()  # the undone edit does not touch the entity (what it brings back under it stays covered)
    assert entities.entity(mem, "box").n_voxels == info.n_voxels
    entities.set_entity_pose(mem, "box", at(np.eye(4), 0.5, 0.1))
    consistent(mem, entities.entities(mem))
    entities.set_entity_pose(mem, "box", at(np.eye(4), -0.5, 0.1))
    entities.delete_entity(mem, "box")
    order = torch.argsort(mem.keys)
    o0 = torch.argsort(floor[0])
    assert torch.equal(mem.keys[order], floor[0][o0])  # the floor is whole again, bit for bit
    assert torch.equal(mem.xyz[order], floor[1][o0]) and torch.equal(mem.rgb[order], floor[2][o0])


def test_overlapping_entities():
    mem = SpatialMemory(voxel_size=0.02)
    pts, cols = box_points(0.2)
    a = entities.spawn_entity(mem, "a", points=pts, colors=cols)
    b = entities.spawn_entity(mem, "b", points=pts, colors=cols // 2, pose=at(np.eye(4), 0.1, 0.0))  # takes a's voxels it lands on
    consistent(mem, entities.entities(mem))
    assert entities.entity(mem, "a").n_voxels < a.n_voxels
    entities.delete_entity(mem, "b")  # they return to a, which has not moved
    assert entities.entity(mem, "a").n_voxels == a.n_voxels and len(mem) == a.n_voxels
    b = entities.spawn_entity(mem, "b", points=pts, colors=cols // 2, pose=at(np.eye(4), 0.1, 0.0))
    entities.set_entity_pose(mem, "a", at(np.eye(4), 2.0, 0.0))  # a moved away meanwhile
    entities.delete_entity(mem, "b")  # so nothing of a comes back at its old place
    assert len(mem) == a.n_voxels == entities.entity(mem, "a").n_voxels
    consistent(mem, entities.entities(mem))


def test_floor_under_overlapping_entities_comes_back_whatever_leaves_first():
    g = np.stack(np.meshgrid(np.arange(-1, 1, 0.02) + 0.01, np.arange(-1, 1, 0.02) + 0.01, [0.005]), -1).reshape(-1, 3)
    pts, cols = box_points(0.2)
    for first, second in (("a", "b"), ("b", "a")):
        mem = SpatialMemory(voxel_size=0.02)
        mem.insert_points(g, np.full((len(g), 3), 90, np.uint8))
        floor = mem.keys.sort().values.clone()
        entities.spawn_entity(mem, "a", points=pts + [0, 0, 0.1], colors=cols)
        entities.spawn_entity(mem, "b", points=pts + [0.1, 0, 0.1], colors=cols // 2)  # on the floor and on a
        consistent(mem, entities.entities(mem))
        entities.delete_entity(mem, first)
        consistent(mem, entities.entities(mem))
        entities.delete_entity(mem, second)
        assert torch.equal(mem.keys.sort().values, floor), first  # no hole, nothing left over
        assert int((mem.entity_ids != 0).sum()) == 0
