"""spatia-sim as a launcher: every stop signal stops its children (issue 12 item 11)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)

from processes import RCLPY_MISSING, pids_where

pytestmark = _prereq.mark(RCLPY_MISSING, RCLPY_MISSING)


def _children(pid):
    """Pids whose parent is ``pid``."""
    return pids_where("ppid", pid)


def _alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait(predicate, timeout):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.1)
    return predicate()


@pytest.mark.parametrize("sig, ignore_sigint", [(signal.SIGTERM, False), (signal.SIGHUP, False), (signal.SIGINT, True)])
def test_stop_signal_stops_the_children(tmp_path, sig, ignore_sigint):
    """SIGTERM / SIGHUP used to kill spatia-sim alone (children left running with parent 1); SIGINT
    was ignored when it started in the background (a non-interactive shell's ``cmd &`` ignores it)."""
    params = tmp_path / "params.yaml"
    params.write_text("world_sim:\n  ros__parameters:\n    camera: {width: 32, height: 24}\n"
                      f"    memory: {{voxel_size: 0.08}}\n    sim: {{rate_hz: 10.0, map_dir: {str(tmp_path)!r}}}\n")
    pre = (lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)) if ignore_sigint else None
    out, kids = open(tmp_path / "sim.out", "w+"), []
    proc = subprocess.Popen([sys.executable, "-m", "spatia_ros.sim_main", "--params", str(params), "--demo",
                             "--logs", str(tmp_path / "logs")], stdout=out, stderr=subprocess.STDOUT, preexec_fn=pre,
                            cwd=tmp_path)
    try:
        ok = _wait(lambda: "demo driver started" in (tmp_path / "sim.out").read_text() or proc.poll() is not None, 120)
        assert ok and proc.poll() is None, (tmp_path / "sim.out").read_text()
        kids += _children(proc.pid)
        assert len(kids) == 2, kids
        proc.send_signal(sig)
        assert _wait(lambda: proc.poll() is not None, 40), f"spatia-sim ignored {sig.name}"
        assert _wait(lambda: not any(_alive(k) for k in kids), 10), f"children left behind after {sig.name}"
    finally:
        for k in set(kids) | set(_children(proc.pid)):  # the children too, when the fault orphaned them
            if _alive(k):
                os.kill(k, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        out.close()


def test_demo_driver_exits_on_sigterm(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "spatia_ros.demo_driver", "--ros-args", "-p", "use_sim_time:=true"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        # rclpy loaded (its signal handling installed): from here SIGTERM must end the node
        assert _wait(lambda: "rclpy" in Path(f"/proc/{proc.pid}/maps").read_text(), 60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0 or proc.returncode == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
