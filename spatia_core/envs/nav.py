"""SpatiaNav-v0: drive the simulator's kinematic base with a body twist, observe the camera.

Observation: Dict with "rgb" (uint8 HxWx3) and, by constructor flags, "depth" (float32 HxWx1,
metres, 0 = unknown) and "scene" (uint8 HxWx3 scene projection). Action: twist (vx, vy, wz)
within ``sim.max_linear`` / ``sim.max_angular``. Reward: exploration, the map cells (0.25 m)
first seen in the episode / 100 (:mod:`.exploration`). Truncation after ``max_episode_steps``;
never terminates. ``info``: ``pose`` (c2w 4x4), ``coverage`` (share of pixels the memory
covers), ``memory_size`` (voxels), ``seen_cells``, ``step``.

Torch runs single-threaded inside reset/step so that seeded episodes are bit-reproducible
(the memory's multi-threaded CPU fusion is not).

Start pose rule: the world's own start pose (free space by construction), turned about the
vertical (map z) axis by a seeded random yaw, so a seeded start never lies inside a wall.

``reset`` reloads the world only when it has to: another world is asked for, the memory changed
since it was loaded, or the generator keeps history between frames (the ``spatia`` backend).
With the default ``projection`` generator the memory never gains geometry, so a reset reuses it.
"""

from __future__ import annotations

import contextlib

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from ..config import SpatiaConfig, WorldConfig
from ..simulator import WorldSimulator
from .exploration import SCALE, SeenCells


def small_config(width: int = 128, height: int = 96, config: SpatiaConfig | None = None) -> SpatiaConfig:
    """``config`` (default: the built-in room) at a small camera size, velocity commands never expiring."""
    cfg = config or SpatiaConfig()
    return cfg.with_overrides({"camera.width": width, "camera.height": height, "sim.cmd_timeout": 0.0})


def nav_spaces(config: SpatiaConfig, width: int, height: int, depth: bool, scene: bool) -> tuple[spaces.Box, spaces.Dict]:
    """The action space (body twist) and observation space of one SpatiaNav env."""
    s = config.sim
    action = spaces.Box(np.array([-s.max_linear, -s.max_linear, -s.max_angular], np.float32),
                        np.array([s.max_linear, s.max_linear, s.max_angular], np.float32), dtype=np.float32)
    obs = {"rgb": spaces.Box(0, 255, (height, width, 3), np.uint8)}
    if depth:
        obs["depth"] = spaces.Box(0.0, np.inf, (height, width, 1), np.float32)
    if scene:
        obs["scene"] = spaces.Box(0, 255, (height, width, 3), np.uint8)
    return action, spaces.Dict(obs)


@contextlib.contextmanager
def _one_thread():
    """Torch on one thread: the memory's CPU fusion is only bit-reproducible single-threaded."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _yaw(pose: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    rot = np.eye(4)
    rot[:2, :2] = [[c, -s], [s, c]]
    out = pose.copy()
    out[:3, :3] = rot[:3, :3] @ pose[:3, :3]
    return out


def start_pose(world, rng: np.random.Generator) -> np.ndarray:
    """The world's start pose turned by a random yaw drawn from ``rng`` (see the module docstring)."""
    return _yaw(world.init.start_pose, float(rng.uniform(-np.pi, np.pi)))


def memory_state(world) -> tuple:
    """What identifies the memory's content: a new memory or any write changes it (torch's
    in-place version counters; marking voxels observed does not write their points)."""
    m = world.memory
    return (id(m), len(m), m.xyz.data_ptr(), m.xyz._version, m.rgb.data_ptr(), m.rgb._version)


def must_reload(world, loaded: tuple | None, wanted: WorldConfig | None) -> bool:
    """Whether a reset has to load the world again (see the module docstring)."""
    if loaded is None or world.init is None or loaded[0] != wanted:
        return True
    return loaded[1] != memory_state(world) or getattr(world.generator, "name", "") != "projection"


def obs_of(space: spaces.Dict, rgb, depth, scene) -> dict:
    out = {"rgb": rgb}
    if "depth" in space.spaces:
        out["depth"] = depth.astype(np.float32)[..., None]
    if "scene" in space.spaces:
        out["scene"] = scene
    return out


class SpatiaNavEnv(gym.Env):
    """One simulated world; see the module docstring for spaces, reward and start poses."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 30}

    def __init__(self, width: int = 128, height: int = 96, depth: bool = False, scene: bool = False,
                 max_episode_steps: int = 100, world: WorldConfig | None = None,
                 config: SpatiaConfig | None = None, render_mode: str | None = None):
        self.config = small_config(width, height, config)
        self.render_mode = render_mode
        self.max_episode_steps = max_episode_steps
        self.sim = WorldSimulator(self.config)
        self._world = world
        self._loaded = (None, memory_state(self.sim.world)) if world is None else None  # the simulator loaded config.world
        self.action_space, self.observation_space = nav_spaces(self.config, width, height, depth, scene)
        self._frame = None
        self._steps = 0
        self._seen = SeenCells()

    def _obs(self, frame) -> dict:
        return obs_of(self.observation_space, frame.rgb, frame.depth, frame.scene_rgb)

    def _info(self, frame) -> dict:
        return {"pose": frame.camera_pose.copy(), "memory_size": len(self.sim.world.memory),
                "coverage": float(np.count_nonzero(frame.depth) / frame.depth.size), "seen_cells": len(self._seen),
                "step": self._steps}

    def _explore(self, frame) -> int:
        return self._seen.add(frame.depth, self.sim.world.intrinsics, frame.camera_pose)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        world = (options or {}).get("world", self._world)
        with _one_thread():
            if must_reload(self.sim.world, self._loaded, world):
                self.sim.reset(world)
                self._loaded = (world, memory_state(self.sim.world))
            self.sim.command_velocity(0.0, 0.0, 0.0)
            self.sim.place_camera(start_pose(self.sim.world, self.np_random))
            self._steps = 0
            self._frame = self.sim.step()
        self._seen.reset()
        self._explore(self._frame)
        return self._obs(self._frame), self._info(self._frame)

    def step(self, action):
        a = np.clip(np.asarray(action, np.float64), self.action_space.low, self.action_space.high)
        self.sim.command_velocity(*a)
        with _one_thread():
            self._frame = self.sim.step()
        self._steps += 1
        reward = self._explore(self._frame) / SCALE
        return self._obs(self._frame), float(reward), False, self._steps >= self.max_episode_steps, self._info(self._frame)

    def render(self):
        return None if self._frame is None else self._frame.rgb
