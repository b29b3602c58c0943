"""``spatia rollout``: a policy for N episodes, in parallel processes or on Ray (:mod:`spatia_core.rollout`)."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="module:callable, a policy(obs) -> action or a factory "
                   "(e.g. spatia_core.rollout_policies:random_walk)")
    p.add_argument("--episodes", type=int, default=8)
    p.add_argument("--workers", type=int, default=2, help="parallel worker processes (or Ray CPUs of a local Ray)")
    p.add_argument("--out", required=True, help="output folder (videos, poses, metrics, summary.json)")
    p.add_argument("--steps", type=int, default=100, help="steps per episode")
    p.add_argument("--seed", type=int, default=0, help="episode i is seeded seed + i")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--height", type=int, default=96)
    p.add_argument("--fps", type=float, default=30.0, help="video frame rate")
    p.add_argument("--depth", action="store_true", help="observe depth too (obs['depth'])")
    p.add_argument("--config", default="", help="YAML config of the world and simulator")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config key")
    ray = p.add_mutually_exclusive_group()
    ray.add_argument("--ray", action="store_true", help="run the episodes on a local Ray (ray.init, loopback)")
    ray.add_argument("--ray-address", default=None, help="run the episodes on the Ray cluster at this address")


def run(args) -> int:
    from .config import SpatiaConfig, check_device
    from .rollout import run_rollout

    cfg = SpatiaConfig.from_yaml(args.config) if args.config else SpatiaConfig()
    cfg = cfg.with_overrides(args.set) if args.set else cfg
    check_device(cfg.device)
    summary = run_rollout(args.policy, args.episodes, args.out, workers=args.workers, steps=args.steps, seed=args.seed,
                          width=args.width, height=args.height, fps=args.fps, config=cfg, ray=args.ray,
                          ray_address=args.ray_address, env_kwargs={"depth": True} if args.depth else None)
    brief = {k: v for k, v in summary.items() if k != "episodes_metrics"}
    print(json.dumps(brief, indent=2))
    return 0
