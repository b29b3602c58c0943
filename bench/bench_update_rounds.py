"""Per-round memory-update cost over 20 rounds of the world loop (generate -> fuse): does it stay flat?

The simulator's loop on the built-in room, one clip per round along an orbit, timed per round
from ``ClipResult.timings``: the memory update (``depth`` + ``refine`` + ``dynamics`` + ``fuse``)
and the whole round (everything ``step_clip`` does: render, generate, update). Two settings:

* ``projection``: the ``projection`` backend on the whole room (the default world). The frames
  are the memory's own view, so the update re-observes voxels and adds almost none.
* ``growing``: the memory starts from the start view alone and an oracle generator shows the
  whole ground-truth room (colour and depth, :class:`bench_memory_update.OracleGenerator`), so
  every round adds new voxels, as with a generative model: the case where a growing hash could
  make later rounds slower.

Flat means: the median update cost of the last 5 rounds is at most 1.5x that of the first 5.
The verdict is qualified by the machine's load (``_load.LoadWatch``: a busy machine gives no PASS).
The table also gives each round's process CPU time (all threads), which other processes on a
shared machine disturb far less than wall time, with the same first-5 / last-5 ratio.

Usage::

    .venv/bin/python bench/bench_update_rounds.py [--rounds 20] [--clip 8] [--width 320 --height 240]
        [--mode both|projection|growing] [--set update.carve=false] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _load import LoadWatch  # noqa: E402
from bench_memory_update import OracleGenerator  # noqa: E402

from spatia_core import SpatiaConfig, SpatiaWorld  # noqa: E402
from spatia_core.trajectories import orbit  # noqa: E402

UPDATE_STAGES = ("depth", "refine", "dynamics", "fuse")
FLAT_RATIO = 1.5


def run(mode: str, args) -> dict:
    cfg = SpatiaConfig().with_overrides({
        "camera.width": args.width, "camera.height": args.height, "memory.voxel_size": args.voxel,
        "generator.backend": "projection", "generator.clip_frames": args.clip, "generator.layout": "stream",
    }).with_overrides(args.set)
    world = SpatiaWorld(cfg)
    init = world.reset()
    if mode == "growing":  # memory = the start view; the oracle shows the rest of the room
        start = world.render(init.start_pose[None]).numpy()
        world = SpatiaWorld(cfg, generator=OracleGenerator(world.memory))
        world.reset()
        world.memory = world._new_memory()
        world.memory.insert_frame(start["rgb"][0], np.where(start["mask"][0], start["depth"][0], 0), world.intrinsics,
                                  init.start_pose)
    poses = orbit(init.start_pose, args.rounds * args.clip)
    rows = []
    print(f"\n{mode}: {args.rounds} rounds x {args.clip} frames at {args.width}x{args.height}, voxel {args.voxel} m")
    print("round    voxels   carved   update ms   fuse ms   round ms   round CPU ms")
    for r in range(args.rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        res = world.step_clip(poses[r * args.clip:(r + 1) * args.clip])
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
        update = sum(res.timings.get(k, 0.0) for k in UPDATE_STAGES)
        rows.append({"round": r + 1, "voxels": len(world.memory), "carved": res.carved, "update_ms": update * 1e3,
                     "fuse_ms": res.timings.get("fuse", 0.0) * 1e3, "round_ms": total * 1e3, "round_cpu_ms": cpu * 1e3})
        row = rows[-1]
        print(f"{row['round']:5d} {row['voxels']:9d} {row['carved']:8d} {row['update_ms']:11.1f} {row['fuse_ms']:9.1f} "
              f"{row['round_ms']:10.1f} {row['round_cpu_ms']:14.1f}", flush=True)
    out = {"mode": mode, "rows": rows}
    for key, what in (("update_ms", "update (wall)"), ("round_cpu_ms", "round CPU time")):
        vals = [row[key] for row in rows]
        k = min(5, len(vals) // 2)
        first, last = float(np.median(vals[:k])), float(np.median(vals[-k:]))
        out[key] = {"first_median": first, "last_median": last, "ratio": last / first,
                    "flat": last <= FLAT_RATIO * first}
        print(f"{mode}: {what} median of the first {k} rounds {first:.1f} ms, of the last {k} {last:.1f} ms: "
              f"{last / first:.2f}x (flat means <= {FLAT_RATIO}x: {'yes' if out[key]['flat'] else 'NO'})")
    print(f"{mode}: voxels {rows[0]['voxels']} -> {rows[-1]['voxels']}, carved {sum(r['carved'] for r in rows)} "
          f"(update.carve={world.config.update.carve})")
    out["flat"] = out["update_ms"]["flat"]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--clip", type=int, default=8, help="frames per round")
    p.add_argument("--width", type=int, default=320)
    p.add_argument("--height", type=int, default=240)
    p.add_argument("--voxel", type=float, default=0.01)
    p.add_argument("--mode", default="both", choices=("both", "projection", "growing"))
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. update.carve=false (repeatable)")
    p.add_argument("--json", default="", help="also write the tables here")
    args = p.parse_args(argv)
    watch = LoadWatch()
    results = [run(m, args) for m in (("projection", "growing") if args.mode == "both" else (args.mode,))]
    load = watch.end()
    flat = all(r["flat"] for r in results)
    print(load.line())
    print(f"per-round update cost flat in every setting: {load.verdict(flat)}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "load": load.as_dict()}, indent=2))
    return 0 if flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
