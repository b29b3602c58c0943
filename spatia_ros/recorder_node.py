"""session_recorder: record what world_sim publishes into a rosbag2 (MCAP), byte for byte.

    python -m spatia_ros.recorder_node --ros-args -p output:=sessions/run1

Raw subscriptions (``raw=True``) hand over the CDR bytes as they arrived; they are written with
the pure-Python ``rosbags`` writer, never re-serialised. Topics and QoS come from the one table,
:mod:`spatia_core.qos`, that world_sim publishes with: each subscription has the publisher's
reliability and durability (camera streams reliable, or best effort with ``reliable_images:=false``
as world_sim's ``sim.reliable_images``; transient local for ``/tf_static``, ``spatial_memory`` and
``memory_info``, so the latched messages are recorded too) and the table's deeper reader queue;
the publisher's QoS is what is stored in the bag for ``ros2 bag play``.

Record time is the receive time: in sim time when the simulator owns the clock, else wall time.
``clock`` = ``auto`` (default) waits up to ``clock_wait_s`` for a ``/clock`` message, holding
what arrives meanwhile, then settles on sim time (record time = latest ``/clock`` received) or
wall time; ``sim`` (or ``use_sim_time:=true``) and ``wall`` force one. Messages received before
the first ``/clock`` in sim time are recorded at that first clock value.

Parameters: ``output`` (bag folder, must not exist; default ``spatia_session_<date>``),
``topics`` (default: world_sim's outputs), ``storage`` (``mcap`` | ``sqlite3``), ``clock``,
``clock_wait_s``. Topics not among world_sim's are subscribed once they appear in the graph,
with the QoS of their publishers, if ``rosbags`` knows their type. Ctrl-C / SIGTERM finish the
bag (``metadata.yaml``) before exiting.
"""

from __future__ import annotations

import importlib
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import rclpy
from rclpy.exceptions import NameValidationException
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.serialization import deserialize_message
from rclpy.signals import SignalHandlerOptions
from rclpy.validate_topic_name import validate_topic_name
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore
from rosgraph_msgs.msg import Clock

from spatia_core.bags import bag_qos
from spatia_core.qos import TOPICS, Qos
from spatia_ros import ros_env
from spatia_ros.qos import from_profile, profile

#: world_sim's outputs (names as it publishes them): type and QoS, the one table.
WORLD_SIM_TOPICS = TOPICS
MAX_PENDING_BYTES = 256 << 20  # held while waiting for the time source; beyond: auto -> wall time, sim -> dropped


def bag_typestore():
    """Kilted typestore plus ``spatia_ros/msg/MemoryInfo`` from ``msg/MemoryInfo.msg``."""
    ts = get_typestore(Stores.ROS2_KILTED)
    text = (Path(ros_env.share_dir()) / "msg" / "MemoryInfo.msg").read_text()
    ts.register(get_types_from_msg(text, "spatia_ros/msg/MemoryInfo"))
    return ts


def ros_class(typename: str):
    """The rclpy message class of ``pkg/msg/Name``."""
    pkg, kind, name = typename.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def rclpy_qos(reliable: bool = True, depth: int = 10, latched: bool = False):
    """An rclpy profile (kept for callers of the old helper; the table's :func:`spatia_ros.qos.profile`)."""
    return profile(Qos(reliable, depth, latched))


