"""rosbag2 recordings in and out, without ROS: read a camera path, replay it through the simulator.

:func:`read_camera_path` takes the camera trajectory of a recording (MCAP or sqlite3) from one
topic: ``geometry_msgs/PoseStamped`` (the camera optical frame in the map, or with
``pose_kind="base"`` the base), ``nav_msgs/Odometry`` (the base; the camera through the mount)
or ``/tf`` (the chain map -> ... -> optical frame, or -> base frame + mount). Poses are taken as
being in the map frame. Times are header stamps (the bag time where a stamp is zero).

:func:`replay` renders the world along that path and writes a new bag with what ``world_sim``
publishes (images, camera info, depth, scene projection, odom, TF, clock), every message stamped
and recorded at the time of its source message, so the output lines up with the input bag.
"""

from __future__ import annotations

import functools
import logging
import shutil
import struct
import time
from pathlib import Path

import numpy as np

from .config import SpatiaConfig, SimConfig
from .errors import FileFormatError, InputError, SpatiaError
from .qos import REPLAYED, TOPICS
from .geometry import Intrinsics, invert_pose, pose_from_xyz_quat, pose_to_xyz_quat, validate_pose
from .robot import CameraMount

log = logging.getLogger(__name__)

POSE, ODOM, TF = "geometry_msgs/msg/PoseStamped", "nav_msgs/msg/Odometry", "tf2_msgs/msg/TFMessage"
POSE_KINDS = ("auto", "camera", "base")
STORAGES = ("mcap", "sqlite3")


