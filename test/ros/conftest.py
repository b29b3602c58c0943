"""Shared set-up for the ROS tests: a private DDS domain per run, rclpy and peer-process helpers."""
import os
import random
import subprocess
import sys
import threading
import time
import uuid

import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)

_DOMAIN_LOCK = None


def _claim_domain():
    """A ROS domain no other test run on this machine holds: a random free one of 1-200, claimed
    with an exclusive lock on a file in the temp folder for as long as this process lives. A bare
    random pick made two concurrent runs share a domain now and then: each then saw the other's
    world_sim (wrong image sizes, edits applied to the wrong node)."""
    global _DOMAIN_LOCK
    import fcntl
    import tempfile

    ids = list(range(1, 201))
    random.shuffle(ids)
    for domain in ids:
        lock = open(os.path.join(tempfile.gettempdir(), f'spatia_ros_test_domain_{domain}.lock'), 'w')
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            continue
        _DOMAIN_LOCK = lock  # held (and the fd not inherited) until this process exits
        return str(domain)
    raise RuntimeError('all ROS test domains 1-200 are in use on this machine')


# Loopback only, and a domain of its own per test run, so concurrent runs never see each other.
os.environ['ROS_DOMAIN_ID'] = os.environ.get('SPATIA_TEST_DOMAIN_ID') or _claim_domain()
# DDS stays on this machine: the loopback profile (config/fastdds_loopback.xml: shared memory for
# data, UDP discovery on 127.0.0.1 only, no multicast; applied by spatia_ros.ros_env and inherited
# by every child process). SPATIA_DDS_PROFILE=default falls back to the slower LOCALHOST range.
os.environ.setdefault('SPATIA_DDS_PROFILE', 'loopback')
if os.environ['SPATIA_DDS_PROFILE'].strip() in ('', 'default'):
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')

import spatia_ros  # noqa: E402,F401  (environment: DDS profile, LARGE_DATA, generated interfaces)

try:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
except ImportError as exc:  # pragma: no cover - depends on the environment
    rclpy = None
    RCLPY_MISSING = f'rclpy is not importable ({exc}); run scripts/setup.sh or source ROS 2'
else:
    RCLPY_MISSING = ''


class RosHarness:
    """One node in its own rclpy context, spun on demand."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(f'spatia_test_{uuid.uuid4().hex[:8]}', context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, predicate, timeout=20.0):
        """Spin until predicate() is true; returns its final value (falsy on timeout)."""
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.05)
        return predicate()

    def call_idempotent(self, client, request, timeout=60.0, resend_after=10.0):
        """The reply to ``request``, sending it again every ``resend_after`` s until one comes
        (None after ``timeout``). Only for requests that may run twice (save to a name, get).

        A request sent just after ``wait_for_service`` returned can be lost in Fast DDS while the
        server's request reader is still matching the client's writer: seen once in 15 suite runs
        under load (no handler ran within 60 s). A client that resends is what a robot stack does.
        """
        futures, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            futures.append(client.call_async(request))
            if self.spin_until(lambda: any(f.done() for f in futures), min(resend_after, deadline - time.monotonic())):
                return next(f.result() for f in futures if f.done())
        return None

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture(scope='module')
def ros():
    _prereq.require(rclpy is not None, RCLPY_MISSING)
    harness = RosHarness()
    yield harness
    harness.close()


@pytest.fixture(scope='module')
def python_process():
    """start(code) runs code in a child Python (same environment) and waits for it to print
    'READY'; its later output is collected in proc.output. Children end with the module."""
    procs = []

    def start(code, ready_timeout=30.0):
        proc = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        procs.append(proc)
        proc.output, ready = [], threading.Event()

        def drain():  # reads all output, so a chatty child never blocks on a full pipe
            for line in proc.stdout:
                proc.output.append(line)
                if line.strip() == 'READY':
                    ready.set()
            ready.set()  # EOF: the child is gone

        threading.Thread(target=drain, daemon=True).start()
        if ready.wait(ready_timeout) and 'READY\n' in proc.output and proc.poll() is None:
            return proc
        proc.kill()
        pytest.fail('child process did not start:\n' + ''.join(proc.output[-30:]))

    yield start
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
