"""SpatialMemory: fusion, round trip through the renderer, eviction, PLY persistence, bad input."""

import os

import numpy as np
import pytest
import torch

from spatia_core import FileFormatError, InputError, Intrinsics, SpatialMemory, load_ply, look_at, save_ply
from spatia_core.render import render_memory


def _scene_frame(width=160, height=120):
    """A frame of known geometry: a slanted textured plane with a box in front of it."""
    k = Intrinsics.from_fov(60, width, height)
    pose = look_at([0.0, 0.0, 1.0], [2.0, 0.0, 1.0])
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    # plane at camera depth 2 + 0.004 * (u - cx): slanted wall
    depth = 2.0 + 0.004 * (u - k.cx)
    box = (abs(u - k.cx) < 20) & (abs(v - k.cy) < 15)
    depth[box] = 1.2
    x = (u - k.cx) * depth / k.fx
    y = (v - k.cy) * depth / k.fy
    rgb = np.stack([
        128 + 100 * np.sin(x * 25), 128 + 100 * np.cos(y * 19), 128 + 90 * np.sin((x + y) * 11)
    ], -1)
    rgb[box] = [220, 40, 40]
    return rgb.astype(np.uint8), depth.astype(np.float32), k, pose


def _psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / max(mse, 1e-12))


def test_round_trip_same_pose():
    rgb, depth, k, pose = _scene_frame()
    # voxel finer than a pixel's footprint (2 m * 1/138.6 px ~ 14 mm): every pixel keeps its own voxel
    mem = SpatialMemory(voxel_size=0.005)
    mem.insert_frame(rgb, depth, k, pose)
    out = render_memory(mem, k, pose).numpy()
    covered = out["mask"][0]
    psnr = _psnr(out["rgb"][0][covered], rgb[covered])
    depth_err = np.abs(out["depth"][0] - depth)[covered]
    print(f"round trip: PSNR {psnr:.2f} dB on {covered.mean():.3f} coverage, max depth error {depth_err.max() * 1000:.2f} mm")
    assert covered.mean() > 0.99
    assert psnr >= 35.0
    assert depth_err.max() < mem.voxel_size


def test_insert_is_incremental_and_averages():
    mem = SpatialMemory(voxel_size=0.1)
    mem.insert_points(np.array([[0.01, 0.01, 0.01], [0.05, 0.05, 0.05]]), np.array([[0, 0, 0], [255, 255, 255]], np.uint8))
    assert len(mem) == 1
    assert torch.allclose(mem.xyz[0], torch.tensor([0.03, 0.03, 0.03]))
    assert mem.counts.tolist() == [1]
    mem.insert_points(np.array([[0.03, 0.03, 0.03], [0.25, 0.0, 0.0]]), np.array([[255, 0, 0], [0, 255, 0]], np.uint8))
    assert len(mem) == 2
    assert mem.counts.tolist() == [2, 1]
    stats = mem.stats()
    assert stats.voxels == 2 and stats.frames_fused == 2 and stats.memory_bytes > 0
    assert stats.bounds_max[0] == pytest.approx(0.25)