@functools.lru_cache(maxsize=1)
def typestore():
    """The rosbags typestore for ROS 2 Kilted (the messages used here are the same in Jazzy)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


# -- reading --------------------------------------------------------------------------------
def _stamp_ns(header, bag_ns: int) -> int:
    ns = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    return ns if ns > 0 else int(bag_ns)


def _pose_matrix(pose) -> np.ndarray:
    p, q = pose.position, pose.orientation
    return pose_from_xyz_quat([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])


def _transform_matrix(tf) -> np.ndarray:
    t, q = tf.translation, tf.rotation
    return pose_from_xyz_quat([t.x, t.y, t.z], [q.x, q.y, q.z, q.w])


def _pick_topic(topics: dict, topic: str | None, bag: Path) -> str:
    """``topic`` if usable, else the first PoseStamped topic, else Odometry, else /tf."""
    if topic:
        if topic not in topics:
            raise InputError(f"topic {topic} is not in {bag} (topics: {', '.join(sorted(topics)) or 'none'})")
        if topics[topic].msgtype not in (POSE, ODOM, TF):
            raise InputError(f"topic {topic} has type {topics[topic].msgtype}; expected PoseStamped, Odometry or TFMessage")
        return topic
    for wanted in (POSE, ODOM):
        names = sorted(name for name, info in topics.items() if info.msgtype == wanted and info.msgcount)
        if names:
            return names[0]
    if "/tf" in topics and topics["/tf"].msgcount:
        return "/tf"
    raise InputError(f"{bag} has no camera path: no PoseStamped, Odometry or /tf messages "
                     f"(topics: {', '.join(sorted(topics)) or 'none'})")


class _TfChain:
    """Latest transform of every edge; composes map -> ... -> frame when the chain is complete."""

    def __init__(self, root: str):
        self.root, self.edges = root, {}  # child -> (parent, 4x4)

    def add(self, tf_msg) -> set[str]:
        changed = set()
        for t in tf_msg.transforms:
            try:
                self.edges[t.child_frame_id] = (t.header.frame_id, _transform_matrix(t.transform))
                changed.add(t.child_frame_id)
            except InputError as exc:
                log.warning("transform %s -> %s ignored: %s", t.header.frame_id, t.child_frame_id, exc)
        return changed

    def chain(self, frame: str) -> list[str] | None:
        """Frames from ``frame`` up to (not including) the root, or None if it does not reach it."""
        out = []
        while frame != self.root:
            if frame not in self.edges or frame in out:
                return None
            out.append(frame)
            frame = self.edges[frame][0]
        return out

    def pose(self, frames: list[str]) -> np.ndarray:
        pose = np.eye(4)
        for frame in frames:  # child first: pose = T(root<-...) ... T(parent<-frame)
            pose = self.edges[frame][1] @ pose
        return pose


def _read_path(bag_path, topic=None, pose_kind="auto", mount=None, map_frame="map", base_frame="base_link",
               optical_frame="camera_optical_frame") -> tuple[str, str, list[tuple[int, np.ndarray]]]:
    """``(topic, kind, samples)``; ``kind`` is what the topic's poses are: camera, base or tf:FRAME."""
    from rosbags.highlevel import AnyReader, AnyReaderError
    from rosbags.rosbag2 import ReaderError

    import apsw  # rosbags' sqlite3 storage

    if pose_kind not in POSE_KINDS:
        raise InputError(f"pose kind {pose_kind!r} must be one of {', '.join(POSE_KINDS)}")
    bag = Path(bag_path)
    if not bag.exists():
        raise FileFormatError(f"rosbag {bag} does not exist")
    if bag.is_dir() and not (bag / "metadata.yaml").is_file():
        raise FileFormatError(f"{bag} is not a rosbag2 folder (no metadata.yaml)")
    base_to_optical = (mount or CameraMount(list(SimConfig().mount_xyz), list(SimConfig().mount_rpy))).base_to_optical()
    samples: list[tuple[int, np.ndarray]] = []
    skipped = 0
    try:
        with AnyReader([bag], default_typestore=typestore()) as reader:
            topic = _pick_topic(reader.topics, topic, bag)
            msgtype = reader.topics[topic].msgtype
            conns = [c for c in reader.connections if c.topic == topic]
            if msgtype == TF:
                tf = _TfChain(map_frame)
                static = [c for c in reader.connections if c.topic == "/tf_static" and c.msgtype == TF]
                for _, _, raw in reader.messages(connections=static) if static else ():
                    tf.add(reader.deserialize(raw, TF))
                frames = set(tf.edges) | {t.child_frame_id for _, _, raw in reader.messages(connections=conns)
                                          for t in reader.deserialize(raw, TF).transforms}
                want_optical = pose_kind == "camera" or (pose_kind == "auto" and optical_frame in frames)
                target = optical_frame if want_optical else base_frame
                kind = f"tf:{target}"
                if target not in frames:
                    raise InputError(f"{topic} in {bag} has no transform to {target!r} (frames: {', '.join(sorted(frames))})")
                for _, bag_ns, raw in reader.messages(connections=conns):
                    msg = reader.deserialize(raw, TF)
                    changed = tf.add(msg)
                    chain = tf.chain(target)
                    if chain is None or not changed & set(chain):
                        continue  # incomplete, or nothing on the chain moved
                    ns = max(_stamp_ns(t.header, bag_ns) for t in msg.transforms if t.child_frame_id in chain)
                    pose = tf.pose(chain)
                    samples.append((ns, pose if want_optical else pose @ base_to_optical))
                if not samples:
                    raise InputError(f"{topic} in {bag} never links {map_frame!r} to {target!r}")
            else:
                is_base = pose_kind == "base" or (pose_kind == "auto" and msgtype == ODOM)
                kind = "base" if is_base else "camera"
                for _, bag_ns, raw in reader.messages(connections=conns):
                    msg = reader.deserialize(raw, msgtype)
                    try:
                        pose = _pose_matrix(msg.pose.pose if msgtype == ODOM else msg.pose)
                    except InputError as exc:
                        skipped += 1
                        log.warning("%s: pose at bag time %d skipped: %s", topic, bag_ns, exc)
                        continue
                    samples.append((_stamp_ns(msg.header, bag_ns), pose @ base_to_optical if is_base else pose))
    except SpatiaError:
        raise
    except (AnyReaderError, ReaderError, OSError, ValueError, KeyError, IndexError, OverflowError, MemoryError,
            TypeError, EOFError, struct.error, apsw.Error) as exc:  # corrupt bytes reach rosbags' decoders in many forms
        raise FileFormatError(f"cannot read rosbag {bag}: {type(exc).__name__}: {exc}") from None
    out: dict[int, np.ndarray] = {}
    for ns, pose in sorted(samples, key=lambda s: s[0]):  # stable: the last pose of a stamp wins
        try:
            out[ns] = validate_pose(pose, f"{topic} pose")
        except InputError as exc:
            skipped += 1
            log.warning("%s: pose at %d ns skipped: %s", topic, ns, exc)
    if not out:
        raise InputError(f"{topic} in {bag} holds no valid pose ({skipped} skipped)")
    return topic, kind, list(out.items())


