"""Reference retrieval (Algorithm 1): overlapping frames are picked, others rejected."""

import numpy as np
import pytest

from spatia_core import Intrinsics, SpatialMemory, look_at
from spatia_core.render import render_memory
from spatia_core.retrieval import FrameBank, retrieve_references


def _box_room():
    """Four walls of a 6 x 6 m room (points every 5 cm), each wall a different colour."""
    g = np.arange(-3, 3, 0.05) + 0.025
    a, h = np.meshgrid(g, np.arange(0, 3, 0.05) + 0.025, indexing="ij")
    a, h = a.ravel(), h.ravel()
    walls = [np.stack([np.full_like(a, 3.0), a, h], 1), np.stack([np.full_like(a, -3.0), a, h], 1),
             np.stack([a, np.full_like(a, 3.0), h], 1), np.stack([a, np.full_like(a, -3.0), h], 1)]
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    mem = SpatialMemory(voxel_size=0.05)
    mem.insert_points(np.concatenate(walls), np.concatenate([np.tile(np.uint8(c), (len(w), 1)) for w, c in zip(walls, colours)]))
    return mem


def _view(yaw_deg, x=0.0):
    yaw = np.deg2rad(yaw_deg)
    return look_at([x, 0.0, 1.5], [x + np.cos(yaw), np.sin(yaw), 1.5])


def test_retrieval_picks_overlapping_frames_and_rejects_others():
    mem = _box_room()
    k = Intrinsics.from_fov(60, 80, 60)
    bank = FrameBank(voxel_size=0.25, pixel_stride=1)

    def voxels(pose):
        out = render_memory(mem, k, pose).numpy()
        return out, bank.view_voxels(out["depth"][0], k, pose)

    # past trajectory: looking at +x (yaw 0), then +y (90), then -y (-90); never at -x (180)
    past = []
    for yaw in (0, 10, 90, 100, -90):
        out, ids = voxels(_view(yaw))
        past.append(set(ids.tolist()))
        assert bank.add(out["rgb"][0], _view(yaw), k, ids) == len(past) - 1

    targets = [voxels(_view(yaw))[1] for yaw in (5, 5, 95, 180)]
    refs = retrieve_references(bank, targets, k=7, epsilon=0.2, stride=1)
    picked = {bank.frames[r.bank_index].frame_id for r in refs}
    assert picked & {0, 1}, "a frame looking the same way as target 0 must be retrieved"
    assert picked & {2, 3}, "a frame looking at +y must be retrieved for target 2"
    assert 4 not in picked, "the -y view does not overlap any target"
    assert all(r.score > 0.2 for r in refs)
    # Algorithm 1 by hand on Python sets: each target's best past frame by 3D IoU, kept if IoU > eps,
    # one reference per frame (the best-scoring target wins)
    expected = {}
    for t, ids in enumerate(targets):
        s = [len(set(ids.tolist()) & p) / len(set(ids.tolist()) | p) for p in past]
        f = int(np.argmax(s))
        if s[f] > 0.2 and (f not in expected or s[f] > expected[f][0]):
            expected[f] = (s[f], t)
    assert {r.frame_id: r.target_index for r in refs} == {f: t for f, (_, t) in expected.items()}
    assert [r.score for r in refs] == pytest.approx([expected[r.frame_id][0] for r in refs], abs=1e-6)
    # the -x target sees nothing any past frame saw: no reference for it
    assert not [r for r in refs if r.target_index == 3]
    # stride = K: only target 0 is scored
    refs_k = retrieve_references(bank, targets, k=7, epsilon=0.2)
    assert {r.target_index for r in refs_k} == {0}


def test_iou_values_and_exclusion():
    bank = FrameBank(voxel_size=1.0)
    bank._ids.insert(__import__("torch").arange(10))
    img = np.zeros((4, 4, 3), np.uint8)
    k = Intrinsics.from_fov(60, 4, 4)
    bank.add(img, np.eye(4), k, np.array([0, 1, 2, 3]))
    bank.add(img, np.eye(4), k, np.array([2, 3, 4, 5]))
    bank.add(img, np.eye(4), k, np.array([8, 9]))
    iou = bank.iou(np.array([0, 1, 2, 3]), np.array([3, 4]))
    np.testing.assert_allclose(iou, [[1.0, 2 / 6, 0.0], [1 / 5, 2 / 4, 0.0]], rtol=1e-6)
    refs = retrieve_references(bank, [np.array([0, 1, 2, 3])], k=3, epsilon=0.1, exclude_frame_ids={0})
    assert [r.frame_id for r in refs] == [1]
    assert retrieve_references(bank, [np.array([0, 1, 2, 3])], k=0) == []
