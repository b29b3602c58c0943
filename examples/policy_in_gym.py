"""A policy driving SpatiaNav-v0, as a Gymnasium env and as a vector env (no ROS needed).

    .venv/bin/python examples/policy_in_gym.py [--steps 50] [--n 4]
"""

import argparse

import gymnasium as gym
import numpy as np

import spatia_core.envs  # noqa: F401  (registers SpatiaNav-v0)
from spatia_core.rollout_policies import forward_turn, random_walk

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--steps", type=int, default=50)
ap.add_argument("--n", type=int, default=4, help="sub-envs of the vector env")
args = ap.parse_args()

# One env: a policy is any callable obs -> twist (vx, vy, wz).
env = gym.make("SpatiaNav-v0", depth=True, max_episode_steps=args.steps)
obs, info = env.reset(seed=0)
total, done = 0.0, False
while not done:
    obs, reward, terminated, truncated, info = env.step(forward_turn(obs))
    total += reward
    done = terminated or truncated
print(f"one env: return {total:.2f} after {info['step']} steps, {info['seen_cells']} cells seen, "
      f"camera at {np.round(info['pose'][:3, 3], 2)}")
env.close()

# N robots in one world, their views rendered in one batched call per step.
envs = gym.make_vec("SpatiaNav-v0", num_envs=args.n, vectorization_mode="vector_entry_point", max_episode_steps=args.steps)
policies = [random_walk(action_space=envs.single_action_space, seed=i) for i in range(args.n)]
obs, infos = envs.reset(seed=0)
returns = np.zeros(args.n)
for _ in range(args.steps):
    actions = np.stack([p({k: v[i] for k, v in obs.items()}) for i, p in enumerate(policies)])
    obs, rewards, terminated, truncated, infos = envs.step(actions)
    returns += rewards
print(f"vector env ({args.n} robots): returns {np.round(returns, 2)}, obs['rgb'] {obs['rgb'].shape}")
envs.close()