def read_camera_path(bag_path, topic=None, pose_kind="auto", mount=None, map_frame="map", base_frame="base_link",
                     optical_frame="camera_optical_frame") -> list[tuple[int, np.ndarray]]:
    """``[(t_ns, camera_pose 4x4 map<-optical), ...]`` in time order from a rosbag2 folder.

    ``pose_kind``: ``camera`` (the poses are the optical frame), ``base`` (base_link poses; the
    camera follows through ``mount``, default the simulator's) or ``auto`` (PoseStamped: camera,
    Odometry: base, /tf: the optical frame if the bag's TF has it, else the base). One pose per
    stamp (the last one read); invalid poses are skipped with a warning.
    """
    return _read_path(bag_path, topic, pose_kind, mount, map_frame, base_frame, optical_frame)[2]


# -- rosbags messages -----------------------------------------------------------------------
def _time(ns: int):
    return typestore().types["builtin_interfaces/msg/Time"](sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def _header(frame_id: str, ns: int):
    return typestore().types["std_msgs/msg/Header"](stamp=_time(ns), frame_id=frame_id)


def _image(array: np.ndarray, encoding: str, header):
    array = np.ascontiguousarray(array.astype(np.float32) if encoding == "32FC1" else array)
    h, w = array.shape[:2]
    return typestore().types["sensor_msgs/msg/Image"](
        header=header, height=h, width=w, encoding=encoding, is_bigendian=0,
        step=array.strides[0], data=array.view(np.uint8).reshape(-1))


def _camera_info(k: Intrinsics, header):
    t = typestore().types
    roi = t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
    return t["sensor_msgs/msg/CameraInfo"](
        header=header, height=k.height, width=k.width, distortion_model="plumb_bob", d=np.zeros(5),
        k=np.array([k.fx, 0, k.cx, 0, k.fy, k.cy, 0, 0, 1.0]), r=np.eye(3).reshape(-1),
        p=np.array([k.fx, 0, k.cx, 0, 0, k.fy, k.cy, 0, 0, 0, 1.0, 0]), binning_x=0, binning_y=0, roi=roi)


def _vec(cls_name: str, xyz):
    return typestore().types[cls_name](x=float(xyz[0]), y=float(xyz[1]), z=float(xyz[2]))


def _quat(q):
    return typestore().types["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))


def _transform(parent: str, child: str, mat: np.ndarray, ns: int):
    t = typestore().types
    xyz, q = pose_to_xyz_quat(mat)
    tf = t["geometry_msgs/msg/Transform"](translation=_vec("geometry_msgs/msg/Vector3", xyz), rotation=_quat(q))
    return t["geometry_msgs/msg/TransformStamped"](header=_header(parent, ns), child_frame_id=child, transform=tf)


def _odometry(odom_frame: str, base_frame: str, pose: np.ndarray, twist, ns: int):
    t = typestore().types
    xyz, q = pose_to_xyz_quat(pose)
    p = t["geometry_msgs/msg/Pose"](position=_vec("geometry_msgs/msg/Point", xyz), orientation=_quat(q))
    tw = t["geometry_msgs/msg/Twist"](linear=_vec("geometry_msgs/msg/Vector3", [twist[0], twist[1], 0.0]),
                                      angular=_vec("geometry_msgs/msg/Vector3", [0.0, 0.0, twist[2]]))
    return t["nav_msgs/msg/Odometry"](
        header=_header(odom_frame, ns), child_frame_id=base_frame,
        pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=p, covariance=np.zeros(36)),
        twist=t["geometry_msgs/msg/TwistWithCovariance"](twist=tw, covariance=np.zeros(36)))


def _body_twist(prev: np.ndarray | None, cur: np.ndarray, dt: float) -> np.ndarray:
    """Finite-difference (vx, vy, wz) of the base in its own frame; zero for the first sample."""
    if prev is None or dt <= 0:
        return np.zeros(3)
    delta = invert_pose(prev) @ cur
    return np.array([delta[0, 3], delta[1, 3], np.arctan2(delta[1, 0], delta[0, 0])]) / dt


def bag_qos(reliable: bool = True, depth: int = 10, latched: bool = False):
    """A rosbags QoS profile (stored in the bag's metadata for playback): keep last ``depth``."""
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE if reliable else QosReliability.BEST_EFFORT,
               QosDurability.TRANSIENT_LOCAL if latched else QosDurability.VOLATILE, zero, zero,
               QosLiveliness.AUTOMATIC, zero, False)


