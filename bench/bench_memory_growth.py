"""Fusing frames that ADD geometry: insert time vs memory size, from 0.1M to 3M voxels.

``bench_core.py`` times inserting a frame into a memory that already holds the scene (mostly
re-observed voxels). Here every frame also adds new voxels, so the voxel hash and the memory's
arrays keep growing, which is where growth spikes show.

The world: a wall with relief, ``z = 2 + 0.25 sin(3x) cos(3y)`` m (colour from position), seen
by a 640x480 camera (70 deg) looking along +z from z = 0, stepping ``--step`` m along +x per
frame: each frame re-observes about half of the previous view and adds the rest (~25k new 1 cm
voxels). Depth is the ray/surface intersection (fixed-point iterations), every pixel valid.
Frames are generated before timing; only ``SpatialMemory.insert_frame`` is timed: wall time and
this process's CPU time (``time.process_time``, one torch thread by default: what the insert
itself cost, without the time other processes held the CPU), and the voxel-hash part of it.

    .venv/bin/python bench/bench_memory_growth.py [--max-voxels 3000000] [--step 1.0] [--out out/bench_memory_growth.json]

Reports median and p99 per memory-size bucket and judges the target: insert p99 <= 2x median in
every bucket from 0.1M voxels on (CPU time; wall time is printed beside it), with the machine's
load before and during (``bench/_load.py``: a met target on a busy machine is "NOT A PASS").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench._load import LoadWatch  # noqa: E402
from spatia_core.geometry import Intrinsics  # noqa: E402
from spatia_core.memory import SpatialMemory  # noqa: E402

BUCKETS = (100_000, 250_000, 500_000, 1_000_000, 2_000_000, 3_000_000)
TARGET_P99_OVER_MEDIAN = 2.0


def camera(width: int, height: int, fov_deg: float = 70.0) -> Intrinsics:
    fx = 0.5 * width / np.tan(np.radians(fov_deg) / 2)
    return Intrinsics(fx=fx, fy=fx, cx=width / 2 - 0.5, cy=height / 2 - 0.5, width=width, height=height)


def wall_frame(intr: Intrinsics, x0: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rgb uint8 (H,W,3), depth float32 (H,W), pose (4,4))`` of the camera at ``(x0, 0, 0)``
    looking along +z (OpenCV axes: camera = world rotation identity)."""
    v, u = np.mgrid[0:intr.height, 0:intr.width].astype(np.float64)
    rx, ry = (u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy
    z = np.full(u.shape, 2.0)
    for _ in range(6):  # z = f(x, y) along the ray (x0 + rx z, ry z, z): a contraction, converges fast
        x, y = x0 + rx * z, ry * z
        z = 2.0 + 0.25 * np.sin(3 * x) * np.cos(3 * y)
    x, y = x0 + rx * z, ry * z
    rgb = np.stack([128 + 100 * np.sin(7 * x), 128 + 100 * np.cos(5 * y), 128 + 100 * np.sin(3 * (x + y))], -1)
    pose = np.eye(4)
    pose[0, 3] = x0
    return rgb.astype(np.uint8), z.astype(np.float32), pose


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-voxels", type=int, default=3_000_000, help="stop once the memory holds this many")
    parser.add_argument("--step", type=float, default=1.0, help="camera step along the wall per frame, m")
    parser.add_argument("--voxel", type=float, default=0.01, help="voxel size, m")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: with more, idle OpenMP workers spin and inflate CPU time "
                             "on a busy machine; 0 = torch's default)")
    parser.add_argument("--out", default="out/bench_memory_growth.json")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    intr = camera(args.width, args.height)
    mem = SpatialMemory(voxel_size=args.voxel, max_voxels=max(10_000_000, 2 * args.max_voxels))
    hash_time = [0.0]
    index_insert = mem._index.insert

    def timed_insert(*a, **k):  # the voxel-hash share of each insert (CPU time of this thread)
        t0 = time.process_time()
        try:
            return index_insert(*a, **k)
        finally:
            hash_time[0] += time.process_time() - t0

    mem._index.insert = timed_insert
    warm = wall_frame(intr, -1000.0)  # far from the measured wall: compiles kernels, adds nothing measured
    SpatialMemory(voxel_size=args.voxel).insert_frame(*warm[:2], intr, warm[2])

    print(f"memory growth benchmark: {args.width}x{args.height} frames, voxel {args.voxel:g} m, step {args.step:g} m, "
          f"up to {args.max_voxels:,} voxels, torch threads {torch.get_num_threads()}", flush=True)
    watch = LoadWatch()
    rows = []
    x0, frame = 0.0, wall_frame(intr, 0.0)
    while len(mem) < args.max_voxels:
        nxt_x = x0 + args.step
        before = len(mem)
        hash_time[0] = 0.0
        t_wall, t_cpu = time.perf_counter(), time.process_time()
        res = mem.insert_frame(frame[0], frame[1], intr, frame[2])
        cpu, wall = time.process_time() - t_cpu, time.perf_counter() - t_wall
        rows.append({"voxels_before": before, "new": res.voxels_new, "touched": res.voxels_touched,
                     "wall_ms": 1e3 * wall, "cpu_ms": 1e3 * cpu, "hash_cpu_ms": 1e3 * hash_time[0]})
        if len(rows) % 20 == 0:
            print(f"  {len(rows):4d} frames, {len(mem):>9,} voxels, last insert {1e3 * wall:.0f} ms", flush=True)
        frame, x0 = wall_frame(intr, nxt_x), nxt_x  # made outside the timed part
        if res.voxels_new == 0:
            print("benchmark broken: a frame added no voxels", file=sys.stderr)
            return 1
    load = watch.end()

    buckets = []
    for lo, hi in zip(BUCKETS[:-1], BUCKETS[1:]):
        sel = [r for r in rows if lo <= r["voxels_before"] < hi]
        if not sel:
            continue
        stats = {"from": lo, "to": hi, "frames": len(sel), "new_per_frame": float(np.median([r["new"] for r in sel]))}
        for key in ("cpu_ms", "wall_ms", "hash_cpu_ms"):
            vals = np.array([r[key] for r in sel])
            stats[key] = {"median": float(np.median(vals)), "p99": float(np.percentile(vals, 99)), "max": float(vals.max())}
        stats["p99_over_median"] = stats["cpu_ms"]["p99"] / stats["cpu_ms"]["median"]
        buckets.append(stats)
    worst = max((b["p99_over_median"] for b in buckets), default=float("nan"))
    met = bool(buckets) and worst <= TARGET_P99_OVER_MEDIAN
    result = {"config": vars(args), "frames": len(rows), "voxels": len(mem), "buckets": buckets,
              "worst_p99_over_median": worst, "target": TARGET_P99_OVER_MEDIAN, "result": load.verdict(met),
              "load": load.as_dict(), "rows": rows}

    print(f"\n{'voxels in memory':>22s} {'frames':>6s} {'new/frame':>9s} {'CPU ms median / p99':>20s} {'p99/med':>7s} "
          f"{'wall ms median / p99':>21s} {'hash CPU ms med / p99':>21s}")
    for b in buckets:
        c, w, h = b["cpu_ms"], b["wall_ms"], b["hash_cpu_ms"]
        print(f"{b['from']:>10,} - {b['to']:>9,} {b['frames']:6d} {b['new_per_frame']:9.0f} "
              f"{c['median']:9.1f} / {c['p99']:7.1f} {b['p99_over_median']:7.2f} {w['median']:10.1f} / {w['p99']:7.1f} "
              f"{h['median']:10.1f} / {h['p99']:7.1f}")
    print(f"\ninsert p99 <= {TARGET_P99_OVER_MEDIAN:g}x median (CPU time) in every bucket: worst {worst:.2f}x  "
          f"{result['result']}")
    print(load.line())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
