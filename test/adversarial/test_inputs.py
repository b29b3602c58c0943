"""Hostile inputs (issue 13 rows 9, 10, 11, 14): config values no component accepts, huge sizes,
symlinks out of the map folder, and CLI inputs that gave tracebacks instead of one line."""

from __future__ import annotations

import math
import os
import random
import resource
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from spatia_core.config import SpatiaConfig
from spatia_core.errors import FileFormatError, InputError

from kill_drivers import REPO


# -- row 9 and the values the config should refuse ------------------------------------------------
@pytest.mark.parametrize("override", [
    "camera.intrinsics=[a,b,c,d]", "world.intrinsics=[1,2,x,4]", "sim.mount_xyz=abc", "sim.mount_rpy=[0,0,.nan]",
    "world.source=nonsense", "update.depth=bogus", "update.pose_refine=magic", "update.dynamics=all",
    "generator.backend=gpt", "render.near=-1", "render.near=0", "memory.block_size=0", "memory.max_weight=0",
    "retrieval.epsilon=5", "retrieval.epsilon=-0.1", "sim.max_linear=.nan", "sim.max_linear=-1",
    "sim.max_angular=.inf", "sim.max_angular=0", "sim.cmd_timeout=-1", "sim.max_input_rate_hz=0",
    "sim.cloud_rate_hz=0", "sim.rate_hz=1e9", "camera.width=100000", "camera.intrinsics=[0,500,320,240]",
    "world.depth_scale=0", "world.frames=[1.5]", "device=cuda:x", "device=gpu", "memory.voxel_size=.nan",
    "sim.map_dir=[a]",
])
def test_config_refuses_values_no_component_accepts(override):
    with pytest.raises(InputError):
        SpatiaConfig().with_overrides([override])


@pytest.mark.parametrize("key,value", [("sim.max_linear", math.nan), ("sim.max_linear", -2.0), ("sim.max_angular", math.inf),
                                       ("sim.cmd_timeout", -0.5), ("sim.max_input_rate_hz", 0.0), ("sim.cloud_rate_hz", -1.0)])
def test_dynamic_parameter_values_are_refused(key, value):
    """What the node's set-parameters callback passes (``with_overrides`` of a dict)."""
    with pytest.raises(InputError):
        SpatiaConfig().with_overrides({key: value})


def test_config_still_accepts_good_values():
    cfg = SpatiaConfig().with_overrides(["memory.voxel_size=1e-3", "sim.mount_xyz=[0, 0, 1]", "world.frames=[1, 2]",
                                         "camera.intrinsics=[500,500,320,240]", "sim.cmd_timeout=0", "device=cuda:1"])
    assert cfg.memory.voxel_size == 0.001 and cfg.sim.mount_xyz == [0.0, 0.0, 1.0] and cfg.world.frames == [1, 2]
    assert SpatiaConfig.from_yaml(REPO / "config" / "world_sim.yaml").sim.rate_hz > 0


# -- row 10: sizes that would allocate without bound --------------------------------------------------
MEMORY_CAP = 8 << 30  # address space of the processes under test: a regression fails, it does not eat the machine


def _capped():
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))


def _cli(*args, timeout=120):
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "spatia_core.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, preexec_fn=_capped)
    return proc, time.perf_counter() - t0


def _one_line_error(proc):
    lines = proc.stderr.strip().splitlines()
    return proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("spatia: error:") and "Traceback" not in proc.stderr


@pytest.mark.parametrize("args", [["--frames", "2000000000"], ["--width", "100000"], ["--frames", "0"]],
                         ids=["frames", "width", "zero-frames"])
def test_huge_sizes_are_refused_before_allocating(tmp_path, args):
    proc, _ = _cli("generate", "--world", "builtin", "--trajectory", "loop", "--no-progress", "--out",
                   str(tmp_path / "o"), *args)
    assert _one_line_error(proc), proc.stderr[-2000:]
    assert not (tmp_path / "o").exists()


