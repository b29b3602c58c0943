"""world_sim: the ROS 2 node around :class:`spatia_core.simulator.WorldSimulator`.

Parameters are the flattened :class:`spatia_core.config.SpatiaConfig` (``memory.voxel_size``,
``sim.rate_hz``, ...), defaulted from the schema and set from ``config/world_sim.yaml``.

Inputs: ``cmd_vel`` (Twist, or TwistStamped with ``sim.cmd_vel_stamped``), ``camera_pose``
(PoseStamped of the camera optical frame in the map frame).
Outputs: ``camera/image_raw`` + ``camera/camera_info`` (same header, optical frame),
``camera/depth/image_raw`` (32FC1 m) + ``camera/depth/camera_info``, ``camera/scene_projection``,
``spatial_memory`` (PointCloud2, latched, throttled, downsampled), ``memory_info``, ``odom``,
``/tf`` (map->odom->base_link), ``/tf_static`` (base_link->camera_link->optical), ``/clock``.
Services: ``reset_world``, ``save_map``, ``load_map``, ``edit_memory``, ``step``, ``pause``,
``resume``; action ``generate_trajectory``; and the ROS 2 Simulation Interfaces standard under
``~/`` (:mod:`spatia_ros.sim_interfaces`) when ``simulation_interfaces`` is importable.

Frames are produced by one worker thread; callbacks only validate and queue (they never wait
for a frame). A frame is published as soon as it exists, before the memory is updated from it.
``cmd_vel`` and ``camera_pose`` are taken by a helper node, ``<name>_inputs`` in the same
namespace (its own ``__node`` rename, so a global ``-r __node:=...`` or launch's ``name=`` renames
both without giving them one name), spun by a single-threaded executor of its own: the
multi-threaded executor of the services spent a quarter of the process's CPU on its Python wait
loop at 30 poses/s. Remap those topics globally (``-r camera_pose:=...``), not with a
``world_sim:`` node prefix. Camera streams are reliable by default (``sim.reliable_images``). Bad
input is logged (throttled) and dropped; no input, however hostile, stops the node taking inputs.

Time: with ``use_sim_time`` true and ``sim.publish_clock`` true the node owns time (lockstep,
stamps are sim time); with ``use_sim_time`` false stamps are wall time (``/clock`` is still
published when ``sim.publish_clock`` is true); with ``use_sim_time`` true and
``sim.publish_clock`` false stamps follow the ``/clock`` of another node (a warning says so).

Files: ``save_map``/``load_map``/``ADD_PLY`` are confined to ``sim.map_dir`` (relative: below
``$ROS_HOME/spatia_ros``, default ``~/.ros/spatia_ros/maps``); ``reset_world`` reads only inside
``sim.map_dir`` and the folders of the ``world_dirs`` parameter (symlinks resolved).
Jobs (``step``, ``generate_trajectory``) are bounded (``MAX_STEP_FRAMES``), cancelled when their
caller gives up or the node shuts down; trajectory frames are paced at ``sim.rate_hz``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import re
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np
import rclpy
import torch
from geometry_msgs.msg import PoseStamped, Twist, TwistStamped
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType,
                                SetParametersResult)
from rclpy.action import ActionServer, CancelResponse, GoalResponse
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, PointCloud2
from std_srvs.srv import Trigger

from spatia_core.config import ParameterSpec, SpatiaConfig, WorldConfig, parameter_specs
from spatia_core.errors import SpatiaError
from spatia_core.geometry import Intrinsics
from spatia_core.paths import open_inside, resolve_inside
from spatia_core.simulator import SimFrame, WorldSimulator
from spatia_ros import conversions as cv
from spatia_ros import qos as rqos
from spatia_ros import sim_interfaces
from spatia_ros.action import GenerateTrajectory
from spatia_ros.msg import MemoryInfo
from spatia_ros.srv import EditMemory, LoadMap, ResetWorld, SaveMap, Step
from spatia_ros.service_replies import retry_replies
from spatia_ros.spin import spin_until_shutdown
from spatia_ros.tf_publisher import TfPublisher

# QoS of every output: the one table, spatia_core/qos.py (the recorder and bag replay use it too)
LATCHED = rqos.publisher_profile("spatial_memory")
RELIABLE_10 = rqos.publisher_profile("odom")
#: Camera streams: reliable, keep last 2. Best-effort subscribers (sensor-data QoS) still connect,
#: but large images between processes mostly arrive only to reliable ones (measured, bench/).
CAMERA_RELIABLE = rqos.publisher_profile("camera/image_raw", reliable_images=True)
WORLD_KINDS = {ResetWorld.Request.BUILTIN: "builtin", ResetWorld.Request.RGBD_FOLDER: "rgbd_folder",
               ResetWorld.Request.PLY: "ply", ResetWorld.Request.IMAGE_DEPTH: "image_depth"}
EDIT_OPS = {EditMemory.Request.REMOVE_BOX: "remove_box", EditMemory.Request.RECOLOR_BOX: "recolor_box",
            EditMemory.Request.ADD_POINTS: "add_points", EditMemory.Request.REMOVE_MASK: "remove_mask",
            EditMemory.Request.RECOLOR_MASK: "recolor_mask", EditMemory.Request.ADD_PLY: "add_ply",
            EditMemory.Request.UNDO: "undo"}
#: Parameters that may change while running; the others need a restart (or reset_world).
DYNAMIC = {"generator.prompt", "sim.cmd_timeout", "sim.max_linear", "sim.max_angular", "sim.cloud_rate_hz",
           "sim.cloud_max_points", "sim.max_input_rate_hz"}
#: Most frames one ``step`` call may ask for (about an hour at 30 Hz); more is refused.
MAX_STEP_FRAMES = 100_000
#: Most poses of one ``generate_trajectory`` goal.
MAX_TRAJECTORY_POSES = 100_000


def ros_home() -> str:
    """``$ROS_HOME``, else ``~/.ros`` (where ROS 2 keeps logs; relative map folders go below it)."""
    return os.path.expanduser(os.environ.get("ROS_HOME") or os.path.join("~", ".ros"))


def resolve_map_dir(map_dir: str) -> str:
    """``sim.map_dir`` as an absolute folder: relative names live in ``$ROS_HOME/spatia_ros``, so
    maps never depend on the directory the node was started from."""
    path = os.path.expanduser(map_dir or "maps")
    return os.path.realpath(path if os.path.isabs(path) else os.path.join(ros_home(), "spatia_ros", path))


@dataclass
class _Job:
    """Frames requested by the step service or the action: ``count`` frames or these ``poses``."""

    count: int = 0
    poses: list = field(default_factory=list)
    feedback: object = None
    done: threading.Event = field(default_factory=threading.Event)
    produced: int = 0
    error: str = ""
    cancelled: bool = False  # set by a caller that gave up, by a cancel request, or at shutdown
    paced: bool = False  # at most sim.rate_hz frames per second of wall time (trajectories)


def parameter_descriptor(spec: ParameterSpec, default) -> ParameterDescriptor:
    """The descriptor of one schema key: the field's description, its constraints as text, a
    range where the schema has an inclusive one, and whether it may change at run time."""
    when = "may change at run time" if spec.name in DYNAMIC else "read at start-up"
    desc = ParameterDescriptor(description=f"{spec.description} ({when})", additional_constraints=spec.constraints)
    if isinstance(default, list):
        desc.type = ParameterType.PARAMETER_INTEGER_ARRAY if spec.name == "world.frames" else ParameterType.PARAMETER_DOUBLE_ARRAY
    if spec.low is not None and isinstance(default, float):
        desc.floating_point_range = [FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)]
    elif spec.low is not None and isinstance(default, int) and not isinstance(default, bool):
        desc.integer_range = [IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)]
    return desc


def declare_config(node: Node, cfg: SpatiaConfig) -> SpatiaConfig:
    """Declare every schema key as a parameter (defaults from ``cfg``, descriptors from the schema)
    and read them back through the schema."""
    flat, specs = cfg.flatten(), parameter_specs()
    for name, default in flat.items():
        node.declare_parameter(name, default, parameter_descriptor(specs[name], default))
    values = {name: node.get_parameter(name).value for name in flat}
    return cfg.with_overrides({k: list(v) if isinstance(v, (list, tuple, np.ndarray)) else v for k, v in values.items()})


class WorldSimNode(Node):
    def create_service(self, *args, **kwargs):
        """Every service of this node resends a reply the rmw timed out on (service_replies.py)."""
        return retry_replies(super().create_service(*args, **kwargs), self.get_logger())

    def __init__(self, **kwargs):
        super().__init__("world_sim", **kwargs)
        self.config = declare_config(self, SpatiaConfig())
        s = self.config.sim
        s.map_dir = resolve_map_dir(s.map_dir)
        self.world_dirs = [os.path.realpath(os.path.expanduser(d)) for d in self.declare_parameter(
            "world_dirs", [""], ParameterDescriptor(
                type=ParameterType.PARAMETER_STRING_ARRAY,
                description="folders reset_world may read worlds from (besides sim.map_dir)")).value if d]
        self.get_logger().info(f"loading world '{self.config.world.source}' ...")
        self.sim = WorldSimulator(self.config)
        self.paused = s.start_paused
        self._cv = threading.Condition()
        self._free_frame = False  # a free-running frame is being made (pause waits for it)
        self._jobs: deque[_Job] = deque()
        self._stop = threading.Event()
        self._last_input: dict[str, float] = {}
        self._warned: dict[str, float] = {}
        self._cloud_revision = -1
        self._cloud_content = None  # SpatialMemory.content_version of the last published cloud
        self._cloud_stats = None
        self._last_frame: SimFrame | None = None

        cbg = ReentrantCallbackGroup()

        def publisher(kind, name):
            return self.create_publisher(kind, name, rqos.publisher_profile(name, s.reliable_images))

        self.pub_image = publisher(Image, "camera/image_raw")
        self.pub_info = publisher(CameraInfo, "camera/camera_info")
        self.pub_depth = publisher(Image, "camera/depth/image_raw")
        self.pub_depth_info = publisher(CameraInfo, "camera/depth/camera_info")
        self.pub_scene = publisher(Image, "camera/scene_projection")
        self.pub_cloud = publisher(PointCloud2, "spatial_memory")
        self.pub_mem_info = publisher(MemoryInfo, "memory_info")
        self.pub_odom = publisher(Odometry, "odom")
        self.pub_clock = publisher(Clock, "/clock") if s.publish_clock else None
        use_sim_time = bool(self.get_parameter("use_sim_time").value)
        self._sim_stamps = use_sim_time and s.publish_clock  # lockstep: stamps are this node's sim time
        if use_sim_time and not s.publish_clock:
            self.get_logger().warning("use_sim_time is true and sim.publish_clock is false: stamps follow the /clock "
                                      "of another node (0 until one publishes)")
        self.tf = TfPublisher(self)

        # its own __node rename beats a global one (local arguments first), so the two never share a name
        inputs_name = f"{self.get_name()}_inputs"
        self.input_node = rclpy.create_node(inputs_name, namespace=self.get_namespace(), context=self.context,
                                            cli_args=["--ros-args", "-r", f"__node:={inputs_name}"],
                                            start_parameter_services=False)
        twist_type = TwistStamped if s.cmd_vel_stamped else Twist
        self.input_node.create_subscription(twist_type, "cmd_vel", self._guard_input(self._on_cmd_vel), 10)
        # depth 1: a pose that arrives while a frame is being made replaces the older one
        self.input_node.create_subscription(PoseStamped, "camera_pose", self._guard_input(self._on_camera_pose), 1)
        self._input_executor = SingleThreadedExecutor(context=self.context)
        self._input_executor.add_node(self.input_node)
        self.create_service(ResetWorld, "reset_world", self._guarded(self._on_reset), callback_group=cbg)
        self.create_service(SaveMap, "save_map", self._guarded(self._on_save), callback_group=cbg)
        self.create_service(LoadMap, "load_map", self._guarded(self._on_load), callback_group=cbg)
        self.create_service(EditMemory, "edit_memory", self._guarded(self._on_edit), callback_group=cbg)
        self.create_service(Step, "step", self._guarded(self._on_step), callback_group=cbg)
        self.create_service(Trigger, "pause", lambda req, res: self._set_paused(True, res), callback_group=cbg)
        self.create_service(Trigger, "resume", lambda req, res: self._set_paused(False, res), callback_group=cbg)
        self._action = ActionServer(self, GenerateTrajectory, "generate_trajectory", self._on_generate,
                                    goal_callback=self._on_goal, cancel_callback=lambda _h: CancelResponse.ACCEPT,
                                    callback_group=cbg)
        # the ROS 2 Simulation Interfaces standard under ~/ (None, logged, without simulation_interfaces)
        self.sim_interfaces = sim_interfaces.attach(self, cbg)
        self.create_timer(1.0 / max(s.cloud_rate_hz, 1e-3), self._publish_memory, callback_group=MutuallyExclusiveCallbackGroup())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._publish_static_tf()
        self._publish_memory(force=True)
        self._worker = threading.Thread(target=self._run, name="world_sim_worker", daemon=True)
        self._worker.start()
        self._input_thread = threading.Thread(target=self._spin_inputs, name="world_sim_inputs", daemon=True)
        self._input_thread.start()
        k = self.sim.world.intrinsics
        self.get_logger().info(
            f"world_sim ready: {self.sim.world.init.source} world, {len(self.sim.world.memory)} voxels, "
            f"{k.width}x{k.height} @ {s.rate_hz:g} Hz, backend {self.sim.world.generator.name}, "
            f"{'paused' if self.paused else 'running'}, tf via {self.tf.backend}, "
            f"{'sim' if self._sim_stamps else 'ROS clock'} stamps, maps in {s.map_dir}"
        )

    # -- worker ----------------------------------------------------------------------------
    def _spin_inputs(self) -> None:
        """Take ``cmd_vel`` and ``camera_pose`` messages until shutdown (the inputs' own executor)."""
        while not self._stop.is_set() and self.context.ok():
            try:
                self._input_executor.spin_once(timeout_sec=0.1)
            except (ExternalShutdownException, KeyboardInterrupt):
                break
            except Exception as exc:  # noqa: BLE001 - the inputs must outlive anything a message does
                if self._stop.is_set() or not self.context.ok():
                    break  # the context went down between the check and the wait
                self._warn(f"input dropped ({type(exc).__name__}): {exc}")

    def _run(self) -> None:
        period = 1.0 / self.config.sim.rate_hz
        due = time.monotonic()
        while not self._stop.is_set():
            with self._cv:
                job = None
                while not self._stop.is_set():
                    if self._jobs:
                        job = self._jobs[0]
                        break
                    now = time.monotonic()
                    if not self.paused and (now >= due or (self.config.sim.render_on_pose and self.sim.has_pending_pose)):
                        self._free_frame = True
                        break
                    self._cv.wait(timeout=0.1 if self.paused else max(due - now, 0.0))
            if self._stop.is_set():
                break
            try:
                if job is None:
                    now = time.monotonic()
                    # a deadline frame moves the deadline one period on; a pose-triggered one pushes it to
                    # at most one period from now, so a burst of poses never silences free running
                    due = max(due + period, now) if now >= due else now + period
                    self._produce()
                else:
                    self._run_job(job)
            except Exception as exc:  # noqa: BLE001 - a failed publish must not end frame production
                if self._stop.is_set() or not self.context.ok():
                    break  # publishing after the context went down at shutdown
                self.get_logger().error(f"publishing a frame failed ({type(exc).__name__}): {exc}",
                                        throttle_duration_sec=2.0)
            finally:
                with self._cv:
                    self._free_frame = False
                    self._cv.notify_all()

    def _run_job(self, job: _Job) -> None:
        total = len(job.poses) or max(job.count, 1)
        next_at = time.monotonic()
        try:
            while job.produced < total and not self._stop.is_set() and not job.cancelled:
                if job.paced:  # one frame per period of wall time; a cancel or shutdown ends the wait
                    while not (self._stop.is_set() or job.cancelled) and time.monotonic() < next_at:
                        self._stop.wait(min(next_at - time.monotonic(), 0.05))
                    if self._stop.is_set() or job.cancelled:
                        break
                    next_at = max(next_at + 1.0 / self.config.sim.rate_hz, time.monotonic())
                pose = job.poses[job.produced] if job.poses else None
                try:
                    made = self._produce(pose)
                except Exception as exc:
                    job.error = f"publishing frame {job.produced + 1} failed ({type(exc).__name__}): {exc}"
                    raise
                if not made:
                    job.error = "frame production failed (see the node's log)"
                    break
                job.produced += 1
                if job.feedback:
                    job.feedback(job.produced, total)
        finally:
            with self._cv:
                if job in self._jobs:
                    self._jobs.remove(job)
            job.done.set()

    def _produce(self, pose=None) -> bool:
        """Make and publish one frame; False (logged) if no frame came out."""
        published, publish_errors = [], []

        def publish(frame: SimFrame) -> None:  # called before the memory update, which then runs unhurried
            published.append(frame)
            try:
                self._publish_frame(frame)
            except Exception as exc:  # raised below, after the update (e.g. the context went down)
                publish_errors.append(exc)

        try:
            self.sim.step(pose, publish=publish)
        except Exception as exc:  # keep the node alive whatever the backend raises
            what = "memory not updated from the published frame" if published else "frame not produced"
            detail = str(exc) if isinstance(exc, SpatiaError) else f"({type(exc).__name__}) {exc}"
            self.get_logger().error(f"{what}: {detail}", throttle_duration_sec=2.0)
        if publish_errors:
            raise publish_errors[0]
        return bool(published)

    # -- publishing ------------------------------------------------------------------------
    def _stamp(self, frame: SimFrame) -> int:
        return frame.stamp_ns if self._sim_stamps else self.get_clock().now().nanoseconds

    def _publish_frame(self, frame: SimFrame) -> None:
        s = self.config.sim
        ns = self._stamp(frame)
        if self.pub_clock is not None:
            self.pub_clock.publish(Clock(clock=cv.ns_to_time(frame.stamp_ns)))
        hdr = cv.header(s.optical_frame, ns)
        k = self.sim.world.intrinsics
        info = cv.camera_info_msg(k, hdr)
        self.pub_image.publish(cv.image_msg(frame.rgb, "rgb8", hdr))  # first: the latency-critical one
        self.pub_info.publish(info)
        # the other camera streams are built only for subscribers (lazy, as image_pipeline does)
        if self.pub_depth.get_subscription_count():
            self.pub_depth.publish(cv.image_msg(frame.depth, "32FC1", hdr))
        if self.pub_depth_info.get_subscription_count():
            self.pub_depth_info.publish(info)
        if self.pub_scene.get_subscription_count():
            self.pub_scene.publish(cv.image_msg(frame.scene_rgb, "rgb8", hdr))
        self.pub_odom.publish(cv.odometry_msg(s.odom_frame, s.base_frame, frame.base_pose, frame.twist, ns))
        self.tf.send([cv.transform_msg(s.map_frame, s.odom_frame, np.eye(4), ns),
                      cv.transform_msg(s.odom_frame, s.base_frame, frame.base_pose, ns)])
        self._last_frame = frame

    def _publish_static_tf(self) -> None:
        s, mount = self.config.sim, self.sim.base.mount
        self.tf.send_static([cv.transform_msg(s.base_frame, s.camera_frame, mount.base_to_link(), 0),
                             cv.transform_msg(s.camera_frame, s.optical_frame, mount.link_to_optical(), 0)])

    def _publish_memory(self, force: bool = False) -> None:
        """``memory_info`` when the memory's revision changed; ``spatial_memory`` (and the bounds)
        only when its points did: fusing a frame the memory already explains changes neither."""
        mem = self.sim.world.memory
        if not force and mem.revision == self._cloud_revision:
            return
        ns = self.sim.sim_time_ns if self._sim_stamps else self.get_clock().now().nanoseconds
        hdr = cv.header(self.config.sim.map_frame, ns)
        if force or self._cloud_stats is None or mem.content_version != self._cloud_content:
            with self.sim.lock:
                self._cloud_stats, self._cloud_content = mem.stats(), mem.content_version
            xyz, rgb = self.sim.memory_cloud(self.config.sim.cloud_max_points)
            self.pub_cloud.publish(cv.pointcloud2_msg(xyz, rgb, hdr))
        stats = dataclasses.replace(self._cloud_stats, revision=mem.revision, frames_fused=mem.frames_fused)
        info = MemoryInfo(header=hdr, revision=stats.revision, voxel_count=stats.voxels, voxel_size=stats.voxel_size,
                          frames_fused=stats.frames_fused, memory_bytes=stats.memory_bytes)
        info.bounds_min.x, info.bounds_min.y, info.bounds_min.z = stats.bounds_min
        info.bounds_max.x, info.bounds_max.y, info.bounds_max.z = stats.bounds_max
        self.pub_mem_info.publish(info)
        self._cloud_revision = stats.revision

    # -- inputs ----------------------------------------------------------------------------
    def _guard_input(self, callback):
        """An input callback that drops (with a warning) whatever it cannot handle, instead of
        letting an exception stop the inputs' executor."""

        def call(msg) -> None:
            try:
                callback(msg)
            except SpatiaError as exc:
                self._warn(f"{callback.__name__[4:]} dropped: {exc}")
            except Exception as exc:  # noqa: BLE001 - a message must never end input handling
                self._warn(f"{callback.__name__[4:]} dropped ({type(exc).__name__}): {exc}")

        return call

    def _warn(self, text: str, period: float = 2.0) -> None:
        """Log a warning, at most once per ``period`` for messages that differ only in numbers."""
        key = re.sub(r"[-+]?\d[\d.e+-]*", "#", text)
        now = time.monotonic()
        if now - self._warned.get(key, -1e9) >= period:
            self._warned[key] = now
            self.get_logger().warning(text)

    def _rate_ok(self, topic: str) -> bool:
        rate = self.config.sim.max_input_rate_hz
        if not (rate > 0 and math.isfinite(rate)):  # the schema refuses these; never divide by them
            return True
        now = time.monotonic()
        if now - self._last_input.get(topic, -1e9) < 1.0 / rate:
            self._warn(f"{topic} arrives faster than sim.max_input_rate_hz={self.config.sim.max_input_rate_hz:g}: dropped")
            return False
        self._last_input[topic] = now
        return True

    def _on_cmd_vel(self, msg) -> None:
        if not self._rate_ok("cmd_vel"):
            return
        if isinstance(msg, TwistStamped):
            if msg.header.frame_id not in ("", self.config.sim.base_frame):
                self._warn(f"cmd_vel in unknown frame {msg.header.frame_id!r}: dropped")
                return
            msg = msg.twist
        try:
            self.sim.command_velocity(msg.linear.x, msg.linear.y, msg.angular.z)
        except SpatiaError as exc:
            self._warn(f"cmd_vel dropped: {exc}")

    def _on_camera_pose(self, msg: PoseStamped) -> None:
        if not self._rate_ok("camera_pose"):
            return
        s = self.config.sim
        if msg.header.frame_id not in (s.map_frame, s.odom_frame):
            self._warn(f"camera_pose in unknown frame {msg.header.frame_id!r} (expected {s.map_frame!r}): dropped")
            return
        try:
            self.sim.place_camera(cv.pose_to_matrix(msg.pose))
        except SpatiaError as exc:
            self._warn(f"camera_pose dropped: {exc}")
            return
        with self._cv:
            self._cv.notify_all()

    # -- services --------------------------------------------------------------------------
    def _guarded(self, handler):
        """A service callback that answers ``success=False`` instead of letting an unexpected
        exception (a bug, a corrupt file, out of memory) take the node down."""

        def call(req, res):
            try:
                return handler(req, res)
            except Exception as exc:  # noqa: BLE001 - the node must survive any request
                self.get_logger().error(f"{handler.__name__} failed ({type(exc).__name__}): {exc}")
                res.success, res.message = False, f"internal error ({type(exc).__name__}): {exc}"
                return res

        return call

    def _queue(self, job: _Job, timeout: float, cancelled=lambda: False) -> _Job:
        """Queue ``job`` and wait for it; a job whose caller stops waiting (timeout, cancel request,
        shutdown) is cancelled, so it never runs on unattended."""
        with self._cv:
            if self._stop.is_set():
                job.error = "shutting down"
                return job
            self._jobs.append(job)
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        while not job.done.wait(0.1):
            if self._stop.is_set() or cancelled() or time.monotonic() > deadline:
                job.cancelled = True
                job.error = job.error or ("shutting down" if self._stop.is_set() else "cancelled" if cancelled()
                                          else f"timed out after {timeout:.0f} s")
                with self._cv:
                    if job in self._jobs and job is not self._jobs[0]:  # not started: drop it now
                        self._jobs.remove(job)
                        job.done.set()
                job.done.wait(15.0)  # a started job stops after its current frame
                break
        return job

    def _on_step(self, req, res):
        frames = max(int(req.frames), 1)
        if frames > MAX_STEP_FRAMES:
            res.success, res.message = False, f"step of {frames} frames refused: at most {MAX_STEP_FRAMES} per call"
            res.sim_time = cv.ns_to_time(self.sim.sim_time_ns)
            return res
        job = self._queue(_Job(count=frames), timeout=60.0 + 10.0 * frames)
        res.frames_published = job.produced
        res.success = not job.error
        res.message = job.error or f"published {job.produced} frame(s)"
        res.sim_time = cv.ns_to_time(self.sim.sim_time_ns)
        return res

    def _set_paused(self, paused: bool, res):
        """Pause answers once a free-running frame in production is published, so no free-running
        frame follows the reply; jobs (``step``, ``generate_trajectory``) run while paused."""
        with self._cv:
            self.paused = paused
            self._cv.notify_all()
            if paused:
                self._cv.wait_for(lambda: not self._free_frame or self._stop.is_set(), timeout=10.0)
        res.success, res.message = True, "paused" if paused else "running"
        return res

    def _on_reset(self, req, res):
        kind = WORLD_KINDS.get(req.kind)
        if kind is None:
            res.success, res.message = False, f"unknown world kind {req.kind}"
            return res
        try:
            asked = [req.path] if kind != "builtin" else []
            asked += [req.depth_path] if kind == "image_depth" and req.depth_path else []
            for p in asked:  # every path is confined before any is opened: one answer for all outside ones
                self._world_path(p, None)
            with contextlib.ExitStack() as opened:  # the world is read from what was checked (no swap between)
                path = self._world_path(req.path, opened) if kind != "builtin" else ""
                depth = self._world_path(req.depth_path, opened) if kind == "image_depth" and req.depth_path else ""
                world = WorldConfig(**{**self.config.world.__dict__, "source": kind, "path": path,
                                       "depth_path": depth, "seed": int(req.seed)})
                pose = cv.pose_to_matrix(req.initial_pose) if req.use_initial_pose else None
                self.sim.reset(world, pose)
        except SpatiaError as exc:
            res.success, res.message = False, str(exc)
            return res
        self._publish_memory(force=True)
        res.success, res.message = True, f"{kind} world loaded: {len(self.sim.world.memory)} voxels"
        return res

    def _world_path(self, path: str, opened: contextlib.ExitStack | None) -> str:
        """``path`` (relative: to ``sim.map_dir``) with symlinks resolved, if it lies inside
        ``sim.map_dir`` or a ``world_dirs`` folder, opened for as long as ``opened`` lasts
        (:func:`~spatia_core.paths.open_inside`: a path that reads the opened file or folder; None:
        only checked); the same error for everything else, so a request never tells what exists
        outside them."""
        if not path:
            raise SpatiaError("reset_world needs a path for this world kind")
        roots = [self.config.sim.map_dir, *self.world_dirs]
        if opened is None:
            pinned = resolve_inside(path, roots, base=self.config.sim.map_dir)
        else:
            pinned = opened.enter_context(open_inside(path, roots, base=self.config.sim.map_dir))
        if pinned is not None:
            return str(pinned)
        raise SpatiaError(f"path {path!r} is not inside sim.map_dir or a world_dirs folder of this node")

    def _on_save(self, req, res):
        try:
            res.path = str(self.sim.save_map(req.filename))
            res.success, res.message = True, f"saved {len(self.sim.world.memory)} voxels"
        except SpatiaError as exc:
            res.success, res.message = False, str(exc)
        return res

    def _on_load(self, req, res):
        try:
            res.path = str(self.sim.load_map(req.filename))
            res.success, res.message = True, f"loaded {len(self.sim.world.memory)} voxels"
            self._publish_memory(force=True)
        except SpatiaError as exc:
            res.success, res.message = False, str(exc)
        return res

    def _on_edit(self, req, res):
        op = EDIT_OPS.get(req.operation)
        try:
            if op is None:
                raise SpatiaError(f"unknown edit operation {req.operation}")
            lo = [req.box_min.x, req.box_min.y, req.box_min.z]
            hi = [req.box_max.x, req.box_max.y, req.box_max.z]
            colour = [req.color.r, req.color.g, req.color.b]
            points = colours = None
            if op == "add_points":
                points, colours = cv.pointcloud2_to_numpy(req.points)
                if req.points.header.frame_id not in ("", self.config.sim.map_frame):
                    raise SpatiaError(f"points must be in the {self.config.sim.map_frame!r} frame")
                if colours is None:
                    colours = np.tile((np.clip(colour, 0, 1) * 255).astype(np.uint8), (len(points), 1))
            extra = self._edit_view(req) if op in ("remove_mask", "recolor_mask") else {}
            if op == "add_ply":
                extra = dict(filename=req.filename, object_pose=cv.pose_to_matrix(req.object_pose),
                             scale=req.scale if req.scale != 0 else 1.0)
            res.voxels_changed = self.sim.edit(op, lo, hi, colour, points, colours, **extra)
            res.success, res.message = True, f"{op}: {res.voxels_changed} voxels changed"
            self._publish_memory(force=True)
        except SpatiaError as exc:
            res.success, res.message = False, str(exc)
        return res

    def _edit_view(self, req) -> dict:
        """Mask, camera pose and intrinsics of a mask edit (the current camera where not given)."""
        mask = cv.image_to_numpy(req.mask)
        mask = (mask.max(axis=2) if mask.ndim == 3 else mask) > 0
        pose = intrinsics = None
        if req.camera_pose.header.frame_id:
            if req.camera_pose.header.frame_id != self.config.sim.map_frame:
                raise SpatiaError(f"camera_pose must be in the {self.config.sim.map_frame!r} frame")
            pose = cv.pose_to_matrix(req.camera_pose.pose)
        if req.camera_info.width:
            k = req.camera_info.k
            intrinsics = Intrinsics(k[0], k[4], k[2], k[5], req.camera_info.width, req.camera_info.height)
        far, near = req.depth_far, req.depth_near
        return dict(mask=mask, camera_pose=pose, intrinsics=intrinsics, depth_range=(near, far) if far > 0 else None)

    # -- action ----------------------------------------------------------------------------
    def _on_goal(self, goal) -> GoalResponse:
        if not goal.poses or len(goal.poses) > MAX_TRAJECTORY_POSES:
            self.get_logger().warning(f"generate_trajectory goal with {len(goal.poses)} poses "
                                      f"(1 to {MAX_TRAJECTORY_POSES}): rejected")
            return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_generate(self, handle):
        result = GenerateTrajectory.Result()
        try:
            poses = []
            for i, p in enumerate(handle.request.poses):
                if p.header.frame_id not in ("", self.config.sim.map_frame, self.config.sim.odom_frame):
                    raise SpatiaError(f"pose {i} is in unknown frame {p.header.frame_id!r}")
                poses.append(cv.pose_to_matrix(p.pose))
        except SpatiaError as exc:
            handle.abort()
            result.success, result.message = False, str(exc)
            return result
        if handle.request.prompt:
            self.sim.world.config.generator.prompt = handle.request.prompt

        def feedback(done, total):
            handle.publish_feedback(GenerateTrajectory.Feedback(frames_done=done, frames_total=total))

        job = self._queue(_Job(poses=poses, feedback=feedback, paced=True), timeout=60.0 + 10.0 * len(poses),
                          cancelled=lambda: handle.is_cancel_requested)
        result.frames, result.success = job.produced, not job.error
        result.message = job.error or f"generated {job.produced} frames"
        if result.success:
            handle.succeed()
        elif handle.is_cancel_requested:
            handle.canceled()
        else:
            handle.abort()
        return result

    # -- parameters ------------------------------------------------------------------------
    def _on_set_parameters(self, params) -> SetParametersResult:
        if any(p.name == "world_dirs" for p in params) and hasattr(self, "world_dirs"):
            # at run time any DDS peer could widen what reset_world may read
            return SetParametersResult(successful=False, reason="world_dirs takes effect only at start-up")
        changes = {p.name: p.value for p in params if p.name in self.config.flatten()}
        if not changes:
            return SetParametersResult(successful=True)
        fixed = sorted(set(changes) - DYNAMIC)
        if fixed:
            return SetParametersResult(successful=False, reason=f"{', '.join(fixed)} take effect only at start-up")
        try:
            new = self.config.with_overrides(changes)
        except SpatiaError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        self.config.sim, self.config.generator = new.sim, new.generator
        self.sim.config.sim, self.sim.config.generator = new.sim, new.generator
        self.sim.world.config.generator = new.generator
        self.sim.base.max_linear, self.sim.base.max_angular = new.sim.max_linear, new.sim.max_angular
        return SetParametersResult(successful=True)

    def shutdown(self) -> None:
        self._stop.set()
        with self._cv:
            for job in self._jobs:
                job.cancelled = True
            self._cv.notify_all()
        self._worker.join(timeout=5.0)
        self._input_thread.join(timeout=5.0)
        self._input_executor.shutdown(timeout_sec=1.0)
        self.input_node.destroy_node()


def compute_threads(cpus: int | None = None) -> int:
    """Torch CPU threads for frame production: every core but one, which the ROS side (executors,
    DDS, the subscribers on this machine) needs. Busy-waiting OpenMP threads that compete with
    other processes for the cores turn a 25 ms frame into hundreds of ms (measured on 2 cores)."""
    cpus = cpus or os.cpu_count() or 1
    return max(1, cpus - 1)


def main(args=None) -> int:
    """Run the node; 0 after Ctrl-C / SIGTERM, 1 when it cannot start (bad world, no checkpoint)."""
    if "OMP_NUM_THREADS" not in os.environ:  # an explicit setting wins
        torch.set_num_threads(compute_threads(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None))
    rclpy.init(args=args)
    node, status = None, 0
    try:
        node = WorldSimNode()
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        spin_until_shutdown(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except SpatiaError as exc:
        print(f"world_sim: error: {exc}", file=sys.stderr, flush=True)
        status = 1
    finally:
        # Ctrl-C in a terminal reaches the whole process group, and ros2 launch forwards a second
        # SIGINT: the clean-up must not be cut short by it (a traceback and exit code -2)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        if node is not None:
            node.shutdown()
            node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
