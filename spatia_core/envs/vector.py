"""SpatiaNavVectorEnv: N SpatiaNav robots in one loaded world, rendered in one batched call.

The world (its memory, frame bank and generator) is loaded once and shared; each sub-env is a
robot (a :class:`KinematicBase`) with its own seeded start, step count and exploration record.
A step moves every robot, then renders and generates all N views with one
:meth:`SpatiaWorld.step_clip` call (one batched scene projection, one batched generator call)
instead of N simulators each rendering one view and each holding its own copy of the world.

With the default ``projection`` generator the memory gains no geometry, so every sub-env is
exactly a :class:`SpatiaNavEnv` with the same seed (the tests compare them bit for bit, through
autoresets). With a generator that adds geometry, what one robot generates the others see.

Autoreset: gymnasium 1.x ``NEXT_STEP`` (the step after a sub-env ends returns its reset
observation, reward 0, and ignores its action). ``reset(seed=s)`` seeds sub-env ``i`` with
``s + i``, as :class:`gymnasium.vector.SyncVectorEnv` does; ``options={"world": WorldConfig}``
loads another world for all of them. One world per vector env.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from .. import render_numba
from ..config import SpatiaConfig, WorldConfig
from ..errors import InputError
from ..render import SceneProjection
from ..robot import CameraMount, KinematicBase
from ..world import SpatiaWorld
from .exploration import SCALE, SeenCells
from .nav import _one_thread, memory_state, must_reload, nav_spaces, obs_of, small_config, start_pose


class _ThreadedWorld(SpatiaWorld):
    """A world whose batched render splits the views over threads: the CPU numba kernel releases
    the GIL, and every view is rendered on its own (the output is the same as one thread's)."""

    def __init__(self, config: SpatiaConfig, threads: int):
        super().__init__(config)
        numba_cpu = self.device.type == "cpu" and self.config.render.kernel != "torch" and render_numba.AVAILABLE
        self.threads = max(1, int(threads)) if numba_cpu else 1  # the torch kernel's view cache is not thread-safe
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="spatia-render") if self.threads > 1 else None

    def render(self, poses, threads: int | None = None) -> SceneProjection:
        poses = np.asarray(poses)
        if self._pool is None or len(poses) < 2:
            return super().render(poses, threads)
        chunks = np.array_split(poses, min(self.threads, len(poses)))
        # the views are the parallel work: one thread each, not split again
        parts = list(self._pool.map(lambda p: SpatiaWorld.render(self, p, threads=1), chunks))
        return SceneProjection(*(torch.cat([getattr(p, f) for p in parts]) for f in ("rgb", "depth", "mask", "index")))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()


