"""Per-round memory-update cost over a rollout: incremental fusion vs re-running it over all history.

Our world loop fuses only each new clip into the memory (voxel hash: cost per frame, not per
map). The official release instead re-runs reconstruction over all history frames every round,
so its cost grows with the rollout. Both are measured in the same run on the built-in room.
By default (``--start-view-only``) the world's memory starts from the start view alone and an
oracle generator renders the full ground-truth room (frames and depth), so every round adds new
geometry and the memory grows, as with a generative model; ``--full-memory`` starts from the
whole room with the ``projection`` backend instead (nothing new to add).

* **ours**: the memory-update stages of ``step_clip`` (``depth`` + ``dynamics`` + ``fuse``,
  plus pose refinement) from ``ClipResult.timings``;
* **peer**: rebuild a fresh :class:`SpatialMemory` from every history frame so far (the start
  view and all generated frames, RGB-D at their poses), i.e. re-reconstruction over all history
  with the same fusion code, so only the scaling differs.

Usage::

    .venv/bin/python bench/bench_memory_update.py [--rounds 20] [--clip 8] [--width 160 --height 120]
        [--dynamics residual] [--pose-refine none]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._load import LoadWatch  # noqa: E402
from spatia_core import SpatiaConfig, SpatiaWorld  # noqa: E402
from spatia_core.generators import GenerationResult  # noqa: E402
from spatia_core.memory import SpatialMemory  # noqa: E402
from spatia_core.render import render_memory  # noqa: E402
from spatia_core.trajectories import orbit  # noqa: E402

REPORT_ROUNDS = (1, 5, 10, 20)


class OracleGenerator:
    """Stands in for the diffusion model: renders the ground-truth room (colour and depth)."""

    name = "oracle"
    uses_references = False

    def __init__(self, memory: SpatialMemory):
        self.memory = memory

    def generate(self, request):
        view = render_memory(self.memory, request.intrinsics, request.poses, compile=False).numpy()
        return GenerationResult(view["rgb"], np.where(view["mask"], view["depth"], 0).astype(np.float32))


def rebuild_from_history(cfg: SpatiaConfig, history, intrinsics) -> float:
    """Seconds to rebuild a memory from all history frames (the peer's round)."""
    m = cfg.memory
    t0 = time.perf_counter()
    mem = SpatialMemory(voxel_size=m.voxel_size, max_voxels=m.max_voxels, max_weight=m.max_weight,
                        min_depth=m.min_depth, max_depth=m.max_depth, block_size=m.block_size)
    for rgb, depth, pose in history:
        mem.insert_frame(rgb, depth, intrinsics, pose)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--clip", type=int, default=8, help="frames per round")
    p.add_argument("--width", type=int, default=160)
    p.add_argument("--height", type=int, default=120)
    p.add_argument("--voxel", type=float, default=0.02)
    p.add_argument("--dynamics", default="residual", choices=["none", "residual"])
    p.add_argument("--pose-refine", default="none", choices=["none", "rgbd_odometry", "icp"])
    p.add_argument("--full-memory", action="store_true",
                   help="start from the whole room (projection backend) instead of the start view only")
    args = p.parse_args(argv)

    cfg = SpatiaConfig().with_overrides({
        "camera.width": args.width, "camera.height": args.height, "memory.voxel_size": args.voxel,
        "generator.backend": "projection", "generator.clip_frames": args.clip, "render.compile": False,
        "update.dynamics": args.dynamics, "update.pose_refine": args.pose_refine,
    })
    world = SpatiaWorld(cfg)
    init = world.reset()
    start = world.render(init.start_pose[None]).numpy()
    if not args.full_memory:  # memory = the start view; the oracle shows the rest of the room
        truth = world.memory
        world = SpatiaWorld(cfg, generator=OracleGenerator(truth))
        world.reset()
        world.memory = world._new_memory()
        world.memory.insert_frame(start["rgb"][0], np.where(start["mask"][0], start["depth"][0], 0), world.intrinsics,
                                  init.start_pose)
    n = args.rounds * args.clip
    poses = orbit(init.start_pose, n)
    history = [(start["rgb"][0], np.where(start["mask"][0], start["depth"][0], 0).astype(np.float32), init.start_pose)]
    ours, peer = [], []
    watch = LoadWatch()  # the machine's load before (printed with the result) and during
    print(f"{args.rounds} rounds x {args.clip} frames at {args.width}x{args.height}, voxel {args.voxel} m, "
          f"dynamics={args.dynamics}, pose_refine={args.pose_refine}, "
          f"{'full memory' if args.full_memory else 'memory grows from the start view'}")
    for r in range(args.rounds):
        res = world.step_clip(poses[r * args.clip : (r + 1) * args.clip])
        ours.append(sum(res.timings.get(k, 0.0) for k in ("depth", "refine", "dynamics", "fuse")))
        history += [(res.frames[i], res.depth[i], res.fused_poses[i]) for i in range(len(res.poses))]
        peer.append(rebuild_from_history(cfg, history, world.intrinsics))
        print(f"round {r + 1:2d}: ours {ours[-1] * 1e3:8.1f} ms   peer (re-fuse {len(history):4d} frames) "
              f"{peer[-1] * 1e3:8.1f} ms   memory {len(world.memory)} voxels", flush=True)
    print("\nround   ours ms   peer ms   peer/ours")
    for r in REPORT_ROUNDS:
        if r <= args.rounds:
            print(f"{r:5d} {ours[r - 1] * 1e3:9.1f} {peer[r - 1] * 1e3:9.1f} {peer[r - 1] / ours[r - 1]:10.1f}")
    last = min(args.rounds, REPORT_ROUNDS[-1])
    # round 1 pays one-off warm-up costs: compare the last round with the median of rounds 1-3 too
    base = float(np.median(ours[: min(3, len(ours))]))
    ratio_ours, ratio_peer = ours[last - 1] / ours[0], peer[last - 1] / peer[0]
    print(f"round {last}/round 1: ours {ratio_ours:.2f}x (vs median of rounds 1-3: {ours[last - 1] / base:.2f}x), "
          f"peer {ratio_peer:.2f}x")
    flat = ours[last - 1] / base < 2.0
    load = watch.end()
    print(f"ours stays flat (round {last} < 2x early rounds): {'yes' if flat else 'NO'}  {load.verdict(flat)}")
    print(load.line())
    return 0 if flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
