"""Benchmark of spatia_core's memory, renderer and retrieval against Open3D, in one run.

    python bench/bench_core.py [--out out/bench_core.json] [--repeats 7]

1. Render a ~1M-point memory (the built-in room, 1.24 cm voxels) to 640x480 RGB + depth, vs Open3D's
   ``t.geometry.PointCloud.project_to_rgbd_image`` on the same points and camera.
2. Insert one 640x480 RGB-D frame into memories of 0.1M, 1M and 2M points, vs re-voxelising
   the merged cloud with Open3D (``t.geometry.PointCloud.voxel_down_sample``).
3. Retrieval (Algorithm 1) among 1,000 candidate frames for an 81-frame clip (12 scored target
   views at stride K = 7) and for a single target view.

Times are medians over ``--repeats`` runs after one warm-up, on this machine's threads.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from spatia_core import Intrinsics, SpatialMemory, look_at
from spatia_core._open3d import open3d
from spatia_core.render import render_memory
from spatia_core.retrieval import FrameBank, retrieve_references
from spatia_core.worlds.procedural import make_room


def timed(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def room_memory(voxel: float) -> tuple[SpatialMemory, object]:
    scene = make_room(seed=0, spacing=voxel)
    mem = SpatialMemory(voxel_size=voxel, max_voxels=10_000_000)
    mem.insert_points(scene.points, scene.colors)
    return mem, scene


def bench_render(repeats: int) -> dict:
    o3d = open3d()
    mem, scene = room_memory(0.0124)  # the built-in room at this pitch holds ~1M voxels
    k = Intrinsics.from_fov(70, 640, 480)
    pose = scene.start_pose
    ours = timed(lambda: render_memory(mem, k, pose), repeats)
    xyz, rgb, _ = mem.to_numpy()
    pcd = o3d.t.geometry.PointCloud(o3d.core.Tensor(xyz))
    pcd.point.colors = o3d.core.Tensor(rgb.astype(np.float32) / 255.0)
    intr = o3d.core.Tensor(k.matrix())
    extr = o3d.core.Tensor(np.linalg.inv(pose))
    peer = timed(lambda: pcd.project_to_rgbd_image(640, 480, intr, extr, depth_scale=1000.0, depth_max=20.0), repeats)
    cov = float(render_memory(mem, k, pose).coverage()[0])
    return {"points": len(mem), "ours_s": ours, "open3d_s": peer, "ratio": ours / peer, "coverage": cov}


def frame_from_room(scene, k, pose, mem) -> tuple[np.ndarray, np.ndarray]:
    out = render_memory(mem, k, pose).numpy()
    return out["rgb"][0], out["depth"][0]


def bench_insert(repeats: int) -> list[dict]:
    o3d = open3d()
    k = Intrinsics.from_fov(70, 640, 480)
    src, scene = room_memory(0.01)
    poses = [look_at(scene.start_pose[:3, 3] + [0, dy, 0], scene.center) for dy in (-0.3, -0.1, 0.1, 0.3)]
    frames = [frame_from_room(scene, k, p, src) for p in poses]
    rng = np.random.default_rng(0)
    rows = []
    for size in (100_000, 1_000_000, 2_000_000):
        # a memory of `size` voxels: random surface points spread over a large area plus nothing else
        pts = np.concatenate([rng.uniform([-50, -50, 0], [50, 50, 0.0], (size, 3))]).astype(np.float32)
        pts[:, 2] = rng.integers(0, 300, size) * 0.01
        mem = SpatialMemory(voxel_size=0.01, max_voxels=10_000_000)
        mem.insert_points(pts, np.full((size, 3), 128, np.uint8))
        n_mem = len(mem)
        i = [0]

        def insert():
            rgb, depth = frames[i[0] % len(frames)]
            mem.insert_frame(rgb, depth, k, poses[i[0] % len(frames)])
            i[0] += 1

        ours = timed(insert, repeats)
        xyz_mem, rgb_mem, _ = mem.to_numpy()
        rgb, depth = frames[0]
        v, u = np.nonzero(depth > 0)
        z = depth[v, u]
        cam = np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], 1)
        world = (cam @ poses[0][:3, :3].T + poses[0][:3, 3]).astype(np.float32)
        merged = o3d.t.geometry.PointCloud(o3d.core.Tensor(np.concatenate([xyz_mem, world])))
        merged.point.colors = o3d.core.Tensor(np.concatenate([rgb_mem, rgb[v, u]]).astype(np.float32) / 255)
        peer = timed(lambda: merged.voxel_down_sample(0.01), repeats)
        rows.append({"memory_points": n_mem, "frame_points": int(len(z)), "ours_s": ours, "open3d_revoxelize_s": peer,
                     "ratio": ours / peer})
    return rows


def bench_retrieval(repeats: int) -> dict:
    mem, scene = room_memory(0.02)
    k = Intrinsics.from_fov(70, 160, 120)
    bank = FrameBank(voxel_size=0.1)
    rng = np.random.default_rng(1)
    lo, hi = np.array([-2.0, -1.8, 0.6]), np.array([2.0, 1.8, 1.8])

    def random_view():
        eye = rng.uniform(lo, hi)
        yaw = rng.uniform(-np.pi, np.pi)
        return look_at(eye, eye + [np.cos(yaw), np.sin(yaw), rng.uniform(-0.3, 0.3)])

    image = np.zeros((120, 160, 3), np.uint8)
    for _ in range(1000):
        pose = random_view()
        depth = render_memory(mem, k, pose).depth[0]
        bank.add(image, pose, k, bank.view_voxels(depth, k, pose))
    targets = []
    for _ in range(81):
        pose = random_view()
        targets.append(bank.view_voxels(render_memory(mem, k, pose).depth[0], k, pose))
    clip = timed(lambda: retrieve_references(bank, targets, k=7, epsilon=0.1), repeats)
    single = timed(lambda: retrieve_references(bank, targets[:1], k=7, epsilon=0.1), repeats)

    def rebuild():
        bank._matrix = None
        bank._voxel_frame_matrix()

    rebuild_s = timed(rebuild, repeats)
    mean_voxels = float(np.mean([len(t) for t in targets]))
    return {"candidates": len(bank), "clip_81_frames_s": clip, "single_view_s": single,
            "bank_rebuild_after_add_s": rebuild_s, "mean_view_voxels": mean_voxels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/bench_core.json")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    results = {"machine": {"cpu_threads": torch.get_num_threads(), "python": platform.python_version(),
                           "torch": torch.__version__, "open3d": open3d().__version__}}
    results["render"] = bench_render(args.repeats)
    results["insert"] = bench_insert(args.repeats)
    results["retrieval"] = bench_retrieval(args.repeats)

    r = results["render"]
    print(f"\n{'benchmark':48s} {'ours':>10s} {'peer':>10s} {'ratio':>7s} {'target':>9s}")
    print(f"{'render ' + format(r['points'], ',') + ' pts 640x480 vs O3D project':48s} "
          f"{r['ours_s'] * 1e3:8.1f}ms {r['open3d_s'] * 1e3:8.1f}ms {r['ratio']:7.2f} {'<= 0.5':>9s}")
    for row in results["insert"]:
        name = f"insert 640x480 into {row['memory_points'] / 1e6:.1f}M vs O3D revoxelize"
        print(f"{name:48s} {row['ours_s'] * 1e3:8.1f}ms {row['open3d_revoxelize_s'] * 1e3:8.1f}ms {row['ratio']:7.3f} "
              f"{'<= 0.05' if row['memory_points'] > 500_000 and row['memory_points'] < 1_500_000 else '':>9s}")
    q = results["retrieval"]
    print(f"{'retrieval, 81-frame clip, 1000 candidates':48s} {q['clip_81_frames_s'] * 1e3:8.2f}ms {'':>10s} {'':>7s} {'<= 10ms':>9s}")
    print(f"{'retrieval, one target view, 1000 candidates':48s} {q['single_view_s'] * 1e3:8.2f}ms")
    print(f"{'frame bank rebuild after adding frames':48s} {q['bank_rebuild_after_add_s'] * 1e3:8.2f}ms")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
