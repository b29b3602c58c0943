"""SpatiaNav-v0 on the built-in room: gymnasium's checker, seeded resets, actions move the camera."""

import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)

gym = _prereq.require_module("gymnasium", "gymnasium is not installed (requirements.txt)")
from gymnasium.utils.env_checker import check_env  # noqa: E402

import spatia_core.envs  # noqa: E402,F401  (registers SpatiaNav-v0)
from spatia_core.envs import SpatiaNavEnv  # noqa: E402


@pytest.fixture(scope="module")
def env():
    e = SpatiaNavEnv(depth=True, scene=True, max_episode_steps=5, render_mode="rgb_array")
    yield e
    e.close()


def test_check_env_passes(env):
    check_env(env, skip_render_check=False)


def test_registered_id_makes_the_env():
    e = gym.make("SpatiaNav-v0", max_episode_steps=3)
    obs, info = e.reset(seed=0)
    assert obs["rgb"].shape == (96, 128, 3) and obs["rgb"].dtype == np.uint8
    assert {"pose", "coverage", "memory_size"} <= set(info)
    e.close()


def test_seeded_reset_is_deterministic_and_seeds_differ(env):
    a, ia = env.reset(seed=7)
    b, ib = env.reset(seed=7)
    c, ic = env.reset(seed=8)
    assert np.array_equal(a["rgb"], b["rgb"]) and np.array_equal(ia["pose"], ib["pose"])
    assert not np.allclose(ia["pose"], ic["pose"])
    assert ia["pose"][2, 3] == pytest.approx(ic["pose"][2, 3])  # same height: only the yaw is random


def test_action_moves_camera_and_truncates(env):
    _, info = env.reset(seed=1)
    start = info["pose"]
    for i in range(5):
        obs, reward, terminated, truncated, info = env.step(np.array([0.5, 0.0, 0.0], np.float32))
        assert not terminated and truncated == (i == 4)
    moved = np.linalg.norm(info["pose"][:3, 3] - start[:3, 3])
    assert moved == pytest.approx(5 * 0.5 / env.config.sim.rate_hz, rel=1e-3)
    assert env.render().shape == obs["rgb"].shape


# -- the vector env --------------------------------------------------------------------------
import importlib.util  # noqa: E402
from pathlib import Path  # noqa: E402

from gymnasium.utils.env_checker import data_equivalence  # noqa: E402
from gymnasium.vector import AutoresetMode  # noqa: E402
from gymnasium.vector.utils import batch_space  # noqa: E402

from spatia_core.config import SpatiaConfig  # noqa: E402
from spatia_core.envs import SpatiaNavVectorEnv  # noqa: E402

SMALL_WORLD = SpatiaConfig().with_overrides({"memory.voxel_size": 0.04})  # the built-in room, 16x fewer voxels


def check_vector_env(env, seed: int = 3, steps: int = 4) -> None:
    """What gymnasium 1.2.2 checks for vector envs (it has no check_vector_env): batched spaces,
    autoreset metadata, observations in their space, seeded resets reproducible, step output types."""
    n = env.num_envs
    assert env.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    assert env.observation_space == batch_space(env.single_observation_space, n)
    assert env.action_space == batch_space(env.single_action_space, n)
    obs, info = env.reset(seed=seed)
    assert env.observation_space.contains(obs), "reset observation outside observation_space"
    obs2, info2 = env.reset(seed=seed)
    assert data_equivalence(obs, obs2, exact=True) and data_equivalence(info, info2, exact=True)
    env.action_space.seed(seed)
    for _ in range(steps):
        obs, rew, term, trunc, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs)
        assert rew.shape == (n,) and rew.dtype == np.float64
        assert term.shape == trunc.shape == (n,) and term.dtype == trunc.dtype == np.bool_
        assert info["pose"].shape == (n, 4, 4) and info["_pose"].all()
    frames = env.render()
    assert len(frames) == n and frames[0].shape == env.single_observation_space["rgb"].shape


