"""Pose in -> image out across processes: world_sim's latency and sustained rate, in one run.

    python bench/bench_ros_latency.py [--width 640 --height 480 --rate 30 --seconds 20 --voxel 0.01]
                                      [--params world_sim.yaml] [--out out/bench_ros_latency.json] [--stages]

1. world_sim is started in its own process (``python -m spatia_ros.world_sim_node``) with the
   projection backend, the built-in room, ``sim.render_on_pose: true`` (a pose produces a frame
   at once), ``sim.publish_clock: false`` (stamps from the node's wall clock) and a very low
   free-running ``sim.rate_hz`` (``--idle-rate``), so that nearly every frame is produced by a
   pose message. It runs in a private ROS domain (``--domain``, random by default); it gets
   SIGINT at the end (SIGKILL after 10 s, or if this process dies).
2. This process (the client) publishes ``camera_pose`` (PoseStamped, frame ``map``, optical
   frame) at ``--rate`` Hz from its own thread, along a helix inside the room: a circle of radius
   0.3 m around (-1.0, 0.2) looking towards +x, rising 10 um per pose, so no two poses share a
   position. It subscribes to ``camera/image_raw`` (reliable, as published; ``--image-qos sensor`` for best effort)
   and ``odom`` (reliable).
3. Matching: ``odom`` carries the image's header stamp and the base pose = camera pose composed
   with the inverse camera mount. Each odom position is matched to the sent pose with that base
   position (within 2.5 um; poses are >= 10 um apart), then the image with the same stamp to that
   pose. Latency = image receive time - pose publish time (monotonic clock, both in this process,
   the receive time taken in the subscription callback, after deserialisation). The same for
   odom (pose -> odom latency) separates the node's queueing and compute from image transport:
   odom is reliable, so "frames published" counts every frame and "images lost" the frames whose
   image never arrived.
4. After the first image (the renderer's first compile may take seconds; cached on disk
   afterwards) and ``--warmup`` seconds more, poses are measured for ``--seconds``: latency.
5. Throughput: poses are then sent at ``--probe-rate`` (100 Hz), faster than frames can be made,
   for ``--probe-seconds``; sustained rate = distinct images received per second (the node keeps
   only the newest pose, so this is as fast as it makes and delivers frames). The rate target is
   judged on this phase.
   With ``--stages``, the node is then stopped and the same frames are produced in this process
   (WorldSimulator.step and building the node's messages) for a per-stage breakdown.

DDS (``--dds``, set before rclpy and inherited by the node):
  * ``loopback`` (default): ``SPATIA_DDS_PROFILE=loopback``, the Fast DDS profile
    ``config/fastdds_loopback.xml``: shared memory for data, UDP discovery on 127.0.0.1 only,
    no multicast. Nothing leaves the machine, and images are as fast as with LARGE_DATA.
  * ``localhost``: ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``. Local too, but rmw_fastrtps then
    replaces the transports with its own defaults (UDP + a 512 KiB shared-memory segment,
    ignoring ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``): ~11 ms slower per 640x480 image.
  * ``default``: the user's range (SUBNET, multicast on every interface), LARGE_DATA. Traffic
    may leave the machine; for comparison only.
During the run the benchmark lists the UDP/TCP sockets of the node and of this process (``ss``;
``tcpdump`` is not installed here) and the byte/packet counters of every non-loopback interface
(``/proc/net/dev``) before and after: with ``loopback`` no socket is bound beyond 127.0.0.1, so
none of the run's traffic can use another interface (the counters also move with other programs'
traffic; they are reported, the sockets are the proof). ``--compare-dds loopback,localhost,default
--repeat 2`` runs the benchmark once per mode and repeat, interleaved, each in its own process,
and prints one table.

Prints a table and PASS/MISS per target (the issue-16 frame budget: p50 <= 20 ms, p99 <= 40 ms,
>= 60 images/s sustained, node CPU <= 0.6 cores at 30 Hz) and the machine's load before and during
the run (``bench/_load.py``): a met target on a machine busy before the start prints "NOT A PASS:
machine busy (load X)". Writes JSON (and, beside it, the generated parameter file and the node's
log); exits 0 when the measurement ran (targets missed or not), 1 when the node did not start or
produced no image.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DDS_MODES = ("loopback", "localhost", "default")
_PROFILE_VARS = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")  # both: no stale one


def apply_dds_mode(mode: str) -> None:
    """Set the environment of DDS mode ``mode`` (module docstring) before spatia_ros/rclpy load."""
    for var in _PROFILE_VARS + ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_LOCALHOST_ONLY"):
        os.environ.pop(var, None)
    os.environ["SPATIA_DDS_PROFILE"] = "loopback" if mode == "loopback" else "default"
    if mode == "localhost":
        os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


def _dds_arg(argv: list[str]) -> str:
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--dds", choices=DDS_MODES, default="loopback")
    return pre.parse_known_args(argv)[0].dds


apply_dds_mode(_dds_arg(sys.argv[1:]))
import spatia_ros  # noqa: E402,F401  (DDS profile, generated interfaces; before rclpy)
from bench._load import LoadWatch  # noqa: E402
from spatia_core.config import SpatiaConfig  # noqa: E402
from spatia_core.geometry import invert_pose, look_at  # noqa: E402
from spatia_core.robot import CameraMount  # noqa: E402

TARGET_P50_MS = 20.0
TARGET_P99_MS = 40.0
TARGET_RATE_HZ = 60.0
TARGET_NODE_CORES = 0.6  # at --rate 30
CENTER = np.array([-1.0, 0.2])
RADIUS = 0.3
CIRCLE_S = 6.0  # one turn of the circle, seconds
Z0, DZ = 1.15, 1e-5  # camera height of pose 0, and its rise per pose (makes every position unique)
MATCH_TOL = DZ / 4


# -- the path --------------------------------------------------------------------------------
def camera_pose(seq: int, rate: float) -> np.ndarray:
    """Optical-frame camera-to-world pose number ``seq`` of the benchmark path."""
    theta = 2 * np.pi * seq / (rate * CIRCLE_S)
    eye = [CENTER[0] + RADIUS * np.cos(theta), CENTER[1] + RADIUS * np.sin(theta), Z0 + DZ * seq]
    return look_at(eye, [1.5, CENTER[1] + 0.8 * np.sin(theta), 1.0])


# -- configuration ---------------------------------------------------------------------------
def resolve_config(args) -> tuple[SpatiaConfig, dict]:
    """The node's effective configuration and the overrides written to the generated params file."""
    base = SpatiaConfig.from_yaml(args.params) if args.params else SpatiaConfig()
    forced = {
        "world.source": "builtin",
        "generator.backend": "projection",
        "camera.width": int(args.width or (base.camera.width if args.params else 640)),
        "camera.height": int(args.height or (base.camera.height if args.params else 480)),
        "memory.voxel_size": float(args.voxel or (base.memory.voxel_size if args.params else 0.01)),
        "sim.rate_hz": float(args.idle_rate),
        "sim.render_on_pose": True,
        "sim.publish_clock": False,
        "sim.start_paused": False,
        "sim.max_input_rate_hz": float(max(base.sim.max_input_rate_hz, 2.0 * args.rate)),
    }
    if args.device:  # e.g. cuda: the node's memory and renderer on the GPU
        forced["device"] = args.device
    return base.with_overrides(forced), forced


