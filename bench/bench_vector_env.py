"""Steps/s of SpatiaNavVectorEnv (N worlds' views in one batched call) against N single SpatiaNav
envs stepped in a loop and against gymnasium's SyncVectorEnv of them, in one run.

    .venv/bin/python bench/bench_vector_env.py            # N=8, 128x96, 48 steps (< 1 min)
    .venv/bin/python bench/bench_vector_env.py --n 4 --steps 10 --voxel 0.04   # smoke run

A "step" is one sub-env step: the vector env's steps/s is N x its batched steps per second. The
variants are timed in interleaved rounds (median per round), so a load change hits them alike.
Torch runs single-threaded (as the envs do). Machine load (os.getloadavg) is printed before and
during, since the numbers mean little on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from spatia_core.config import SpatiaConfig  # noqa: E402
from spatia_core.envs import SpatiaNavEnv, SpatiaNavVectorEnv  # noqa: E402


def _actions(n: int, steps: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.uniform(-1, 1, (steps, n, 3)) * [0.5, 0.0, 1.0]).astype(np.float32)


def _time_interleaved(steppers: dict, actions: np.ndarray, rounds: int) -> dict:
    """Seconds per step of each stepper, the median over ``rounds`` rounds in which every stepper
    runs its share of ``actions`` in turn: a load change on a shared machine hits them all alike."""
    for step in steppers.values():
        step(actions[0])  # warm (numba, caches)
    per_round = {name: [] for name in steppers}
    for chunk in np.array_split(actions[1:], rounds):
        for name, step in steppers.items():
            t0 = time.perf_counter()
            for a in chunk:
                step(a)
            per_round[name].append((time.perf_counter() - t0) / len(chunk))
    return {name: float(np.median(v)) for name, v in per_round.items()}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--steps", type=int, default=48)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--height", type=int, default=96)
    ap.add_argument("--voxel", type=float, default=0.02, help="memory.voxel_size of the built-in room, m")
    ap.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (median reported)")
    ap.add_argument("--render-threads", type=int, default=0,
                    help="threads of the threaded vector env variant (0: one per core)")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    n, steps = args.n, args.steps
    cfg = SpatiaConfig().with_overrides({"memory.voxel_size": args.voxel})
    kw = dict(width=args.width, height=args.height, max_episode_steps=10 * steps, config=cfg)
    actions = _actions(n, steps + 1)
    load = {"before": os.getloadavg()}

    t0 = time.perf_counter()
    venv = SpatiaNavVectorEnv(n, **kw)
    venv.reset(seed=0)
    setup_vector = time.perf_counter() - t0
    venv_t = SpatiaNavVectorEnv(n, render_threads=args.render_threads, **kw)  # its batch's views split over threads
    venv_t.reset(seed=0)
    load["after_vector_setup"] = os.getloadavg()

    t0 = time.perf_counter()
    envs = [SpatiaNavEnv(**kw) for _ in range(n)]
    for i, e in enumerate(envs):
        e.reset(seed=i)
    setup_single = time.perf_counter() - t0

    def loop(a):
        for e, ai in zip(envs, a):
            e.step(ai)

    sync = gym.vector.SyncVectorEnv([lambda e=e: e for e in envs])  # the same N worlds, gymnasium's wrapper
    sync.reset(seed=0)
    load["after_single_setup"] = os.getloadavg()
    sec = _time_interleaved({"vector": venv.step, "vector_threads": venv_t.step, "loop": loop, "sync": sync.step},
                            actions, max(1, min(args.rounds, steps)))
    load["after_timing"] = os.getloadavg()
    t_vec, t_vec_t, t_loop, t_sync = sec["vector"], sec["vector_threads"], sec["loop"], sec["sync"]

    sub_steps = n  # per batched step: N sub-env steps
    res = {
        "n": n, "steps": steps, "size": [args.width, args.height], "voxel_size": args.voxel,
        "memory_voxels": len(venv.world.memory), "threaded_variant_threads": venv_t.world.threads,
        "vector_steps_per_s": sub_steps / t_vec,
        "vector_threads_steps_per_s": sub_steps / t_vec_t,
        "single_loop_steps_per_s": sub_steps / t_loop,
        "sync_vector_steps_per_s": sub_steps / t_sync,
        "ratio_vector_over_loop": t_loop / t_vec,
        "ratio_vector_over_sync": t_sync / t_vec,
        "ratio_vector_threads_over_loop": t_loop / t_vec_t,
        "setup_s": {"vector": setup_vector, "single_x_n": setup_single},
        "loadavg": load, "cpus": os.cpu_count(),
    }
    print(f"N={n}, {args.width}x{args.height}, {res['memory_voxels']} voxels, {steps} steps each")
    print(f"  vector env      {res['vector_steps_per_s']:8.1f} steps/s   (setup {setup_vector:.1f} s)")
    print(f"  vector, {venv_t.world.threads} thr.  {res['vector_threads_steps_per_s']:8.1f} steps/s")
    print(f"  {n} single envs  {res['single_loop_steps_per_s']:8.1f} steps/s   (setup {setup_single:.1f} s)")
    print(f"  SyncVectorEnv   {res['sync_vector_steps_per_s']:8.1f} steps/s")
    print(f"  ratio vector / single loop {res['ratio_vector_over_loop']:.2f}x ({venv_t.world.threads} threads "
          f"{res['ratio_vector_threads_over_loop']:.2f}x), vector / SyncVectorEnv {res['ratio_vector_over_sync']:.2f}x")
    print("  loadavg " + ", ".join(f"{k} {v[0]:.2f}" for k, v in load.items()) + f" ({res['cpus']} cpus)")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    return res


if __name__ == "__main__":
    main()