def replay_topics(reliable_images: bool = True) -> dict[str, tuple[str, dict]]:
    """Output topics of :func:`replay`: name -> (type, offered QoS as world_sim publishes them under
    ``sim.reliable_images``), from the one table :mod:`spatia_core.qos`."""
    return {name if name.startswith("/") else "/" + name: (TOPICS[name].type, TOPICS[name].offered(reliable_images).as_dict())
            for name in REPLAYED}


#: :func:`replay_topics` with the default ``sim.reliable_images`` (true).
REPLAY_TOPICS = replay_topics()


# -- replay ---------------------------------------------------------------------------------
def replay(bag_in, bag_out, config: SpatiaConfig, topic=None, pose_kind="auto", storage="mcap", progress=True) -> dict:
    """Render the world along the camera path of ``bag_in`` into a new bag ``bag_out``.

    Every output message carries the stamp of the source pose it was rendered at, as header
    stamp and as record time (``/tf_static`` is written once, at the first stamp). Raises
    :class:`FileFormatError` / :class:`InputError` for a missing or unusable input, an unknown
    storage or an existing output (never overwritten); a failed replay leaves no output behind.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer
    from tqdm import tqdm

    from .simulator import WorldSimulator

    if storage not in STORAGES:
        raise InputError(f"storage {storage!r} must be one of {', '.join(STORAGES)}")
    out = Path(bag_out)
    if out.exists():
        raise FileFormatError(f"output {out} exists already; choose another path (bags are never overwritten)")
    s = config.sim
    t_start = time.perf_counter()
    mount = CameraMount(list(s.mount_xyz), list(s.mount_rpy))
    source, kind, path = _read_path(bag_in, topic, pose_kind, mount, s.map_frame, s.base_frame, s.optical_frame)
    sim = WorldSimulator(config)
    k, ts = sim.world.intrinsics, typestore()

    writer = Writer(out, version=9, storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3)
    writer.open()
    try:
        topics = replay_topics(s.reliable_images)
        conns = {name: writer.add_connection(name, typ, typestore=ts, offered_qos_profiles=[bag_qos(**qos)])
                 for name, (typ, qos) in topics.items()}
        counts = dict.fromkeys(conns, 0)

        def put(name, msg, ns):
            writer.write(conns[name], ns, ts.serialize_cdr(msg, topics[name][0]))
            counts[name] += 1

        tf_msg, t0 = ts.types[TF], path[0][0]
        put("/tf_static", tf_msg(transforms=[_transform(s.base_frame, s.camera_frame, mount.base_to_link(), t0),
                                             _transform(s.camera_frame, s.optical_frame, mount.link_to_optical(), t0)]), t0)
        prev_ns, prev_base = t0, None
        for ns, pose in tqdm(path, unit="frame", desc="replaying", disable=not progress):
            frame = sim.step(camera_pose=pose)
            hdr = _header(s.optical_frame, ns)
            info = _camera_info(k, hdr)
            twist = _body_twist(prev_base, frame.base_pose, (ns - prev_ns) * 1e-9)
            prev_ns, prev_base = ns, frame.base_pose
            put("/clock", ts.types["rosgraph_msgs/msg/Clock"](clock=_time(ns)), ns)
            put("/camera/image_raw", _image(frame.rgb, "rgb8", hdr), ns)
            put("/camera/camera_info", info, ns)
            put("/camera/depth/image_raw", _image(frame.depth, "32FC1", hdr), ns)
            put("/camera/depth/camera_info", info, ns)
            put("/camera/scene_projection", _image(frame.scene_rgb, "rgb8", hdr), ns)
            put("/odom", _odometry(s.odom_frame, s.base_frame, frame.base_pose, twist, ns), ns)
            put("/tf", tf_msg(transforms=[_transform(s.map_frame, s.odom_frame, np.eye(4), ns),
                                          _transform(s.odom_frame, s.base_frame, frame.base_pose, ns)]), ns)
        writer.close()
    except BaseException:
        writer.abort()
        shutil.rmtree(out, ignore_errors=True)
        raise
    return {
        "input": str(bag_in), "output": str(out), "storage": storage, "source_topic": source, "pose_kind": kind,
        "frames": len(path), "start_ns": path[0][0], "end_ns": path[-1][0],
        "duration_s": (path[-1][0] - path[0][0]) * 1e-9, "resolution": [k.width, k.height],
        "backend": sim.world.generator.name, "topics": counts, "seconds": round(time.perf_counter() - t_start, 3),
    }


__all__ = ["read_camera_path", "replay", "replay_topics", "typestore", "bag_qos", "REPLAY_TOPICS"]
