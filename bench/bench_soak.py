"""Soak: the world simulator for minutes on a world its memory does not cover; RSS must stay flat.

The in-process :class:`spatia_core.simulator.WorldSimulator` (what the world_sim node runs, minus
DDS) is driven with camera poses through a row of procedural rooms (seeds 0..R-1, side by side
along x), looking around in each, then on to the next, and back (ping-pong). The memory starts
with room 0 only; an oracle generator renders the ground truth of all the rooms (colour and
depth), so every new room adds voxels through the normal update path (``step_clip`` ->
``insert_frame``), and ``memory.max_voxels`` (small) evicts the least recently observed ones:
voxels are added and evicted for the whole run, and coming back re-adds what was evicted. The
frame bank fills up to ``retrieval.max_frames`` and then drops its oldest frames.

Every ``--every`` seconds one CSV row: elapsed s, RSS MB, voxels, bank frames, frames produced,
image rate over the interval (frames/s), room. The summary (JSON, also ``summary.json``) gives when
each cap was first reached and the RSS slope (least squares, MB/min) over the second half of the
run; the caps hold when that slope is about zero (``--max-slope``, default 1 MB/min, sets the exit
status).

Usage::

    nice -n 10 .venv/bin/python bench/bench_soak.py --minutes 10 --out out/soak      # the soak
    .venv/bin/python bench/bench_soak.py --short --out out/soak_short                  # 30 s smoke run
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from spatia_core import SpatiaConfig, SpatiaWorld, look_at  # noqa: E402
from spatia_core.generators import GenerationResult  # noqa: E402
from spatia_core.memory import SpatialMemory  # noqa: E402
from spatia_core.render import render_memory  # noqa: E402
from spatia_core.simulator import WorldSimulator  # noqa: E402
from spatia_core.worlds.procedural import make_room  # noqa: E402

ROOM_GAP = 1.0  # metres between neighbouring rooms


class OracleGenerator:
    """Stands in for a generative model: renders the ground truth (colour and depth) of the rooms,
    including the parts the simulator's memory does not hold."""

    name = "oracle"
    uses_references = False

    def __init__(self, truth: SpatialMemory):
        self.truth = truth

    def generate(self, request):
        view = render_memory(self.truth, request.intrinsics, request.poses, compile=False).numpy()
        return GenerationResult(view["rgb"], np.where(view["mask"], view["depth"], 0).astype(np.float32))


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def build_rooms(count: int, spacing: float):
    """The ground-truth memory of ``count`` rooms side by side, and each room's look-around centre."""
    truth = SpatialMemory(voxel_size=spacing, max_voxels=50_000_000)
    centres = []
    offset = 0.0
    for seed in range(count):
        scene = make_room(seed=seed, spacing=spacing)
        lo, hi = scene.bounds
        shift = np.array([offset - lo[0], 0.0, 0.0]) if seed else np.zeros(3)
        truth.insert_points(scene.points + shift.astype(np.float32), scene.colors)
        centres.append(np.asarray(scene.center, dtype=np.float64) + shift)
        offset = (hi[0] + shift[0]) + ROOM_GAP
    return truth, centres


def room_pose(centre: np.ndarray, k: int, per_room: int) -> np.ndarray:
    """Frame ``k`` of a look-around: one full turn on a 0.4 m circle around ``centre``, eye at 1.3 m."""
    a = 2 * math.pi * k / per_room
    eye = np.array([centre[0] + 0.4 * math.cos(a), centre[1] + 0.4 * math.sin(a), 1.3])
    target = eye + np.array([math.cos(a), math.sin(a), -0.15]) * 3.0
    return look_at(eye, target)


