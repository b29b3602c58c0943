"""spatia-sim: start the simulator without ``ros2 launch`` (pip-only installs).

    spatia-sim [--params config/world_sim.yaml] [--set sim.rate_hz=15 ...]
               [--demo] [--record out/session] [--duration 30]

Runs ``world_sim`` (and with ``--demo`` the demo driver, with ``--record`` the session
recorder) as separate processes from the same parameter file ``ros2 launch`` uses, waits for
``--duration`` seconds of wall time (or Ctrl-C, SIGTERM, SIGHUP), then stops them, the recorder
first so that its bag is closed cleanly. The children also get SIGTERM if ``spatia-sim`` itself
dies (``PR_SET_PDEATHSIG``), so none outlives it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml


def _ros_value(text: str) -> str:
    """``key=value`` override -> ``key:=value`` ROS argument (value kept as YAML)."""
    key, _, value = text.partition("=")
    if not key or not _:
        raise SystemExit(f"spatia-sim: error: override {text!r} must look like section.key=value")
    return f"{key.strip()}:={value.strip()}"


class _Stop(Exception):
    """A stop signal (SIGINT, SIGTERM, SIGHUP) arrived."""


def _on_signal(signum, _frame):
    raise _Stop(signal.Signals(signum).name)


def _child_setup() -> None:
    """In the child before exec: default signal handling (a background shell ignores SIGINT, and
    children inherit that), and SIGTERM when the parent dies."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _start(args: list[str], name: str, log_dir: Path) -> subprocess.Popen:
    log = open(log_dir / f"{name}.log", "w")
    return subprocess.Popen([sys.executable, "-m", *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            preexec_fn=_child_setup)


def _stop(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    import spatia_ros
    from spatia_ros.ros_env import share_dir

    p = argparse.ArgumentParser(prog="spatia-sim", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--params", default=os.path.join(share_dir(), "config", "world_sim.yaml"), help="ROS parameter file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a parameter")
    p.add_argument("--demo", action="store_true", help="drive the robot along the demo path")
    p.add_argument("--record", default="", help="record the session to this MCAP bag folder")
    p.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (0: until Ctrl-C)")
    p.add_argument("--logs", default="out/logs", help="folder for the processes' logs")
    args = p.parse_args(argv)
    del spatia_ros
    if args.demo:  # the demo is self-contained: its nodes' DDS traffic stays on this machine
        os.environ.setdefault("SPATIA_DDS_PROFILE", "loopback")  # read by each child's ros_env
    if not Path(args.params).is_file():
        print(f"spatia-sim: error: no parameter file {args.params}", file=sys.stderr)
        return 2
    try:
        yaml.safe_load(Path(args.params).read_text())
    except yaml.YAMLError as exc:
        print(f"spatia-sim: error: {args.params} is not valid YAML: {exc}", file=sys.stderr)
        return 2
    if args.record and Path(args.record).exists():
        print(f"spatia-sim: error: {args.record} exists; choose a new bag folder", file=sys.stderr)
        return 2
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    # handled explicitly: Python leaves SIGINT ignored when started in the background, and SIGTERM / SIGHUP
    # would end this process without stopping the children
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    procs: dict[str, subprocess.Popen] = {}
    try:
        return _run(args, logs, procs)
    except _Stop as stop:
        print(f"spatia-sim: {stop}: stopping", file=sys.stderr)
        return 0
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)  # stopping the children is not interrupted
        for name in ("recorder", "demo_driver", "world_sim"):
            if name in procs:
                _stop(procs[name])
        if args.record and Path(args.record, "metadata.yaml").is_file():
            meta = yaml.safe_load(Path(args.record, "metadata.yaml").read_text())["rosbag2_bagfile_information"]
            print(f"spatia-sim: recorded {meta['message_count']} messages to {args.record}")


def _run(args, logs: Path, procs: dict) -> int:
    """Start the processes into ``procs`` and wait; the caller stops them."""
    ros_args = ["--ros-args", "--params-file", args.params, "-p", "use_sim_time:=true"]
    for item in args.set:
        ros_args += ["-p", _ros_value(item)]
    procs["world_sim"] = _start(["spatia_ros.world_sim_node", *ros_args], "world_sim", logs)
    print(f"spatia-sim: world_sim starting (log: {logs / 'world_sim.log'})")
    deadline = time.monotonic() + 120
    while "world_sim ready" not in (logs / "world_sim.log").read_text():
        if procs["world_sim"].poll() is not None or time.monotonic() > deadline:
            print("spatia-sim: error: world_sim did not start:\n" + (logs / "world_sim.log").read_text()[-2000:], file=sys.stderr)
            return 1
        time.sleep(0.2)
    print("spatia-sim: world_sim ready")
    if args.record:
        procs["recorder"] = _start(["spatia_ros.recorder_node", "--ros-args", "-p", f"output:={args.record}",
                                    "-p", "use_sim_time:=true"], "recorder", logs)
        print(f"spatia-sim: recording to {args.record}")
    if args.demo:
        procs["demo_driver"] = _start(["spatia_ros.demo_driver", "--ros-args", "-p", "use_sim_time:=true"], "demo_driver", logs)
        print("spatia-sim: demo driver started (look around, then a circle)")
    end = time.monotonic() + args.duration if args.duration > 0 else float("inf")
    while time.monotonic() < end:
        dead = [n for n, pr in procs.items() if pr.poll() is not None]
        if dead:
            print(f"spatia-sim: {', '.join(dead)} exited; see {logs}", file=sys.stderr)
            return 1
        time.sleep(0.2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