def params_yaml(overrides: dict) -> str:
    nested: dict = {}
    for key, value in overrides.items():
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return yaml.safe_dump({"world_sim": {"ros__parameters": nested}}, sort_keys=False)


# -- the node process ------------------------------------------------------------------------
def start_node(params_files: list[Path], env: dict, log_path: Path, timeout: float) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "spatia_ros.world_sim_node", "--ros-args"]
    for p in params_files:
        cmd += ["--params-file", str(p)]
    log = open(log_path, "w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
                            preexec_fn=_die_with_parent)
    log.close()
    deadline = time.monotonic() + timeout
    while "world_sim ready" not in log_path.read_text(errors="replace"):
        if proc.poll() is not None:
            raise RuntimeError(f"world_sim exited with {proc.returncode}:\n{tail(log_path)}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"world_sim not ready after {timeout:.0f} s:\n{tail(log_path)}")
        time.sleep(0.2)
    return proc


def _die_with_parent() -> None:
    """In the child before exec (Linux): SIGKILL it if this process dies without cleaning up."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stop_node(proc: subprocess.Popen | None) -> int | None:
    """SIGINT, then SIGKILL if it has not ended within 10 s; returns the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


def cpu_seconds(pid: int) -> float | None:
    """user + system CPU time of a process (Linux /proc), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


# -- where the traffic goes -----------------------------------------------------------------
def net_counters() -> dict:
    """Received/sent bytes and packets of every non-loopback interface (/proc/net/dev)."""
    counters = {}
    try:
        lines = Path("/proc/net/dev").read_text().splitlines()[2:]
    except OSError:
        return counters
    for line in lines:
        name, data = line.split(":", 1)
        name, v = name.strip(), [int(x) for x in data.split()]
        if name != "lo":
            counters[name] = {"rx_bytes": v[0], "rx_packets": v[1], "tx_bytes": v[8], "tx_packets": v[9]}
    return counters


def net_delta(before: dict, after: dict) -> dict:
    return {name: {k: after[name][k] - before[name].get(k, 0) for k in after[name]}
            for name in after if name in before}


def sockets_of(pids: list[int]) -> list[dict]:
    """The UDP and TCP sockets the processes ``pids`` hold (``ss -uatnp``): protocol, local address."""
    try:
        text = subprocess.run(["ss", "-H", "-u", "-t", "-a", "-n", "-p"], capture_output=True, text=True,
                              timeout=10).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    found = []
    for line in text.splitlines():
        parts = line.split()
        owners = [int(x) for x in re.findall(r"pid=(\d+)", line)]
        if len(parts) >= 5 and any(p in pids for p in owners):
            found.append({"proto": parts[0], "local": parts[4], "peer": parts[5] if len(parts) > 5 else "",
                          "pid": next(p for p in owners if p in pids)})
    return found


def off_loopback(sockets: list[dict]) -> list[dict]:
    """Sockets bound to an address other than 127.x / ::1 (0.0.0.0 and * mean every interface)."""
    def local(addr: str) -> bool:
        host = addr.rsplit(":", 1)[0].strip("[]").split("%")[0]
        return host.startswith("127.") or host in ("::1", "::ffff:127.0.0.1")
    return [s for s in sockets if not local(s["local"])]


# -- the client ------------------------------------------------------------------------------
class Client:
    """Publishes the poses from its own thread; records what comes back (receive times only)."""

    def __init__(self, rate: float, mount: CameraMount, image_qos: str = "reliable"):
        import rclpy
        from geometry_msgs.msg import PoseStamped
        from nav_msgs.msg import Odometry
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from rclpy.signals import SignalHandlerOptions
        from sensor_msgs.msg import Image

        from spatia_ros.conversions import matrix_to_pose, time_to_ns

        self._PoseStamped, self._to_pose, self._time_to_ns = PoseStamped, matrix_to_pose, time_to_ns
        self.context = rclpy.Context()
        rclpy.init(context=self.context, signal_handler_options=SignalHandlerOptions.NO)
        self.node = rclpy.create_node("bench_ros_latency", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.rate = rate
        self.optical_to_base = invert_pose(mount.base_to_optical())
        self.sent_t: list[float] = []  # monotonic publish time per pose
        self.sent_base: list[np.ndarray] = []  # expected odom position per pose
        self.images: dict[int, list[float]] = {}  # header stamp ns -> receive times
        self.odom: dict[int, tuple[float, np.ndarray]] = {}  # header stamp ns -> (receive time, base position)
        self.image_size = None
        self._stop = threading.Event()
        self._thread = None
        self.pub = self.node.create_publisher(PoseStamped, "camera_pose", 10)
        image_profile = (qos_profile_sensor_data if image_qos == "sensor" else
                         QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE))
        self.node.create_subscription(Image, "camera/image_raw", self._on_image, image_profile)
        self.node.create_subscription(Odometry, "odom", self._on_odom,
                                      QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def _on_image(self, msg) -> None:
        t = time.monotonic()
        self.images.setdefault(self._time_to_ns(msg.header.stamp), []).append(t)
        self.image_size = (msg.width, msg.height)

    def _on_odom(self, msg) -> None:
        p = msg.pose.pose.position
        self.odom[self._time_to_ns(msg.header.stamp)] = (time.monotonic(), np.array([p.x, p.y, p.z]))

    def _publish_loop(self) -> None:
        due = time.monotonic()
        while not self._stop.is_set():
            period = 1.0 / self.rate  # may be raised for the throughput phase
            seq = len(self.sent_t)
            cam = camera_pose(seq, self.rate)
            msg = self._PoseStamped()
            msg.header.frame_id = "map"
            msg.header.stamp = self.node.get_clock().now().to_msg()
            msg.pose = self._to_pose(cam)
            self.sent_base.append((cam @ self.optical_to_base)[:3, 3])
            t = time.monotonic()
            self.pub.publish(msg)
            self.sent_t.append(t)
            due += period
            now = time.monotonic()
            if now > due + period:  # fell behind (a stall): do not burst to catch up
                due = now
            self._stop.wait(max(due - now, 0.0))

    def start_publishing(self) -> None:
        self._thread = threading.Thread(target=self._publish_loop, name="pose_publisher", daemon=True)
        self._thread.start()

    def stop_publishing(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def spin_for(self, seconds: float, until=None) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if until is not None and until():
                return True
            self.executor.spin_once(timeout_sec=0.02)
        return bool(until and until())

    def close(self) -> None:
        self.stop_publishing()
        self.executor.shutdown()
        self.node.destroy_node()
        self.context.try_shutdown()

    def got_pose_frame(self) -> bool:
        """Whether a frame produced at one of the sent poses came back (image and odom)."""
        n = len(self.sent_t)
        if not n or not self.images:
            return False
        sent = np.asarray(self.sent_base[:n])
        return any(np.min(np.linalg.norm(sent - xyz, axis=1)) < MATCH_TOL
                   for stamp, (_, xyz) in list(self.odom.items()) if stamp in self.images)

    # -- analysis ----------------------------------------------------------------------------
    def throughput(self, t0: float, t1: float) -> dict:
        """Frames (odom) and distinct images received per second between monotonic ``t0`` and ``t1``."""
        images = sum(any(t0 <= t <= t1 for t in times) for times in self.images.values())
        frames = sum(t0 <= t <= t1 for t, _ in self.odom.values())
        poses = sum(t0 <= t <= t1 for t in self.sent_t)
        d = t1 - t0
        return {"offered_hz": poses / d, "frame_rate_hz": frames / d, "image_rate_hz": images / d, "window_s": d}

    def match(self) -> dict:
        """seq -> earliest image receive time, and counts of what could not be matched."""
        sent = np.asarray(self.sent_base[: len(self.sent_t)])
        stamp_seq, odom_first, ambiguous = {}, {}, 0
        for stamp, (t, xyz) in self.odom.items():
            d = np.linalg.norm(sent - xyz, axis=1)
            close = np.flatnonzero(d < MATCH_TOL)
            if len(close) == 1:
                seq = stamp_seq[stamp] = int(close[0])
                odom_first[seq] = min(odom_first.get(seq, t), t)
            elif len(close) > 1:
                ambiguous += 1
        first: dict[int, float] = {}
        no_odom = duplicates = 0
        for stamp, times in self.images.items():
            seq = stamp_seq.get(stamp)
            if seq is None:
                no_odom += len(times)
                continue
            for t in times:
                if seq in first:
                    duplicates += 1  # the same pose rendered again (a free-running frame)
                    first[seq] = min(first[seq], t)
                else:
                    first[seq] = t
        return {"first": first, "odom_first": odom_first, "no_odom": no_odom, "duplicates": duplicates,
                "ambiguous": ambiguous, "odom_unmatched": len(self.odom) - len(stamp_seq) - ambiguous}


# -- per-stage timings in this process ------------------------------------------------------
def stage_timings(cfg: SpatiaConfig, rate: float, frames: int) -> dict:
    """Median ms per stage of WorldSimulator.step and of building the node's messages."""
    from spatia_core.simulator import WorldSimulator
    from spatia_ros import conversions as cv

    sim = WorldSimulator(cfg)
    k = sim.world.intrinsics
    rows = []
    for i in range(frames + 10):
        t0 = time.perf_counter()
        frame = sim.step(camera_pose(i, rate))
        t1 = time.perf_counter()
        hdr = cv.header(cfg.sim.optical_frame, 0)
        cv.image_msg(frame.rgb, "rgb8", hdr)
        cv.camera_info_msg(k, hdr)
        cv.image_msg(frame.depth, "32FC1", hdr)
        cv.image_msg(frame.scene_rgb, "rgb8", hdr)
        cv.odometry_msg("odom", "base_link", frame.base_pose, frame.twist, 0)
        t2 = time.perf_counter()
        if i >= 10:  # the first frames compile and warm caches
            rows.append({**frame.timings, "step_total": t1 - t0, "messages": t2 - t1})
    keys = list(rows[0])
    out = {key: 1e3 * statistics.median(r[key] for r in rows) for key in keys}
    out["frames"] = len(rows)
    out["step_total_p95"] = 1e3 * float(np.percentile([r["step_total"] for r in rows], 95))
    return out


# -- main ------------------------------------------------------------------------------------
def percentiles(values_ms: list[float]) -> dict:
    if not values_ms:
        return {k: None for k in ("min", "mean", "p50", "p95", "p99", "max")}
    a = np.asarray(values_ms)
    return {"min": float(a.min()), "mean": float(a.mean()), "p50": float(np.percentile(a, 50)),
            "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99)), "max": float(a.max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=None, help="image width (default 640, or the --params file's)")
    parser.add_argument("--height", type=int, default=None, help="image height (default 480, or the --params file's)")
    parser.add_argument("--voxel", type=float, default=None, help="memory.voxel_size, m (default 0.01, or --params')")
    parser.add_argument("--rate", type=float, default=30.0, help="camera_pose publish rate, Hz")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the measurement window")
    parser.add_argument("--warmup", type=float, default=4.0, help="seconds of poses after the first image, not measured")
    parser.add_argument("--idle-rate", type=float, default=0.1,
                        help="the node's free-running sim.rate_hz (frames without a pose); keep it low")
    parser.add_argument("--params", default=None, help="a world_sim parameter file (e.g. config/world_sim.yaml); "
                        "the benchmark's settings override it")
    parser.add_argument("--domain", type=int, default=None, help="ROS_DOMAIN_ID (default: random in 100..199)")
    parser.add_argument("--ready-timeout", type=float, default=180.0, help="seconds to wait for 'world_sim ready'")
    parser.add_argument("--first-image-timeout", type=float, default=180.0,
                        help="seconds to wait for the first image (includes the first torch.compile)")
    parser.add_argument("--image-qos", choices=("sensor", "reliable"), default="reliable",
                        help="QoS of the camera/image_raw subscription (reliable needs a reliable publisher)")
    parser.add_argument("--probe-rate", type=float, default=100.0,
                        help="pose rate of the throughput phase, Hz (faster than frames can be made)")
    parser.add_argument("--probe-seconds", type=float, default=10.0, help="length of the throughput phase (0: skip)")
    parser.add_argument("--stages", action="store_true", help="afterwards, time the node's stages in this process")
    parser.add_argument("--out", default="out/bench_ros_latency.json")
    parser.add_argument("--device", default=None, help="the node's torch device (default: the params file's, else cpu)")
    parser.add_argument("--dds", choices=DDS_MODES, default="loopback", help="DDS configuration (module docstring)")
    parser.add_argument("--compare-dds", default=None, metavar="MODES",
                        help="comma-separated DDS modes: run the benchmark once per mode and --repeat, interleaved")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of --compare-dds")
    args, rest = parser.parse_known_args()
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.rate <= 0 or args.seconds <= 0:
        parser.error("--rate and --seconds must be > 0")
    if args.compare_dds:
        return compare_dds(args)

    signal.signal(signal.SIGTERM, _interrupt)  # a terminated benchmark still stops its node
    cfg, overrides = resolve_config(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    gen_params = out.with_suffix(".params.yaml")
    gen_params.write_text(params_yaml(overrides))
    log_path = out.with_suffix(".node.log")
    domain = args.domain if args.domain is not None else random.randint(100, 199)
    os.environ["ROS_DOMAIN_ID"] = str(domain)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    mount = CameraMount(list(cfg.sim.mount_xyz), list(cfg.sim.mount_rpy))
    w, h = cfg.camera.width, cfg.camera.height

    import torch

    results = {
        "config": {"width": w, "height": h, "voxel_size": cfg.memory.voxel_size, "rate_hz": args.rate, "device": cfg.device,
                   "seconds": args.seconds, "warmup_s": args.warmup, "idle_rate_hz": args.idle_rate,
                   "backend": cfg.generator.backend, "world": cfg.world.source, "params": args.params,
                   "ros_domain_id": domain, "transport": os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", ""),
                   "discovery_range": os.environ.get("ROS_AUTOMATIC_DISCOVERY_RANGE", "(rcl default)"),
                   "image_qos": args.image_qos, "rmw": os.environ.get("RMW_IMPLEMENTATION", "default")},
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                    "torch": torch.__version__, "loadavg_before": list(os.getloadavg())},
        "node_log": str(log_path),
    }
    results["config"].update({"dds": args.dds, "dds_profile_file": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")})
    print(f"world_sim latency benchmark: {w}x{h}, voxel {cfg.memory.voxel_size:g} m, {args.rate:g} Hz poses, "
          f"{args.seconds:g} s window, ROS domain {domain}, DDS {args.dds}", flush=True)
    watch = LoadWatch()
    print("  " + watch.end().line().split("; during")[0], flush=True)

    proc = client = None
    failed = ""
    try:
        t_start = time.monotonic()
        proc = start_node([*([Path(args.params).resolve()] if args.params else []), gen_params.resolve()], env,
                          log_path, args.ready_timeout)
        watch.track(proc.pid)
        results["node_ready_s"] = time.monotonic() - t_start
        print(f"  node ready after {results['node_ready_s']:.1f} s", flush=True)
        client = Client(args.rate, mount, args.image_qos)
        client.spin_for(1.0)  # discovery
        t_first = time.monotonic()
        client.start_publishing()
        if not client.spin_for(args.first_image_timeout, until=client.got_pose_frame):
            raise RuntimeError(f"no image within {args.first_image_timeout:.0f} s of the first pose:\n{tail(log_path)}")
        results["first_image_s"] = time.monotonic() - t_first
        print(f"  first image {results['first_image_s']:.1f} s after the first pose; warming up {args.warmup:g} s",
              flush=True)
        client.spin_for(args.warmup)
        sockets = sockets_of([proc.pid, os.getpid()])
        results["network"] = {"sockets": sockets, "off_loopback_sockets": off_loopback(sockets)}
        net0 = net_counters()
        watch.begin()
        seq0, t0 = len(client.sent_t), time.monotonic()
        cpu_node0, cpu_self0 = cpu_seconds(proc.pid), time.process_time()
        client.spin_for(args.seconds)
        seq1, t1 = len(client.sent_t), time.monotonic()
        cpu_node1, cpu_self1 = cpu_seconds(proc.pid), time.process_time()
        results["network"]["non_loopback_counters_delta"] = net_delta(net0, net_counters())
        results["machine"]["loadavg_after"] = list(os.getloadavg())
        watch.poll()
        results["load"] = watch.end().as_dict()
        load = watch.end()
        if args.probe_seconds > 0:  # throughput: poses faster than frames can be made
            print(f"  throughput: poses at {args.probe_rate:g} Hz for {args.probe_seconds:g} s", flush=True)
            client.rate = args.probe_rate
            client.spin_for(1.0)
            probe_t0 = time.monotonic()
            client.spin_for(args.probe_seconds)
            probe_t1 = time.monotonic()
            results["throughput"] = client.throughput(probe_t0, probe_t1)
        client.stop_publishing()
        client.spin_for(1.5)  # frames still in flight
        if proc.poll() is not None:
            failed = f"world_sim died during the run (status {proc.returncode})"
    except RuntimeError as exc:
        failed = str(exc)
    except KeyboardInterrupt:
        failed = "interrupted"
    finally:
        if client is not None:
            client.close()
        status = stop_node(proc)
    results["node_exit_status"] = status

    if not failed:
        m = client.match()
        window = range(seq0, seq1)
        lat = [1e3 * (m["first"][s] - client.sent_t[s]) for s in window if s in m["first"]]
        odom_lat = [1e3 * (m["odom_first"][s] - client.sent_t[s]) for s in window if s in m["odom_first"]]
        gap = [1e3 * (m["first"][s] - m["odom_first"][s]) for s in window if s in m["first"] and s in m["odom_first"]]
        duration = t1 - t0
        received = sum(t0 <= t <= t1 for times in client.images.values() for t in times)
        frames = [stamp for stamp, (t, _) in client.odom.items() if t0 <= t <= t1]  # odom is reliable: one per frame
        dur_cpu = lambda a, b: (b - a) / duration if a is not None and b is not None else None  # noqa: E731
        results.update({
            "poses_sent": len(window),
            "images_received": received,
            "frames_published": len(frames),
            "images_lost": sum(stamp not in client.images for stamp in frames),
            "matched": len(lat),
            "dropped_poses": len(window) - len(lat),
            "window_s": duration,
            "latency_ms": percentiles(lat),
            "odom_latency_ms": percentiles(odom_lat),
            "image_after_odom_ms": percentiles(gap),
            "poses_with_a_frame": len(odom_lat),
            "sustained_rate_hz": len(lat) / duration,
            "image_rate_hz": received / duration,
            "pose_rate_hz": len(window) / duration,
            "frame_rate_hz": len(frames) / duration,
            "unmatched": {"images_without_odom_match": m["no_odom"], "duplicate_images": m["duplicates"],
                          "ambiguous_odom": m["ambiguous"], "odom_without_pose": m["odom_unmatched"]},
            "cpu_cores_busy": {"node": dur_cpu(cpu_node0, cpu_node1), "client": dur_cpu(cpu_self0, cpu_self1)},
            "image_size": list(client.image_size) if client.image_size else None,
        })
        p50, p99 = results["latency_ms"]["p50"], results["latency_ms"]["p99"]
        node_cores = results["cpu_cores_busy"]["node"]
        results["targets"] = {
            "p50_ms": {"target": TARGET_P50_MS, "value": p50,
                       "result": load.verdict(p50 is not None and p50 <= TARGET_P50_MS)},
            "p99_ms": {"target": TARGET_P99_MS, "value": p99,
                       "result": load.verdict(p99 is not None and p99 <= TARGET_P99_MS)},
            "node_cores": {"target": TARGET_NODE_CORES, "value": node_cores,
                           "result": ("N/A (poses not at 30 Hz)" if args.rate != 30 else
                                      load.verdict(node_cores is not None and node_cores <= TARGET_NODE_CORES))},
        }
        if "throughput" in results:
            rate = results["throughput"]["image_rate_hz"]
            results["targets"]["rate_hz"] = {
                "target": TARGET_RATE_HZ, "value": rate,
                "result": ("N/A (poses offered below the target rate)" if args.probe_rate < TARGET_RATE_HZ else
                           load.verdict(rate >= TARGET_RATE_HZ))}
        if args.stages:
            print("  timing the stages in this process ...", flush=True)
            results["stages_ms"] = stage_timings(cfg, args.rate, frames=max(30, int(args.rate * 3)))
    else:
        results["error"] = failed

    out.write_text(json.dumps(results, indent=2))
    if failed:
        print(f"\nbenchmark failed: {failed}\nwrote {out}")
        return 1
    report(results)
    print(f"\nwrote {out} (node log {log_path})")
    return 0


def compare_dds(args) -> int:
    """Run this benchmark once per DDS mode and round, interleaved (each in its own process, so
    each loads its own DDS configuration), and print one table of the results."""
    modes = [m.strip() for m in args.compare_dds.split(",") if m.strip()]
    bad = [m for m in modes if m not in DDS_MODES]
    if bad or not modes:
        print(f"--compare-dds: unknown mode(s) {bad}; choose from {', '.join(DDS_MODES)}", file=sys.stderr)
        return 2
    out = Path(args.out)
    passthrough = ["--width", args.width, "--height", args.height, "--voxel", args.voxel, "--params", args.params]
    extra = [str(v) for pair in zip(passthrough[::2], passthrough[1::2]) if pair[1] is not None for v in pair]
    extra += ["--device", args.device] if args.device else []
    extra += ["--rate", str(args.rate), "--seconds", str(args.seconds), "--warmup", str(args.warmup),
              "--probe-rate", str(args.probe_rate), "--probe-seconds", str(args.probe_seconds),
              "--idle-rate", str(args.idle_rate), "--image-qos", args.image_qos]
    rows = []
    for rnd in range(args.repeat):
        for mode in modes:
            path = out.with_name(f"{out.stem}.{mode}.{rnd + 1}.json")
            print(f"\n=== round {rnd + 1}/{args.repeat}, DDS {mode} -> {path}", flush=True)
            code = subprocess.call([sys.executable, str(Path(__file__).resolve()), "--dds", mode, "--out", str(path),
                                    *extra], cwd=str(REPO))
            r = json.loads(path.read_text()) if path.is_file() else {"error": f"exit status {code}"}
            rows.append((rnd + 1, mode, r))
    print(f"\n{'round':>5s} {'DDS':10s} {'p50':>7s} {'p95':>7s} {'p99':>7s} {'img/s@' + format(args.probe_rate, 'g'):>10s} "
          f"{'node':>5s} {'off-lo socks':>12s} {'eth pkts':>9s} {'load1':>6s}")
    for rnd, mode, r in rows:
        if "error" in r:
            print(f"{rnd:5d} {mode:10s} failed: {r['error'][:80]}")
            continue
        lat, net = r["latency_ms"], r.get("network", {})
        pkts = sum(d["rx_packets"] + d["tx_packets"] for d in net.get("non_loopback_counters_delta", {}).values())
        rate = r.get("throughput", {}).get("image_rate_hz")
        node = r["cpu_cores_busy"]["node"]
        print(f"{rnd:5d} {mode:10s} {lat['p50']:7.1f} {lat['p95']:7.1f} {lat['p99']:7.1f} "
              f"{rate if rate is not None else float('nan'):10.1f} {node if node is not None else float('nan'):5.2f} "
              f"{len(net.get('off_loopback_sockets', [])):12d} {pkts:9d} {r['load']['loadavg_before'][0]:6.2f}")
    summary = out.with_name(f"{out.stem}.compare.json")
    summary.write_text(json.dumps([{"round": a, "dds": b, **c} for a, b, c in rows], indent=2))
    print(f"\nwrote {summary}; latency in ms, node in cores, 'eth pkts' = packets on all non-loopback interfaces "
          f"during the window from every program on the machine, load1 = load average before the run")
    return 0 if all("error" not in r for _, _, r in rows) else 1


def report(r: dict) -> None:
    lat, c = r["latency_ms"], r["config"]

    def ms(v):
        return f"{v:8.1f}ms" if v is not None else "       --"

    print(f"\n{'pose in -> image out, ' + str(c['width']) + 'x' + str(c['height']) + ' projection':44s} {'value':>12s} {'target':>9s}")
    print(f"{'poses sent in the window (' + format(r['window_s'], '.1f') + ' s)':44s} {r['poses_sent']:12d}")
    print(f"{'frames published in the window (odom)':44s} {r['frames_published']:12d}")
    print(f"{'images received in the window':44s} {r['images_received']:12d}")
    print(f"{'images lost in transport (odom, no image)':44s} {r['images_lost']:12d}")
    print(f"{'images matched to a window pose':44s} {r['matched']:12d}")
    print(f"{'poses without an image (superseded/lost)':44s} {r['dropped_poses']:12d}")
    print(f"{'latency p50':44s} {ms(lat['p50']):>12s} {'<= ' + format(TARGET_P50_MS, 'g') + 'ms':>9s}  "
          f"{r['targets']['p50_ms']['result']}")
    print(f"{'latency p99':44s} {ms(lat['p99']):>12s} {'<= ' + format(TARGET_P99_MS, 'g') + 'ms':>9s}  "
          f"{r['targets']['p99_ms']['result']}")
    for key in ("p95", "max"):
        print(f"{'latency ' + key:44s} {ms(lat[key]):>12s}")
    print(f"{'pose -> odom latency p50 / p95 (no image)':44s} {ms(r['odom_latency_ms']['p50']):>12s} / "
          f"{ms(r['odom_latency_ms']['p95']).strip()}")
    print(f"{'image received after odom p50 / p95':44s} {ms(r['image_after_odom_ms']['p50']):>12s} / "
          f"{ms(r['image_after_odom_ms']['p95']).strip()}")
    print(f"{'matched images / s (poses at ' + format(c['rate_hz'], 'g') + ' Hz)':44s} {r['sustained_rate_hz']:10.1f}Hz")
    print(f"{'pose rate sent / frame rate (odom)':44s} {r['pose_rate_hz']:10.1f}Hz / {r['frame_rate_hz']:.1f}Hz")
    if "throughput" in r:
        tp = r["throughput"]
        print(f"{'sustained rate: images / s, poses at ' + format(tp['offered_hz'], '.0f') + ' Hz':44s} "
              f"{tp['image_rate_hz']:10.1f}Hz {'>= ' + format(TARGET_RATE_HZ, 'g') + 'Hz':>9s}  "
              f"{r['targets']['rate_hz']['result']}")
        print(f"{'  frames published / s (odom), same phase':44s} {tp['frame_rate_hz']:10.1f}Hz")
    busy = r["cpu_cores_busy"]
    if busy["node"] is not None:
        print(f"{'CPU cores busy: node / client':44s} {busy['node']:6.2f} / {busy['client']:.2f}"
              f"  (node <= {TARGET_NODE_CORES:g}: {r['targets']['node_cores']['result']})")
    net = r.get("network", {})
    if net:
        off = net["off_loopback_sockets"]
        print(f"{'DDS ' + c['dds'] + ': sockets of node + client':44s} {len(net['sockets']):6d}, "
              f"{len(off)} bound beyond loopback" + (f" ({', '.join(sorted({s['local'] for s in off})[:4])})" if off else ""))
        for name, d in net.get("non_loopback_counters_delta", {}).items():
            print(f"{'  ' + name + ' during the window (all programs)':44s} rx {d['rx_packets']} pkts / {d['rx_bytes']} B, "
                  f"tx {d['tx_packets']} pkts / {d['tx_bytes']} B")
    if "load" in r:
        from bench._load import LoadReport

        print(LoadReport(**{k: v for k, v in r["load"].items() if k != "busy"}).line())
    if "stages_ms" in r:
        s = r["stages_ms"]
        print(f"\nstages in one process (median of {s['frames']} frames, same config; not the node's own run):")
        for key, value in s.items():
            if key != "frames":
                print(f"  {key:42s} {value:8.1f}ms")


if __name__ == "__main__":
    sys.exit(main())
