"""Run a policy for N episodes of SpatiaNav-v0, in parallel processes or on a Ray cluster.

A policy is named ``module:attribute`` and is one of:

* a policy: ``policy(obs) -> action`` (a twist ``(vx, vy, wz)``), used as it is;
* a factory: a class, or a function marked with :func:`policy_factory`, called once per
  episode as ``factory(action_space=..., seed=...)`` and returning a policy (for policies with
  state or randomness, e.g. :func:`spatia_core.rollout_policies.random_walk`).

Every episode runs in a worker: a process of a local pool (``concurrent.futures``, spawned,
torch on one thread) or a Ray task (``ray.remote``; a local Ray started with ``ray.init`` on
loopback, or the cluster at ``--ray-address``). The worker keeps its env between episodes (a
reset reuses the loaded world), records the episode and sends back its video (mp4 bytes), camera
poses and metrics; the caller writes them, so a remote cluster needs no shared file system.

Output (the folder appears whole or not at all, :func:`spatia_core.outputs.staged_folder`):
``episode_000.mp4``, ``episode_000_poses_c2w.txt`` (:func:`~spatia_core.trajectories.write_poses`),
``episode_000.json`` (return, length, coverage, seen cells, memory size, time), ... and
``summary.json``.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import BackendUnavailableError, InputError


def policy_factory(fn: Callable) -> Callable:
    """Mark ``fn`` as a factory ``fn(action_space=..., seed=...) -> policy`` (see the module docstring)."""
    fn.policy_factory = True
    return fn


def _import(spec: str):
    module, sep, name = spec.partition(":")
    if not sep or not module or not name:
        raise InputError(f"policy {spec!r} must be module:callable, e.g. spatia_core.rollout_policies:random_walk")
    try:
        obj = importlib.import_module(module)
    except ImportError as exc:
        raise InputError(f"policy {spec!r}: cannot import {module} ({exc})") from None
    for part in name.split("."):
        if not hasattr(obj, part):
            raise InputError(f"policy {spec!r}: {module} has no attribute {name}")
        obj = getattr(obj, part)
    if not callable(obj):
        raise InputError(f"policy {spec!r} is not callable")
    return obj


def load_policy(spec: str, action_space, seed: int | None) -> Callable:
    """The policy named by ``spec`` for one episode (a factory is called here)."""
    obj = _import(spec)
    if isinstance(obj, type) or getattr(obj, "policy_factory", False):
        obj = obj(action_space=action_space, seed=seed)
        if not callable(obj):
            raise InputError(f"policy factory {spec!r} returned {type(obj).__name__}, not a policy")
    return obj


@dataclass
class EpisodeJob:
    """What a worker needs to run one episode (picklable)."""

    policy: str
    episode: int
    seed: int
    steps: int = 100
    width: int = 128
    height: int = 96
    fps: float = 30.0
    config: object = None  # a SpatiaConfig, or None for the default (the built-in room)
    env_kwargs: dict = field(default_factory=dict)


_ENVS: dict = {}  # a worker's envs, kept between episodes


def _env(job: EpisodeJob):
    from .envs import SpatiaNavEnv

    key = (job.width, job.height, job.steps, repr(job.config), repr(sorted(job.env_kwargs.items())))
    if key not in _ENVS:
        _ENVS.clear()
        _ENVS[key] = SpatiaNavEnv(width=job.width, height=job.height, max_episode_steps=job.steps, config=job.config,
                                  **job.env_kwargs)
    return _ENVS[key]


def run_episode(job: EpisodeJob) -> dict:
    """Run one episode; returns ``{"metrics", "poses" (T, 4, 4), "video" (mp4 bytes)}``."""
    import torch

    from .video import VideoWriter

    torch.set_num_threads(1)
    t0 = time.perf_counter()
    env = _env(job)
    policy = load_policy(job.policy, env.action_space, job.seed)
    obs, info = env.reset(seed=job.seed)
    poses, coverage, total, length = [info["pose"]], [info["coverage"]], 0.0, 0
    with tempfile.TemporaryDirectory(prefix="spatia_rollout_") as tmp:
        video = VideoWriter(Path(tmp) / "episode.mp4", fps=job.fps)
        try:
            video.append(obs["rgb"])
            done = False
            while not done:
                action = np.asarray(policy(obs), np.float32).reshape(-1)
                if action.shape != env.action_space.shape or not np.isfinite(action).all():
                    raise InputError(f"policy {job.policy} returned {action!r}; expected {env.action_space.shape[0]} "
                                     "finite numbers (vx, vy, wz)")
                obs, reward, terminated, truncated, info = env.step(action)
                total += reward
                length += 1
                poses.append(info["pose"])
                coverage.append(info["coverage"])
                video.append(obs["rgb"])
                done = terminated or truncated
            path = video.close()
        except BaseException:
            video.abort()
            raise
        data = path.read_bytes()
    wall = time.perf_counter() - t0
    metrics = {"episode": job.episode, "seed": job.seed, "return": float(total), "length": length,
               "coverage": float(np.mean(coverage)), "seen_cells": int(info["seen_cells"]),
               "memory_size": int(info["memory_size"]), "frames": len(poses), "wall_s": wall,
               "worker_pid": os.getpid()}
    return {"metrics": metrics, "poses": np.stack(poses), "video": data}


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _run_local(jobs: list[EpisodeJob], workers: int) -> list[dict]:
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker) as pool:
        return list(pool.map(run_episode, jobs))


#: Ray resolves 127.0.0.1 to the machine's address unless this is "0": a local Ray then stays on loopback.
RAY_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _run_ray(jobs: list[EpisodeJob], workers: int, address: str | None) -> list[dict]:
    import sys

    if not address and "ray" not in sys.modules:  # read when ray is imported
        os.environ.setdefault(RAY_LOOPBACK_ENV, "0")
    try:
        import ray
    except ImportError:
        raise BackendUnavailableError("rollouts on Ray need the ray package (pip install ray)") from None
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:  # a local cluster on loopback for this run
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
        started = True
    try:
        task = ray.remote(num_cpus=1)(run_episode)
        return ray.get([task.remote(job) for job in jobs])
    finally:
        if started:
            ray.shutdown()


def run_rollout(policy: str, episodes: int, out, workers: int = 2, steps: int = 100, seed: int = 0,
                width: int = 128, height: int = 96, fps: float = 30.0, config=None, ray: bool = False,
                ray_address: str | None = None, env_kwargs: dict | None = None) -> dict:
    """Run ``episodes`` episodes of ``policy`` (episode ``i`` seeded ``seed + i``) and write them to
    ``out``; returns the summary. ``ray`` or ``ray_address``: on Ray, else a local process pool."""
    from .outputs import atomic_write_bytes, staged_folder
    from .trajectories import write_poses

    if episodes < 1 or workers < 1 or steps < 1:
        raise InputError(f"episodes, workers and steps must be >= 1, got {episodes}, {workers}, {steps}")
    if width < 8 or height < 8:
        raise InputError(f"image size must be at least 8x8, got {width}x{height}")
    backend = "ray" if (ray or ray_address) else "local"
    _import(policy)  # a bad name fails here, before any worker starts
    jobs = [EpisodeJob(policy, i, seed + i, steps, width, height, fps, config, dict(env_kwargs or {}))
            for i in range(episodes)]
    t0 = time.perf_counter()
    with staged_folder(out) as stage:
        results = _run_ray(jobs, workers, ray_address) if backend == "ray" else _run_local(jobs, workers)
        wall = time.perf_counter() - t0
        for r in results:
            name = f"episode_{r['metrics']['episode']:03d}"
            atomic_write_bytes(stage / f"{name}.mp4", r["video"])
            write_poses(stage / f"{name}_poses_c2w.txt", r["poses"])
            atomic_write_bytes(stage / f"{name}.json", json.dumps(r["metrics"], indent=2).encode())
        metrics = [r["metrics"] for r in results]
        summary = {"policy": policy, "backend": backend, "ray_address": ray_address, "workers": workers,
                   "episodes": episodes, "steps": steps, "size": [width, height], "seed": seed, "wall_s": wall,
                   "mean_return": float(np.mean([m["return"] for m in metrics])),
                   "mean_length": float(np.mean([m["length"] for m in metrics])),
                   "mean_coverage": float(np.mean([m["coverage"] for m in metrics])),
                   "worker_pids": sorted({m["worker_pid"] for m in metrics}), "episodes_metrics": metrics}
        atomic_write_bytes(stage / "summary.json", json.dumps(summary, indent=2).encode())
    return summary
