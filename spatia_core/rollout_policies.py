"""Built-in example policies for ``spatia rollout`` and the SpatiaNav envs (see :mod:`spatia_core.rollout`)."""

from __future__ import annotations

import numpy as np

from .rollout import policy_factory


@policy_factory
def random_walk(action_space, seed: int | None = None, smoothing: float = 0.8):
    """A seeded random walk: each twist is ``smoothing`` of the last plus a fresh sample of the rest."""
    rng = np.random.default_rng(seed)
    low, high = np.asarray(action_space.low, np.float64), np.asarray(action_space.high, np.float64)
    state = np.zeros_like(low)

    def policy(obs) -> np.ndarray:
        nonlocal state
        state = smoothing * state + (1 - smoothing) * rng.uniform(low, high) * 0.5
        return state.astype(np.float32)

    return policy


def forward_turn(obs) -> np.ndarray:
    """Drive forward on a gentle arc; turn on the spot when the depth ahead (if observed) is under 0.8 m."""
    depth = obs.get("depth") if isinstance(obs, dict) else None
    if depth is not None:
        h, w = depth.shape[:2]
        ahead = depth[h // 3: 2 * h // 3, w // 3: 2 * w // 3]
        ahead = ahead[ahead > 0]
        if ahead.size and float(np.median(ahead)) < 0.8:
            return np.array([0.0, 0.0, 1.0], np.float32)
    return np.array([0.5, 0.0, 0.3], np.float32)