def test_trajectory_generators_refuse_huge_lengths():
    code = ("import numpy as np\nfrom spatia_core import trajectories as tr\nfrom spatia_core.errors import InputError\n"
            "try:\n    tr.load_trajectory('loop', np.eye(4), 2_000_000_000)\nexcept InputError:\n    print('refused')\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                          preexec_fn=_capped)  # in a capped process: a regression must not take the machine down
    assert proc.stdout.strip() == "refused", proc.stderr[-2000:]


# -- row 14: one line, exit status 2, for inputs that gave tracebacks -----------------------------
BASE = ["generate", "--world", "builtin", "--trajectory", "loop", "--frames", "2", "--width", "32", "--height", "24",
        "--no-progress"]


@pytest.mark.parametrize("extra", [
    ["--set", "memory.voxel_size=[1,2"], ["--set", "generator.prompt={a: [b"], ["--fps", "-3"], ["--fps", "nan"],
    ["--world-intrinsics", "a,b,c,d"], ["--world-intrinsics", "1,2,3"], ["--set", "device=cuda:7"], ["OUT_IS_FILE"],
    ["--out", "/proc/no/such/place"], ["--config", "BROKEN_YAML"],
], ids=["yaml-set", "yaml-flow", "fps-negative", "fps-nan", "intrinsics-words", "intrinsics-three", "device",
        "out-file", "out-unwritable", "config-yaml"])
def test_bad_cli_inputs_give_one_line(tmp_path, extra):
    if extra == ["--set", "device=cuda:7"]:
        import torch

        if torch.cuda.is_available() and torch.cuda.device_count() > 7:
            pytest.skip("this machine has a cuda:7")
    out = ["--out", str(tmp_path / "o")]
    if extra == ["OUT_IS_FILE"]:
        (tmp_path / "f").write_text("x")
        extra, out = [], ["--out", str(tmp_path / "f")]
    elif extra == ["--config", "BROKEN_YAML"]:
        (tmp_path / "c.yaml").write_text("memory: {voxel_size: [0.01\n")
        extra = ["--config", str(tmp_path / "c.yaml")]
    elif extra[0] == "--out":
        out = []
    proc, _ = _cli(*BASE, *out, *extra)
    assert _one_line_error(proc), proc.stderr[-2000:]


def _corrupt_bags(tmp_path, storage, count=40):
    sys.path.insert(0, str(REPO / "test" / "core"))
    from test_bags import write_bag

    good = write_bag(tmp_path / "good", storage, "pose")
    data_file = next(p for p in good.iterdir() if p.name != "metadata.yaml")
    data = data_file.read_bytes()
    rng = random.Random(7)
    for i in range(count):
        bag = tmp_path / f"bad{i}"
        shutil.copytree(good, bag)
        buf = bytearray(data)
        for _ in range(rng.randint(1, 8)):
            buf[rng.randrange(8, len(buf) - 8)] = rng.randrange(256)
        if i % 5 == 0:
            buf = buf[: rng.randrange(8, len(buf))]
        (bag / data_file.name).write_bytes(bytes(buf))
        yield bag


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_corrupt_bag_bytes_are_a_file_format_error(tmp_path, storage):
    from spatia_core.bags import read_camera_path

    outcomes = {"read": 0, "refused": 0}
    for bag in _corrupt_bags(tmp_path, storage):
        try:
            read_camera_path(bag)
            outcomes["read"] += 1
        except (FileFormatError, InputError):
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0, outcomes  # anything else escaped as a traceback above


def test_cli_replay_of_a_corrupt_bag_is_one_line(tmp_path):
    from spatia_core.bags import read_camera_path

    for bag in _corrupt_bags(tmp_path, "mcap", count=40):  # the first that does not read
        try:
            read_camera_path(bag)
        except (FileFormatError, InputError):
            break
    proc, _ = _cli("replay", str(bag), "--out", str(tmp_path / "out"), "--no-progress")
    assert _one_line_error(proc), proc.stderr[-2000:]


# -- row 11: symlinks in sim.map_dir that lead outside are refused like any outside name ------------
@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    from spatia_core.simulator import WorldSimulator

    root = tmp_path_factory.mktemp("confined")
    (root / "maps").mkdir()
    cfg = SpatiaConfig().with_overrides({"camera.width": 64, "camera.height": 48, "memory.voxel_size": 0.05,
                                         "sim.map_dir": str(root / "maps")})
    return WorldSimulator(cfg)


def test_symlinks_out_of_the_map_dir_are_refused(sim):
    from spatia_core.memory import save_ply

    maps = sim.map_dir
    outside = maps.parent / "secret.ply"
    save_ply(sim.world.memory, outside)
    os.symlink(outside, maps / "evil.ply")
    os.symlink(maps.parent / "does_not_exist.ply", maps / "ghost.ply")
    os.symlink(maps.parent, maps / "up")
    before = len(sim.world.memory)
    messages = []
    for name in ("evil.ply", "ghost.ply", "../secret.ply"):
        with pytest.raises(InputError) as err:
            sim.load_map(name)
        messages.append(str(err.value).replace(repr(name), "NAME"))
        with pytest.raises(InputError):
            sim.edit("add_ply", filename=name, object_pose=np.eye(4))
    with pytest.raises(InputError):
        sim.save_map("evil.ply")
    assert len(set(messages)) == 1, messages  # the same answer whether or not the outside file exists
    assert len(sim.world.memory) == before and outside.is_file()


def test_symlinks_inside_the_map_dir_still_work(sim):
    sim.save_map("real.ply")
    os.symlink(sim.map_dir / "real.ply", sim.map_dir / "alias.ply")
    assert sim.load_map("alias.ply") == sim.map_dir / "real.ply"


# -- lazy package: the error types load no heavy library -------------------------------------------
def test_importing_errors_loads_no_heavy_library():
    code = ("import sys, time; t = time.perf_counter(); import spatia_core.errors, spatia_core.config; "
            "print(time.perf_counter() - t, [m for m in ('torch', 'numba', 'cv2', 'scipy', 'open3d') if m in sys.modules])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    seconds, loaded = proc.stdout.split(" ", 1)
    assert loaded.strip() == "[]", proc.stdout
    from spatia_core import SpatiaWorld, look_at  # the public names still resolve

    assert callable(look_at) and SpatiaWorld.__name__ == "SpatiaWorld"
