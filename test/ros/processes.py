"""Start and stop our ROS programs as real processes for the DDS tests."""

import subprocess
import sys
import signal
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

try:
    import rclpy  # noqa: F401  (only whether it imports)
    RCLPY_MISSING = ""
except ImportError as exc:
    RCLPY_MISSING = f"rclpy is not importable ({exc}); run scripts/setup.sh"


def start_module(args, log_path, ready, timeout=90, env=None, cwd=None):
    """``python -m args...`` with output in ``log_path``; waits until the log contains ``ready``."""
    log = open(log_path, "w+")
    proc = subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=cwd)
    deadline = time.monotonic() + timeout
    while ready not in Path(log_path).read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            log.close()
            pytest.fail(f"{args[0]} did not start:\n" + Path(log_path).read_text()[-3000:])
        time.sleep(0.1)
    proc.log, proc.log_path = log, Path(log_path)
    return proc


def stop(proc, sig, timeout=20):
    """Send ``sig``, wait (kill after ``timeout`` s); returns the exit code (None if killed)."""
    proc.send_signal(sig)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        rc = None
    proc.log.close()
    return rc


def start_world_sim(tmp, log_name, width, height, voxel_size, use_sim_time=True, world_dirs=(), extra_args=(),
                    env=None, cwd=None, **sim):
    """world_sim with a small camera and ``sim.*`` parameters (``map_dir`` inside ``tmp``; ``reset_world``
    may read ``tmp`` and ``world_dirs``), stamping in sim time unless ``use_sim_time`` is false."""
    sim = {"map_dir": str(Path(tmp) / "maps"), **sim}  # map_dir=None: the node's default
    params = Path(tmp) / "params.yaml"
    dirs = ", ".join(repr(str(d)) for d in [tmp, *world_dirs])
    params.write_text("world_sim:\n  ros__parameters:\n"
                      f"    use_sim_time: {'true' if use_sim_time else 'false'}\n"
                      f"    world_dirs: [{dirs}]\n"
                      f"    camera: {{width: {width}, height: {height}}}\n"
                      f"    memory: {{voxel_size: {voxel_size}}}\n"
                      "    sim: {" + ", ".join(f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}"
                                           for k, v in sim.items() if v is not None) + "}\n")
    return start_module(["spatia_ros.world_sim_node", "--ros-args", "--params-file", str(params), *extra_args],
                        Path(tmp) / log_name, "world_sim ready", env=env, cwd=cwd)


@contextmanager
def running_world_sim(tmp, log_name, width, height, voxel_size, **kwargs):
    """:func:`start_world_sim` as a context: yields the process (``proc.tmp`` = ``tmp``, with a
    ``maps`` folder) and stops it with SIGTERM on exit."""
    (Path(tmp) / "maps").mkdir(exist_ok=True)
    proc = start_world_sim(tmp, log_name, width, height, voxel_size, **kwargs)
    proc.tmp = tmp
    try:
        yield proc
    finally:
        stop(proc, signal.SIGTERM)


def pids_where(field: str, value: int) -> list[int]:
    """Live (non-zombie) processes whose ``/proc/PID/stat`` field ``ppid`` or ``pgrp`` equals ``value``."""
    index = {"ppid": 1, "pgrp": 2}[field]
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[index]) == value and fields[0] != "Z":
                pids.append(int(entry.name))
    return pids
