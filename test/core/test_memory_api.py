"""The memory's public operations (write, remove, recolour, capture, restore, entity ids) and
that the memory owns its internals: edits use only the public API, the memory does not import
the renderer, BlockIndex lives next to the memory."""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from spatia_core.errors import InputError
from spatia_core.memory import SpatialMemory, entities
from spatia_core.worlds.procedural import make_room

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def room():
    scene = make_room(0, spacing=0.04)
    mem = SpatialMemory(voxel_size=0.04)
    mem.insert_points(scene.points, scene.colors)
    return mem


def state(mem):
    return [t.clone() for t in (mem.keys, mem.xyz, mem.rgb, mem.counts, mem.last_seen, mem.entity_ids)]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_capture_region_and_restore_in_place_is_bit_exact(room):
    before = state(room)
    lo, hi = room.xyz.min(0).values, room.xyz.min(0).values + 1.0  # a corner: floor and walls
    snap = room.capture_region(lo, hi)
    inside = ((room.xyz >= lo) & (room.xyz <= hi)).all(1)
    assert len(snap) == int(inside.sum()) > 100
    assert room.remove(inside) == len(snap) and len(room) == len(before[0]) - len(snap)
    assert room.restore(snap, in_place=True) == len(snap)
    assert same(state(room), before)  # same voxels, same order


def test_write_voxels_replaces_and_reports_what_it_replaced(room):
    n = len(room)
    target = room.xyz[:10].clone()
    res = room.write_voxels(target + 0.001, np.tile(np.uint8([255, 0, 0]), (10, 1)), counts=7, entity_id=0)
    assert len(room) == n and res.created.numel() == 0 and len(res.previous) == res.keys.numel() == 10
    ids = room.find(res.keys)
    assert torch.equal(ids, res.ids) and (room.counts[ids] == 7).all()
    assert torch.allclose(room.rgb[ids], torch.tensor([1.0, 0.0, 0.0]))
    room.restore(res.previous)  # back as it was
    back = room.find(res.previous.keys)
    assert torch.equal(room.rgb[back], res.previous.rgb) and torch.equal(room.counts[back], res.previous.count)
    new = room.write_voxels(np.full((4, 3), 50.0), np.zeros((4, 3), np.uint8), entity_id=0)
    assert new.created.numel() == 1 and len(room) == n + 1
    with pytest.raises(InputError):
        room.write_voxels(np.full((2, 3), np.nan), np.zeros((2, 3)))
    with pytest.raises(InputError):
        room.write_voxels(np.full((2, 3), 1e9), np.zeros((2, 3)))
    with pytest.raises(InputError):
        room.write_voxels(np.zeros((2, 3)), np.zeros((2, 3)), counts=0)
    assert len(room) == n + 1


def test_remove_and_recolor_take_masks_of_the_memory_size(room):
    n = len(room)
    with pytest.raises(InputError):
        room.remove(torch.ones(n - 1, dtype=torch.bool))
    with pytest.raises(InputError):
        room.recolor(torch.ones(n + 1, dtype=torch.bool), [0, 0, 1])
    sel = torch.zeros(n, dtype=torch.bool)
    sel[:5] = True
    rev = room.revision
    assert room.recolor(sel, [0.0, 0.0, 1.0]) == 5 and room.revision > rev
    assert torch.equal(room.rgb[:5], torch.tensor([[0.0, 0.0, 1.0]] * 5))


def test_entity_ids_follow_voxels_through_compaction(room):
    pts = np.random.default_rng(1).uniform(-0.1, 0.1, (500, 3)) + room.xyz.mean(0).numpy()
    info = entities.spawn_entity(room, "thing", points=pts)
    assert int((room.entity_ids == info.id).sum()) == info.n_voxels
    # removing static voxels compacts the arrays: the ids move with their voxels
    static = (room.entity_ids == 0).nonzero(as_tuple=True)[0][:1000]
    drop = torch.zeros(len(room), dtype=torch.bool)
    drop[static] = True
    keys = room.keys[room.entity_ids == info.id].sort().values
    room.remove(drop)
    assert torch.equal(room.keys[room.entity_ids == info.id].sort().values, keys)
    snap = room.capture(torch.arange(len(room)))
    assert (snap.entity == info.id).sum() == info.n_voxels
    # a snapshot of an entity at one placement does not bring it back after it moved
    entities.set_entity_pose(room, "thing", np.diag([1.0, 1, 1, 1]))
    entities.delete_entity(room, "thing")
    room.restore(snap.subset(snap.entity == info.id))
    assert int((room.entity_ids != 0).sum()) == 0


def test_edits_use_only_public_memory_operations():
    src = (ROOT / "spatia_core/memory/edit.py").read_text()
    assert not re.findall(r"\b(?:mem|memory)\._[a-z]", src)
    for name in ("entities.py", "ply.py", "map_entities.py", "edit_cli.py"):
        assert not re.findall(r"\b(?:mem|memory)\._[a-z]", (ROOT / "spatia_core/memory" / name).read_text()), name


def test_memory_does_not_import_the_renderer():
    code = ("import sys; import spatia_core.memory; import spatia_core.memory.edit; "
            "print('spatia_core.render' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"
    from spatia_core import render
    from spatia_core.memory import blocks

    assert render.BlockIndex is blocks.BlockIndex  # re-exported for existing imports


def test_remove_ids_equals_keep_only_as_a_set_and_keeps_the_hash_right(room):
    """remove_ids (O(removed): the last voxels move into the holes) leaves the same voxels as
    keep_only, each found by its key at its new position, and the remap says where each went."""
    other = SpatialMemory(voxel_size=0.04)
    other.insert_points(room.xyz, room.rgb)
    before = state(room)
    gone = torch.as_tensor(np.random.default_rng(5).choice(len(room), 700, replace=False))
    remap = room.remove_ids(gone)
    keep = torch.ones(len(other), dtype=torch.bool)
    keep[gone] = False
    other.keep_only(keep)
    assert len(room) == len(other) == len(before[0]) - 700
    order = torch.argsort(room.keys)
    assert torch.equal(room.keys[order], torch.sort(other.keys).values)
    assert torch.equal(room.find(room.keys), torch.arange(len(room)))
    assert (room.find(before[0][gone]) == -1).all()
    alive = remap >= 0
    assert int((~alive).sum()) == 700 and bool((~alive[gone]).all())
    for now, was in zip(state(room), before):
        assert torch.equal(now[remap[alive]], was[alive])
    # removed keys come back as new voxels, at the end
    res = room.insert_points(before[1][gone], before[2][gone])
    assert res.voxels_new == 700 and len(room) == len(before[0])
    with pytest.raises(InputError):
        room.remove_ids(torch.tensor([len(room)]))