def slope_mb_per_min(rows: list[dict]) -> float:
    """Least-squares RSS slope over the rows, MB per minute (nan for fewer than 2 rows)."""
    if len(rows) < 2:
        return float("nan")
    t = np.array([r["t_s"] for r in rows]) / 60.0
    y = np.array([r["rss_mb"] for r in rows])
    return float(np.polyfit(t, y, 1)[0])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    p.add_argument("--short", action="store_true", help="30 s smoke run, a row every 2 s")
    p.add_argument("--every", type=float, default=10.0, help="seconds between CSV rows (default 10)")
    p.add_argument("--out", default="out/soak", help="folder for soak.csv and summary.json")
    p.add_argument("--rooms", type=int, default=6)
    p.add_argument("--per-room", type=int, default=90, help="frames of the look-around in each room")
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--voxel", type=float, default=0.05)
    p.add_argument("--max-voxels", type=int, default=60_000, help="memory.max_voxels (below one room and a half)")
    p.add_argument("--max-frames", type=int, default=150, help="retrieval.max_frames (frame bank cap)")
    p.add_argument("--bank-every", type=int, default=2, help="sim.bank_every: every n-th frame is fused and banked")
    p.add_argument("--max-slope", type=float, default=1.0, help="RSS slope over the second half that fails, MB/min")
    args = p.parse_args(argv)
    duration = 30.0 if args.short else args.minutes * 60.0
    every = 2.0 if args.short else args.every

    import torch

    torch.set_num_threads(1)  # a soak on a shared machine: one core
    cfg = SpatiaConfig().with_overrides({
        "camera.width": args.width, "camera.height": args.height, "memory.voxel_size": args.voxel,
        "memory.max_voxels": args.max_voxels, "retrieval.max_frames": args.max_frames,
        "sim.bank_every": args.bank_every, "render.compile": False, "generator.clip_frames": 1,
    })
    truth, centres = build_rooms(args.rooms, args.voxel)
    world = SpatiaWorld(cfg, generator=OracleGenerator(truth))
    sim = WorldSimulator(cfg, world=world)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    order = list(range(args.rooms)) + list(range(args.rooms - 2, 0, -1))  # ping-pong: 0..R-1..1, then again
    fields = ["t_s", "rss_mb", "voxels", "bank_frames", "frames", "image_rate_hz", "room"]
    rows: list[dict] = []
    first_cap = {"memory": None, "bank": None}
    evictions_seen = 0
    start_rss = rss_mb()
    print(f"soak: {duration:.0f} s, {args.rooms} rooms ({len(truth)} ground-truth voxels), memory cap "
          f"{args.max_voxels} voxels, bank cap {args.max_frames} frames, {args.width}x{args.height}, "
          f"start {len(world.memory)} voxels, RSS {start_rss:.0f} MB", flush=True)
    t0 = time.monotonic()
    next_row, frames, frames_at_row, t_row = t0 + every, 0, 0, t0
    with open(out / "soak.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        while True:
            now = time.monotonic()
            if now - t0 >= duration and rows:
                break
            room = order[(frames // args.per_room) % len(order)]
            before = len(world.memory)
            sim.step(room_pose(centres[room], frames % args.per_room, args.per_room))
            frames += 1
            if len(world.memory) < before:
                evictions_seen += 1
            elapsed = time.monotonic() - t0
            if first_cap["memory"] is None and evictions_seen:
                first_cap["memory"] = round(elapsed, 1)
            if first_cap["bank"] is None and len(world.bank) >= args.max_frames:
                first_cap["bank"] = round(elapsed, 1)
            if time.monotonic() >= next_row:
                now = time.monotonic()
                row = {"t_s": round(now - t0, 1), "rss_mb": round(rss_mb(), 1), "voxels": len(world.memory),
                       "bank_frames": len(world.bank), "frames": frames,
                       "image_rate_hz": round((frames - frames_at_row) / (now - t_row), 2), "room": room}
                writer.writerow(row)
                fh.flush()
                rows.append(row)
                print(", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
                frames_at_row, t_row, next_row = frames, now, next_row + every
    half = [r for r in rows if r["t_s"] >= rows[-1]["t_s"] / 2]
    slope = slope_mb_per_min(half)
    summary = {
        "duration_s": rows[-1]["t_s"], "frames": frames, "rows": len(rows), "every_s": every,
        "memory_cap_voxels": args.max_voxels, "bank_cap_frames": args.max_frames,
        "memory_cap_first_reached_s": first_cap["memory"], "bank_cap_first_reached_s": first_cap["bank"],
        "frames_with_eviction": evictions_seen,
        "max_voxels_seen": max(r["voxels"] for r in rows), "max_bank_frames_seen": max(r["bank_frames"] for r in rows),
        "rss_start_mb": round(start_rss, 1), "rss_first_row_mb": rows[0]["rss_mb"], "rss_last_mb": rows[-1]["rss_mb"],
        "rss_max_mb": max(r["rss_mb"] for r in rows),
        "rss_slope_second_half_mb_per_min": round(slope, 3),
        "rss_second_half_min_max_mb": [min(r["rss_mb"] for r in half), max(r["rss_mb"] for r in half)],
        "image_rate_hz_median": float(np.median([r["image_rate_hz"] for r in rows])),
        "caps_reached": first_cap["memory"] is not None and first_cap["bank"] is not None,
        "pid": os.getpid(), "csv": str(out / "soak.csv"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    if args.short:  # 30 s is mostly warm-up (allocator pools, caches): only the caps are judged
        print(f"caps reached: {'yes' if summary['caps_reached'] else 'NO'} (short run: the RSS slope is not judged)")
        return 0 if summary["caps_reached"] else 1
    flat = summary["caps_reached"] and math.isfinite(slope) and abs(slope) <= args.max_slope
    print(f"caps reached and RSS flat over the second half (|slope| <= {args.max_slope} MB/min): {'yes' if flat else 'NO'}")
    return 0 if flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