def test_vector_env_passes_the_vector_checks():
    env = gym.make_vec("SpatiaNav-v0", num_envs=3, vectorization_mode="vector_entry_point", config=SMALL_WORLD,
                       depth=True, scene=True, max_episode_steps=3)
    assert isinstance(env.unwrapped, SpatiaNavVectorEnv)
    check_vector_env(env)
    env.close()


def test_vector_env_equals_single_envs_through_autoreset():
    """One batched render per step gives what N separate simulators give, bit for bit, with the
    same seeds, across NEXT_STEP autoresets (gymnasium's SyncVectorEnv of single envs as reference)."""
    n, kw = 3, dict(config=SMALL_WORLD, depth=True, scene=True, max_episode_steps=3)
    venv = SpatiaNavVectorEnv(n, render_threads=2, **kw)  # the batch's views split over threads: the same output
    assert venv.world.threads == 2
    sync = gym.vector.SyncVectorEnv([lambda: SpatiaNavEnv(**kw) for _ in range(n)])
    a, b = venv.reset(seed=11), sync.reset(seed=11)
    assert data_equivalence(a, b, exact=True)
    assert len({tuple(p.ravel()) for p in a[1]["pose"]}) == n  # the seeds give different starts
    rng = np.random.default_rng(0)
    truncations = 0
    for _ in range(8):
        action = (rng.uniform(-1, 1, (n, 3)) * [0.6, 0.0, 1.5]).astype(np.float32)
        a, b = venv.step(action), sync.step(action)
        for x, y, what in zip(a, b, ("obs", "reward", "terminated", "truncated", "info")):
            assert data_equivalence(x, y, exact=True), what
        truncations += int(a[3].sum())
    assert truncations == 2 * n  # steps 3 and 7 end the episodes; steps 4 and 8 are the autoresets
    assert np.all(a[1] == 0) and a[0]["rgb"].any()  # an autoreset step: reward 0, a real image
    venv.close()
    sync.close()


def test_vector_env_loads_the_world_once():
    venv = SpatiaNavVectorEnv(4, config=SMALL_WORLD, max_episode_steps=2)
    venv.reset(seed=0)
    memory = venv.world.memory
    for _ in range(3):  # through an autoreset
        venv.step(np.zeros((4, 3), np.float32))
    venv.reset(seed=1)
    assert venv.world.memory is memory  # nothing changed it: the reset reused it
    venv.close()


def test_vector_benchmark_smoke(tmp_path):
    path = Path(__file__).resolve().parents[2] / "bench" / "bench_vector_env.py"
    spec = importlib.util.spec_from_file_location("bench_vector_env", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    res = bench.main(["--n", "2", "--steps", "3", "--voxel", "0.04", "--width", "48", "--height", "32",
                      "--json", str(tmp_path / "b.json")])
    assert res["n"] == 2 and res["vector_steps_per_s"] > 0 and res["single_loop_steps_per_s"] > 0
    assert res["ratio_vector_over_loop"] > 0 and "after_timing" in res["loadavg"]


def test_vector_env_world_option_and_bad_actions():
    from spatia_core.config import WorldConfig
    from spatia_core.errors import InputError

    venv = SpatiaNavVectorEnv(2, config=SMALL_WORLD, max_episode_steps=5)
    a, _ = venv.reset(seed=0)
    memory = venv.world.memory
    b, _ = venv.reset(seed=0, options={"world": WorldConfig(seed=1)})  # another procedural room for both robots
    assert venv.world.memory is not memory and not np.array_equal(a["rgb"], b["rgb"])
    with pytest.raises(InputError, match="twists"):
        venv.step(np.zeros((2, 2), np.float32))
    with pytest.raises(InputError, match="seeds"):
        venv.reset(seed=[1, 2, 3])
    venv.close()