class SpatiaNavVectorEnv(VectorEnv):
    """``num_envs`` SpatiaNav sub-envs sharing one world; see the module docstring."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 8, width: int = 128, height: int = 96, depth: bool = False,
                 scene: bool = False, max_episode_steps: int = 100, world: WorldConfig | None = None,
                 config: SpatiaConfig | None = None, render_mode: str | None = None, render_threads: int = 1):
        """``render_threads``: threads the batched render splits its views over (0: one per CPU core, at
        most ``num_envs``); on the busy 2-core test machine more than one was not faster."""
        if int(num_envs) < 1:
            raise InputError(f"num_envs must be >= 1, got {num_envs}")
        self.num_envs = int(num_envs)
        self.config = small_config(width, height, config)
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self.world = _ThreadedWorld(self.config, render_threads or min(os.cpu_count() or 1, self.num_envs))
        self._world = world
        self._loaded = None
        s = self.config.sim
        self.bases = [KinematicBase(s.base_model, CameraMount(list(s.mount_xyz), list(s.mount_rpy)), s.max_linear,
                                    s.max_angular) for _ in range(self.num_envs)]
        self.period_s = int(round(1e9 / s.rate_hz)) * 1e-9  # as WorldSimulator
        self.single_action_space, self.single_observation_space = nav_spaces(self.config, width, height, depth, scene)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._rngs: list[np.random.Generator | None] = [None] * self.num_envs
        self._seen = [SeenCells() for _ in range(self.num_envs)]
        self._steps = np.zeros(self.num_envs, np.int64)
        self._autoreset = np.zeros(self.num_envs, bool)
        self._frame_index = 0  # frames produced, for sim.bank_every
        self._last = None  # the last clip

    # -- internals -------------------------------------------------------------------------
    def _rng(self, i: int) -> np.random.Generator:
        if self._rngs[i] is None:
            self._rngs[i], _ = seeding.np_random()
        return self._rngs[i]

    def _place(self, i: int) -> None:
        self.bases[i].set_camera_pose(start_pose(self.world, self._rng(i)))
        self._steps[i] = 0

    def _produce(self):
        """Render and generate all N views in one call; every ``sim.bank_every``-th one is fused."""
        poses = np.stack([b.camera_pose() for b in self.bases])
        remember = self._frame_index % self.config.sim.bank_every == 0
        with _one_thread():
            clip = self.world.step_clip(poses, remember=remember)
        self._frame_index += 1
        self._last = clip
        return clip

    def _obs(self, clip) -> dict:
        return {key: np.stack([obs_of(self.single_observation_space, clip.frames[i], clip.scene_depth[i],
                                      clip.scene_rgb[i])[key] for i in range(self.num_envs)])
                for key in self.single_observation_space.spaces}

    def _info(self, clip, i: int) -> dict:
        d = clip.scene_depth[i]
        return {"pose": clip.poses[i].copy(), "memory_size": len(self.world.memory),
                "coverage": float(np.count_nonzero(d) / d.size), "seen_cells": len(self._seen[i]),
                "step": int(self._steps[i])}

    def _explore(self, clip, i: int) -> int:
        return self._seen[i].add(clip.scene_depth[i], self.world.intrinsics, clip.poses[i])

    # -- gymnasium -------------------------------------------------------------------------
    def reset(self, *, seed: int | list | None = None, options: dict | None = None):
        if seed is None:
            seeds = [None] * self.num_envs
        elif isinstance(seed, (int, np.integer)):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise InputError(f"reset got {len(seeds)} seeds for {self.num_envs} envs")
        for i, s in enumerate(seeds):
            if s is not None:
                self._rngs[i], _ = seeding.np_random(s)
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seeds[0])
        world = (options or {}).get("world", self._world)
        if must_reload(self.world, self._loaded, world):
            with _one_thread():
                self.world.reset(world)
            self._loaded = (world, memory_state(self.world))
        for i in range(self.num_envs):
            self._place(i)
        clip = self._produce()
        infos: dict = {}
        for i in range(self.num_envs):
            self._seen[i].reset()
            self._explore(clip, i)
            infos = self._add_info(infos, self._info(clip, i), i)
        self._autoreset[:] = False
        return self._obs(clip), infos

    def step(self, actions):
        a = np.asarray(actions, np.float64).reshape(self.num_envs, -1)
        if a.shape[1] != 3:
            raise InputError(f"actions must be ({self.num_envs}, 3) twists (vx, vy, wz), got {np.shape(actions)}")
        a = np.clip(a, self.single_action_space.low, self.single_action_space.high)
        restarting = self._autoreset.copy()
        for i, base in enumerate(self.bases):
            if restarting[i]:
                self._place(i)
            else:
                base.step(base.check_twist(*a[i]), self.period_s)
                self._steps[i] += 1
        clip = self._produce()
        rewards = np.zeros(self.num_envs, np.float64)
        truncated = np.zeros(self.num_envs, bool)
        infos: dict = {}
        for i in range(self.num_envs):
            if restarting[i]:
                self._seen[i].reset()
                self._explore(clip, i)
            else:
                rewards[i] = self._explore(clip, i) / SCALE
                truncated[i] = self._steps[i] >= self.max_episode_steps
            infos = self._add_info(infos, self._info(clip, i), i)
        terminated = np.zeros(self.num_envs, bool)
        self._autoreset = terminated | truncated
        return self._obs(clip), rewards, terminated, truncated, infos

    def render(self):
        """The last RGB frame of every sub-env (a tuple, as SyncVectorEnv), or None before a reset."""
        return None if self._last is None else tuple(self._last.frames)

    def close_extras(self, **kwargs) -> None:
        self.world.close()