def test_exclude_mask_keeps_pixels_out():
    rgb, depth, k, pose = _scene_frame()
    mem = SpatialMemory(voxel_size=0.02)
    mask = np.zeros(depth.shape, bool)
    mask[:, : k.width // 2] = True
    mem.insert_frame(rgb, depth, k, pose, exclude_mask=mask)
    out = render_memory(mem, k, pose).numpy()["mask"][0]
    assert out[:, k.width // 2 + 3 :].mean() > 0.95
    assert out[:, : k.width // 2 - 3].mean() < 0.05


def test_eviction_bounds_size_and_drops_oldest():
    mem = SpatialMemory(voxel_size=0.1, max_voxels=100, evict_fraction=0.5)
    old = np.stack([np.arange(80) * 0.1 + 0.05, np.zeros(80), np.zeros(80)], 1)
    mem.insert_points(old, np.zeros_like(old, dtype=np.uint8))
    new = old + [0, 10.0, 0]
    result = mem.insert_points(new, np.full_like(new, 255, dtype=np.uint8))
    assert len(mem) == 50 and result.voxels_evicted == 110
    assert (mem.xyz[:, 1] > 5).all(), "the most recently observed voxels must survive"
    # the hash still finds every survivor after compaction
    again = mem.insert_points(mem.xyz.numpy().copy(), np.zeros((50, 3), np.uint8))
    assert again.voxels_new == 0 and len(mem) == 50


def test_ply_round_trip_and_atomic_save(tmp_path):
    rgb, depth, k, pose = _scene_frame()
    mem = SpatialMemory(voxel_size=0.02)
    mem.insert_frame(rgb, depth, k, pose)
    mem.insert_frame(rgb, depth, k, pose)
    path = save_ply(mem, tmp_path / "map.ply")
    loaded = load_ply(path, SpatialMemory(voxel_size=0.02))
    assert len(loaded) == len(mem)
    a, b = torch.argsort(mem.keys), torch.argsort(loaded.keys)
    assert torch.equal(loaded.keys[b], mem.keys[a])
    assert torch.allclose(loaded.xyz[b], mem.xyz[a], atol=1e-6)
    assert loaded.counts[b].tolist() == mem.counts[a].tolist()
    assert [p.name for p in tmp_path.iterdir()] == ["map.ply"], "no temporary file may remain"


def test_failed_save_keeps_old_map(tmp_path, monkeypatch):
    mem = SpatialMemory(voxel_size=0.05)
    mem.insert_points(np.zeros((1, 3)), np.zeros((1, 3), np.uint8))
    path = save_ply(mem, tmp_path / "map.ply")
    before = path.read_bytes()
    mem.insert_points(np.ones((5, 3)) * np.arange(5)[:, None], np.zeros((5, 3), np.uint8))

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(FileFormatError, match="disk full"):
        save_ply(mem, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["map.ply"]


@pytest.mark.parametrize(
    "content", [b"", b"garbage that is not a ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nend_header\n1\n"]
)
def test_unreadable_ply_is_a_clear_error_and_keeps_memory(tmp_path, content):
    bad = tmp_path / "bad.ply"
    bad.write_bytes(content)
    mem = SpatialMemory(voxel_size=0.05)
    mem.insert_points(np.zeros((1, 3)), np.zeros((1, 3), np.uint8))
    with pytest.raises(FileFormatError):
        load_ply(bad, mem)
    assert len(mem) == 1
    with pytest.raises(FileFormatError, match="no such file"):
        load_ply(tmp_path / "missing.ply", mem)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda r, d, p: (r, np.where(d > 1.5, np.nan, d), p), "NaN"),
        (lambda r, d, p: (r, -d, p), "negative"),
        (lambda r, d, p: (r, d[:, :-1], p), "differ"),
        (lambda r, d, p: (r[..., :2], d, p), r"\(H, W, 3\)"),
        (lambda r, d, p: (r, d, np.full((4, 4), np.nan)), "NaN"),
        (lambda r, d, p: (r, d, np.diag([1.0, 2.0, 1.0, 1.0])), "orthonormal"),
        (lambda r, d, p: (r, d, np.diag([1.0, 1.0, -1.0, 1.0])), "reflection"),
    ],
)
def test_bad_frames_raise_and_change_nothing(mutate, match):
    rgb, depth, k, pose = _scene_frame()
    mem = SpatialMemory(voxel_size=0.05)
    mem.insert_frame(rgb, depth, k, pose)
    before = (len(mem), mem.frames_fused, mem.revision)
    r, d, p = mutate(rgb, depth, pose)
    with pytest.raises(InputError, match=match):
        mem.insert_frame(r, d, k, p)
    assert (len(mem), mem.frames_fused, mem.revision) == before


def test_empty_memory_renders_empty_view():
    k = Intrinsics.from_fov(60, 32, 24)
    out = render_memory(SpatialMemory(), k, np.eye(4))
    assert not out.mask.any() and out.depth.abs().sum() == 0
    assert SpatialMemory().stats().voxels == 0


def test_points_far_outside_grid_are_rejected():
    mem = SpatialMemory(voxel_size=0.001)
    with pytest.raises(InputError, match="too far"):
        mem.insert_points(np.array([[5000.0, 0, 0]]), np.zeros((1, 3), np.uint8))
    assert len(mem) == 0 and mem.frames_fused == 0


def test_truncated_binary_map_is_rejected(tmp_path):
    rgb, depth, k, pose = _scene_frame()
    mem = SpatialMemory(voxel_size=0.02)
    mem.insert_frame(rgb, depth, k, pose)
    path = save_ply(mem, tmp_path / "map.ply")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="truncated"):
        load_ply(path, SpatialMemory(voxel_size=0.02))


def test_content_version_tracks_points_not_observations():
    """``revision`` counts every fusion; ``content_version`` only changes to the points."""
    mem = SpatialMemory(voxel_size=0.05)
    pts = np.random.default_rng(0).uniform(0, 1, (500, 3)).astype(np.float32)
    mem.insert_points(pts, np.full((500, 3), 100, np.uint8))
    version, revision = mem.content_version, mem.revision
    counts = mem.counts.clone()
    mem.insert_points(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8), observed=torch.arange(10))
    assert mem.revision == revision + 1 and mem.content_version == version  # observed only
    assert (mem.counts[:10] == counts[:10] + 1).all() and (mem.counts[10:] == counts[10:]).all()
    mem.insert_points(pts[:5], np.full((5, 3), 200, np.uint8))  # recolour seen voxels
    assert mem.content_version != version
    version = mem.content_version
    mem.insert_points(pts[:5] + 5.0, np.full((5, 3), 200, np.uint8))  # new voxels
    assert mem.content_version != version