class SessionRecorder(Node):
    def __init__(self, **kwargs):
        super().__init__("session_recorder", **kwargs)
        output = self.declare_parameter("output", "").value or time.strftime("spatia_session_%Y%m%d_%H%M%S")
        topics = list(self.declare_parameter("topics", list(WORLD_SIM_TOPICS)).value)
        storage = self.declare_parameter("storage", "mcap").value
        self.clock_mode = self.declare_parameter("clock", "auto").value
        self.clock_wait_s = float(self.declare_parameter("clock_wait_s", 5.0).value)
        # must match world_sim's sim.reliable_images: a reliable reader never matches a best-effort writer
        self.reliable_images = bool(self.declare_parameter("reliable_images", True).value)
        if self.get_parameter("use_sim_time").value:
            self.clock_mode = "sim"
        if self.clock_mode not in ("auto", "sim", "wall"):
            raise ValueError(f"clock must be auto, sim or wall, not {self.clock_mode!r}")
        if storage not in ("mcap", "sqlite3"):
            raise ValueError(f"storage must be mcap or sqlite3, not {storage!r}")
        for name in topics:
            validate_topic_name(name)  # NameValidationException before anything is created
        self.path = Path(output)
        if self.path.exists():
            raise ValueError(f"output {self.path} exists already; bags are never overwritten")

        self.ts = bag_typestore()
        self.writer = Writer(self.path, version=9,
                             storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
        self.writer.open()
        self.lock = threading.Lock()
        self.conns, self.counts, self.subs = {}, {}, []
        self.sim_now: int | None = None  # latest /clock value, ns
        self.pending: list[tuple[str, bytes, int]] = []  # (topic, cdr, wall receive ns)
        self.pending_bytes, self.dropped = 0, 0
        self.started = time.monotonic()
        self.waiting = {}  # topics whose type is still unknown: name -> resolved name
        try:
            for name in topics:
                if name in WORLD_SIM_TOPICS:
                    topic = WORLD_SIM_TOPICS[name]
                    self._subscribe(name, topic.type, topic.offered(self.reliable_images),
                                    topic.reader(self.reliable_images))
                else:
                    self.waiting[name] = self.resolve_topic_name(name)
            if self.clock_mode != "wall" and "/clock" not in {s.topic_name for s in self.subs}:
                self.subs.append(self.create_subscription(Clock, "/clock", self._on_clock,
                                                          profile(TOPICS["/clock"].reader()), raw=True))
        except BaseException:  # e.g. an invalid topic name: no half-made bag is left behind
            self.writer.abort()
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        self.create_timer(0.25, self._tick)
        later = f" (+{len(self.waiting)} once published)" if self.waiting else ""
        self.get_logger().info(f"session_recorder: recording {len(self.conns)} topic(s){later} into {self.path} "
                               f"({storage}), clock {self.clock_mode}")

    # -- subscriptions ---------------------------------------------------------------------
    def _subscribe(self, name: str, typename: str, offered: Qos, reader: Qos) -> None:
        """Subscribe with ``reader``; the bag stores the publisher's ``offered`` QoS."""
        if typename not in self.ts.types:
            self.get_logger().error(f"{name}: type {typename} unknown to rosbags; not recorded")
            return
        cls = ros_class(typename)
        sub = self.create_subscription(cls, name, lambda raw, n=name: self._on_message(n, raw), profile(reader), raw=True)
        self.subs.append(sub)
        conn = self.writer.add_connection(sub.topic_name, typename, typestore=self.ts,
                                          offered_qos_profiles=[bag_qos(**offered.as_dict())])
        self.conns[name], self.counts[name] = conn, 0

    def _discover(self) -> None:
        """Subscribe to requested topics not published by world_sim once their type is known."""
        graph = dict(self.get_topic_names_and_types())
        for name, full in list(self.waiting.items()):
            infos = self.get_publishers_info_by_topic(full)
            if full not in graph or not infos:
                continue
            pubs = [from_profile(i.qos_profile) for i in infos]
            # compatible with every publisher: reliable / latched only if all of them are
            offered = Qos(reliable=all(q.reliable for q in pubs), depth=max(q.depth for q in pubs),
                          latched=all(q.latched for q in pubs))
            del self.waiting[name]
            self._subscribe(name, graph[full][0], offered, Qos(offered.reliable, max(offered.depth, 10), offered.latched))
            self.get_logger().info(f"recording {full} ({graph[full][0]})")

    # -- time ------------------------------------------------------------------------------
    def _on_clock(self, raw: bytes) -> None:
        stamp = deserialize_message(raw, Clock).clock
        ns = int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)
        with self.lock:
            self.sim_now = ns if self.sim_now is None else max(self.sim_now, ns)
            if self.clock_mode == "auto":
                self.clock_mode = "sim"
                self.get_logger().info("/clock received: recording in sim time")
            self._flush()

    def _record_time(self, wall_ns: int) -> int | None:
        """Record time of a message received now, or None while it must wait for the clock."""
        if self.clock_mode == "wall":
            return wall_ns
        return self.sim_now  # None until the first /clock

    def _write(self, name: str, t: int, raw: bytes) -> None:
        self.writer.write(self.conns[name], t, raw)
        self.counts[name] += 1
        if self.counts[name] == 1:  # once per topic: shows when each topic really starts recording
            self.get_logger().info(f"first message on {self.conns[name].topic}")

    def _flush(self) -> None:
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        for name, raw, wall_ns in pending:
            t = self._record_time(wall_ns)
            self._write(name, t if t is not None else wall_ns, raw)

    def _settle_wall(self, reason: str) -> None:
        self.clock_mode = "wall"
        self.get_logger().info(f"{reason}: recording in wall time")
        self._flush()

    def _tick(self) -> None:
        if self.waiting:
            self._discover()
        with self.lock:
            if self.clock_mode == "auto" and time.monotonic() - self.started > self.clock_wait_s:
                self._settle_wall(f"no /clock within {self.clock_wait_s:g} s")

    # -- recording -------------------------------------------------------------------------
    def _on_message(self, name: str, raw: bytes) -> None:
        wall_ns = time.time_ns()
        if name == "/clock":
            self._on_clock(raw)
        with self.lock:
            if self.writer is None:
                return
            if self._record_time(wall_ns) is None and self.pending_bytes + len(raw) > MAX_PENDING_BYTES:
                if self.clock_mode == "auto":
                    self._settle_wall(f"no /clock before {MAX_PENDING_BYTES >> 20} MiB arrived")
                else:
                    self.dropped += 1
                    if self.dropped == 1:
                        self.get_logger().warning("sim time but no /clock yet, too much waiting: dropping messages")
                    return
            t = self._record_time(wall_ns)
            if t is None:
                self.pending.append((name, raw, wall_ns))
                self.pending_bytes += len(raw)
                return
            self._write(name, t, raw)

    def close(self) -> None:
        """Write what is held and finish the bag (metadata.yaml); safe to call twice."""
        with self.lock:
            if self.writer is None:
                return
            self._flush()
            self.writer.close()
            self.writer = None
        summary = ", ".join(f"{self.conns[n].topic}: {c}" for n, c in self.counts.items())
        if self.dropped:
            summary += f"; {self.dropped} dropped while waiting for /clock"
        self.get_logger().info(f"bag {self.path} closed ({summary})")


def main(args=None) -> int:
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()

    def on_signal(signum, frame):
        if stop.is_set():  # a second signal: give up waiting
            raise KeyboardInterrupt
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    node, rc = None, 0
    try:
        node = SessionRecorder()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
    except (ValueError, OSError, NameValidationException) as exc:  # bad parameters, existing output, unwritable folder
        print(f"session_recorder: error: {exc}", file=sys.stderr)
        rc = 2
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return rc


if __name__ == "__main__":
    sys.exit(main())
