"""3D-aware edits: each edit changes the rendered view where expected; undo restores the memory
bit-exactly; the `spatia edit` command round-trips files and reports bad input in one line."""

import numpy as np
import pytest
import torch

from spatia_core import InputError, Intrinsics, SpatialMemory, look_at
from spatia_core.cli import main
from spatia_core.memory import MemoryEditor, load_ply, object_pose, save_ply
from spatia_core.render import render_memory

K = Intrinsics.from_fov(40, 64, 48)
POSE = look_at([0, 0, 1.0], [1, 0, 1.0])  # looks along +x at the walls' centres
GREY, BLUE, GREEN = [200, 200, 200], [0, 0, 255], [0, 255, 0]


def _two_walls() -> SpatialMemory:
    """A grey wall at x = 2.01 in front of a blue wall at x = 3.01 (2 m x 2 m, 2 cm voxels)."""
    g = np.arange(-1, 1, 0.02) + 0.01
    yy, zz = np.meshgrid(g, g + 1, indexing="ij")
    near = np.stack([np.full(yy.size, 2.01), yy.ravel(), zz.ravel()], 1)
    mem = SpatialMemory(voxel_size=0.02)
    mem.insert_points(np.concatenate([near, near + [1.0, 0, 0]]),
                      np.concatenate([np.tile(np.uint8(GREY), (len(near), 1)), np.tile(np.uint8(BLUE), (len(near), 1))]))
    mem.insert_points(near[:50], np.tile(np.uint8([100, 100, 100]), (50, 1)))  # varied counts / last-seen
    return mem


def _cube(side=0.1, step=0.01):
    g = np.arange(-side / 2, side / 2 + 1e-9, step)
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    return pts, np.tile(np.uint8(GREEN), (len(pts), 1))


def _state(mem):
    """Every per-voxel array, in array order."""
    return {name: t.clone() for name, t in (("keys", mem.keys), ("xyz", mem.xyz), ("rgb", mem.rgb), ("counts", mem.counts),
                                           ("last_seen", mem._last_seen[: len(mem)]))} | {"frames": mem.frames_fused}


def _assert_same(mem, state, ordered=True):
    now = _state(mem)
    assert now["frames"] == state["frames"]
    order_now = torch.arange(len(mem)) if ordered else torch.argsort(now["keys"])
    order_then = torch.arange(len(state["keys"])) if ordered else torch.argsort(state["keys"])
    for name in ("keys", "xyz", "rgb", "counts", "last_seen"):
        assert torch.equal(now[name][order_now], state[name][order_then]), name


def _render(mem):
    r = render_memory(mem, K, POSE, compile=False)
    return r.numpy() | {"index": r.index.numpy()}


def _assert_same_render(a, b):
    for name in ("rgb", "depth", "mask", "index"):
        assert np.array_equal(a[name], b[name]), name


def _project(points):
    cam = (np.asarray(points) - POSE[:3, 3]) @ POSE[:3, :3]
    return np.stack([K.fx * cam[:, 0] / cam[:, 2] + K.cx, K.fy * cam[:, 1] / cam[:, 2] + K.cy], 1)


def _changed(a, b):
    return (np.abs(a["rgb"].astype(int) - b["rgb"].astype(int)).max(-1) > 0) | (a["mask"] != b["mask"])


def test_remove_box_changes_only_its_projection_and_undo_is_bit_exact():
    mem = _two_walls()
    editor = MemoryEditor(mem)
    state, before = _state(mem), _render(mem)
    lo, hi = [1.9, -0.3, 0.7], [2.1, 0.3, 1.3]
    rev = mem.revision
    assert editor.remove_box(lo, hi) == 900 and mem.revision > rev
    after = _render(mem)
    assert after["rgb"][0, 24, 32].tolist() == BLUE, "the far wall shows through the hole"
    corners = _project([[2.0, y, z] for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
    (u0, v0), (u1, v1) = corners.min(0), corners.max(0)
    changed = _changed(before, after)[0]
    vs, us = changed.nonzero()
    assert changed.sum() > 0.8 * (u1 - u0) * (v1 - v0)
    assert us.min() >= u0 - 2 and us.max() <= u1 + 2 and vs.min() >= v0 - 2 and vs.max() <= v1 + 2, "nothing else changes"
    assert editor.undo().operation == "remove_box"
    _assert_same(mem, state)
    _assert_same_render(_render(mem), before)
    with pytest.raises(InputError, match="nothing to undo"):
        editor.undo()


def test_remove_mask_visible_surface_keeps_what_is_behind():
    mem = _two_walls()
    editor = MemoryEditor(mem)
    state, before = _state(mem), _render(mem)
    mask = np.zeros((48, 64), bool)
    mask[16:32, 20:44] = True
    n = editor.remove_mask(mask, POSE, K)
    assert n > 0 and int((mem.xyz[:, 0] > 2.5).sum()) == 10000, "the far wall is untouched"
    after = _render(mem)
    inner = np.zeros_like(mask)
    inner[18:30, 22:42] = True
    assert (after["rgb"][0][inner] == BLUE).all(), "the masked part of the near wall is gone"
    assert np.allclose(after["depth"][0][inner], 3.01, atol=0.02)
    outer = ~np.pad(np.ones((20, 28), bool), ((14, 14), (18, 18)))  # the mask grown by 2 px
    assert not _changed(before, after)[0][outer].any(), "nothing outside the mask changes"
    editor.undo()
    _assert_same(mem, state)
    _assert_same_render(_render(mem), before)

    # along the rays: both walls go
    editor.remove_mask(mask, POSE, K, depth_range=(0.5, 10.0))
    assert int((mem.xyz[:, 0] > 2.5).sum()) < 10000
    assert not _render(mem)["mask"][0][inner].any()
    editor.undo()
    _assert_same(mem, state)


def test_add_object_appears_at_its_pose_and_scale(tmp_path):
    mem = _two_walls()
    editor = MemoryEditor(mem)
    state, before = _state(mem), _render(mem)
    pts, rgb = _cube()
    obj = SpatialMemory(voxel_size=0.01)
    obj.insert_points(pts + 0.005, rgb)  # voxel centres
    save_ply(obj, tmp_path / "cube.ply")
    pose = object_pose([1.5, 0.1, 1.05], [0, 0, np.pi / 4])
    n = editor.add_ply(tmp_path / "cube.ply", pose, scale=2.0)
    assert n > 0
    after = _render(mem)
    green = (after["rgb"][0] == GREEN).all(-1)
    vs, us = green.nonzero()
    corners = np.array([[x, y, z] for x in (-0.1, 0.1) for y in (-0.1, 0.1) for z in (-0.1, 0.1)]) + 0.01
    world = corners @ pose[:3, :3].T + pose[:3, 3]
    (u0, v0), (u1, v1) = _project(world).min(0), _project(world).max(0)
    assert abs(us.min() - u0) <= 2 and abs(us.max() - u1) <= 2 and abs(vs.min() - v0) <= 2 and abs(vs.max() - v1) <= 2
    assert after["depth"][0][green].min() == pytest.approx(1.5 - 0.1 * np.sqrt(2), abs=0.03), "the rotated edge is nearest"
    cvs, cus = _changed(before, after)[0].nonzero()
    assert cus.min() >= u0 - 2 and cus.max() <= u1 + 2 and cvs.min() >= v0 - 2 and cvs.max() <= v1 + 2, "nothing else changes"
    editor.undo()
    _assert_same(mem, state)
    _assert_same_render(_render(mem), before)


def test_recolor_box_and_mask_then_undo_in_order():
    mem = _two_walls()
    editor = MemoryEditor(mem)
    s0, r0 = _state(mem), _render(mem)
    assert editor.recolor_box([1.9, -1, 0], [2.1, 1, 2], [255, 0, 0]) == 10000
    s1, r1 = _state(mem), _render(mem)
    assert r1["rgb"][0, 24, 32].tolist() == [255, 0, 0]
    mask = np.zeros((48, 64), bool)
    mask[:, :32] = True
    editor.recolor_mask(mask, POSE, K, [0, 255, 0])
    r2 = _render(mem)
    assert r2["rgb"][0, 24, 10].tolist() == GREEN and r2["rgb"][0, 24, 50].tolist() == [255, 0, 0]
    pts, rgb = _cube()
    editor.add_object(pts, rgb, object_pose([2.0, 0, 1.0]))  # overlaps the near wall: replaces voxels
    editor.add_points(pts + [1.0, 0.5, 0.5], rgb)
    assert editor.history == ["recolor_box", "recolor_mask", "add_object", "add_points"]
    assert editor.undo().operation == "add_points" and editor.undo().operation == "add_object"
    assert editor.undo().operation == "recolor_mask"
    _assert_same(mem, s1)
    _assert_same_render(_render(mem), r1)
    editor.undo()
    _assert_same(mem, s0)
    _assert_same_render(_render(mem), r0)


def test_undo_after_fusion_journal_bound_and_reload(tmp_path):
    mem = _two_walls()
    editor = MemoryEditor(mem, max_undo=2)
    s0 = _state(mem)
    editor.remove_box([1.9, -0.3, 0.7], [2.1, 0.3, 1.3])
    # fusion after the edit: new points elsewhere and some inside the removed region
    extra = np.stack([np.full(20, 1.0), np.linspace(-0.5, 0.5, 20), np.full(20, 0.5)], 1)
    mem.insert_points(np.concatenate([extra, [[2.01, 0.01, 1.01]]]), np.full((21, 3), 9, np.uint8))
    editor.undo()
    keys = set(mem.keys.tolist())
    assert set(s0["keys"].tolist()) <= keys and len(keys) == len(s0["keys"]) + 20, "removed voxels back, fused ones kept"
    restored = mem._index.find(s0["keys"])
    assert torch.equal(mem.rgb[restored], s0["rgb"]) and torch.equal(mem.counts[restored], s0["counts"])

    for z in (0.1, 0.2, 0.3):
        editor.recolor_box([1.9, -1, z], [2.1, 1, z + 0.05], [1, 2, 3])
    assert len(editor.history) == 2, "bounded to max_undo entries"
    editor.undo(), editor.undo()
    with pytest.raises(InputError):
        editor.undo()
    editor.remove_box([1.9, -1, 0], [2.1, 1, 2])
    save_ply(mem, tmp_path / "m.ply")
    load_ply(tmp_path / "m.ply", mem)
    assert editor.history == [], "reloading the memory invalidates the journal"


def test_bad_edits_raise_and_change_nothing():
    mem = _two_walls()
    editor = MemoryEditor(mem)
    state = _state(mem)
    with pytest.raises(InputError):
        editor.remove_mask(np.zeros((48, 64), bool), POSE, K)  # empty mask
    with pytest.raises(InputError):
        editor.remove_mask(np.ones((10, 10), bool), POSE, K)  # wrong size
    with pytest.raises(InputError):
        editor.remove_mask(np.ones((48, 64), bool), POSE, K, depth_range=(2, 1))
    with pytest.raises(InputError):
        editor.add_object(*_cube(), scale=-1)
    with pytest.raises(InputError):
        editor.add_object(*_cube(), pose=np.diag([2.0, 1, 1, 1]))
    with pytest.raises(InputError):
        editor.recolor_box([0, 0, 0], [1, 1, 1], [300, 0, 0])
    assert editor.history == []
    _assert_same(mem, state)


# -- the `spatia edit` command ------------------------------------------------------------------
def _saved(tmp_path):
    path = tmp_path / "walls.ply"
    save_ply(_two_walls(), path)
    return path


def _view(path):
    return _render(load_ply(path, SpatialMemory(voxel_size=0.02)))


def test_cli_edits_keep_the_input_and_undo_walks_back(tmp_path, capsys):
    src = _saved(tmp_path)
    original = src.read_bytes()
    out = tmp_path / "edited.ply"
    vs = ["--voxel-size", "0.02"]
    assert main(["edit", str(src), "--out", str(out), "--remove-box", "-5,-0.3,0.7,2.1,0.3,1.3",  # a negative first value is a value
                 "--recolor-box", "2.9,-1,0,3.1,1,2:255,0,0", *vs]) == 0
    assert src.read_bytes() == original, "the input map is untouched"
    view = _view(out)
    assert view["rgb"][0, 24, 32].tolist() == [255, 0, 0] and view["rgb"][0, 5, 5].tolist() == GREY
    # a second edit in place: a mask removal and an object
    mask = np.zeros((48, 64), np.uint8)
    mask[0:10, 0:10] = 255
    import cv2

    cv2.imwrite(str(tmp_path / "mask.png"), mask)
    pose = ",".join(str(v) for v in POSE.ravel())
    pts, rgb = _cube()
    obj = SpatialMemory(voxel_size=0.01)
    obj.insert_points(pts, rgb)
    save_ply(obj, tmp_path / "cube.ply")
    first = out.read_bytes()
    assert main(["edit", str(out), "--out", str(out), "--remove-mask", str(tmp_path / "mask.png"), "--pose", pose,
                 "--intrinsics", f"{K.fx},{K.fy},{K.cx},{K.cy}", "--add", str(tmp_path / "cube.ply"),
                 "--at", "1.5,0,1.0,0,0,0.3", "--scale", "2", *vs]) == 0
    view2 = _view(out)
    assert view2["rgb"][0, 5, 5].tolist() != GREY and view2["rgb"][0, 24, 32].tolist() == GREEN
    assert main(["edit", str(out), "--undo"]) == 0
    assert out.read_bytes() == first
    assert main(["edit", str(out), "--undo"]) == 0
    assert out.read_bytes() == original
    capsys.readouterr()
    assert main(["edit", str(out), "--undo"]) == 2
    assert capsys.readouterr().err.startswith("spatia: error: nothing to undo")


@pytest.mark.parametrize("args", [
    ["--remove-box", "1,2,3"],
    ["--remove-box", "1,1,1,0,0,0"],
    ["--recolor-box", "0,0,0,1,1,1:300,0,0"],
    ["--remove-mask", "missing.png", "--pose", "1,0,0", "--intrinsics", "1,1,1,1"],
    ["--add", "missing.ply"],
    [],
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args):
    src = _saved(tmp_path)
    original = src.read_bytes()
    assert main(["edit", str(src), "--out", str(tmp_path / "o.ply"), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("spatia: error: ") and err.count("\n") == 1, err
    assert src.read_bytes() == original and not (tmp_path / "o.ply").exists()
