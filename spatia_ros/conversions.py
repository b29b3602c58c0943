"""NumPy <-> ROS 2 message conversions at the node boundary (no algorithms here).

Images: ``rgb8``/``bgr8``/``rgba8``/``bgra8``/``mono8`` <-> uint8 arrays, ``32FC1`` (metres) and
``16UC1`` (millimetres, REP 118) <-> float32 metres. Point clouds: ``x y z`` float32 + packed
``rgb`` (the layout RViz colours by). Poses: ``geometry_msgs/Pose`` <-> 4x4 matrices.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose, TransformStamped
from nav_msgs.msg import Odometry
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header

from spatia_core.errors import InputError
from spatia_core.geometry import Intrinsics, pose_from_xyz_quat, pose_to_xyz_quat, validate_pose

_UINT8_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}


def ns_to_time(ns: int) -> Time:
    return Time(sec=int(ns // 1_000_000_000), nanosec=int(ns % 1_000_000_000))


def time_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def header(frame_id: str, ns: int) -> Header:
    return Header(frame_id=frame_id, stamp=ns_to_time(ns))


# -- images ---------------------------------------------------------------------------------
def image_msg(array: np.ndarray, encoding: str, hdr: Header) -> Image:
    """``rgb8`` from uint8 (H, W, 3) or ``32FC1`` from float32 (H, W)."""
    array = np.ascontiguousarray(array)
    if encoding == "rgb8":
        assert array.dtype == np.uint8 and array.ndim == 3 and array.shape[2] == 3
        step = array.shape[1] * 3
    elif encoding == "32FC1":
        array = array.astype(np.float32, copy=False)
        step = array.shape[1] * 4
    else:
        raise ValueError(f"unsupported output encoding {encoding}")
    msg = Image(header=hdr, height=array.shape[0], width=array.shape[1], encoding=encoding, is_bigendian=0, step=step)
    msg.data = array.tobytes()
    return msg


def image_to_numpy(msg: Image) -> np.ndarray:
    """uint8 (H, W, 3) RGB for colour encodings, float32 (H, W) metres for depth encodings.

    Raises :class:`InputError` for unsupported encodings or inconsistent sizes.
    """
    h, w, enc = msg.height, msg.width, msg.encoding
    data = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if enc in _UINT8_CHANNELS:
        ch = _UINT8_CHANNELS[enc]
        rowbytes = w * ch
    elif enc in ("32FC1", "16UC1"):
        rowbytes = w * (4 if enc == "32FC1" else 2)
    else:
        raise InputError(f"unsupported image encoding {enc!r} (rgb8, bgr8, rgba8, bgra8, mono8, 32FC1, 16UC1)")
    if h == 0 or w == 0 or msg.step < rowbytes or data.size < msg.step * h:
        raise InputError(f"image {w}x{h} {enc}: step {msg.step} and {data.size} bytes do not fit")
    rows = data[: msg.step * h].reshape(h, msg.step)[:, :rowbytes]
    if enc in _UINT8_CHANNELS:
        img = rows.reshape(h, w, ch)
        if enc == "mono8":
            return np.repeat(img, 3, axis=2)
        if enc.startswith("bgr"):
            img = img[..., 2::-1]
        return np.ascontiguousarray(img[..., :3])
    order = ">" if msg.is_bigendian else "<"
    if enc == "32FC1":
        depth = np.ascontiguousarray(rows).view(f"{order}f4").reshape(h, w).astype(np.float32)
        return np.where(np.isfinite(depth), depth, 0.0).astype(np.float32)  # REP 118: NaN/inf = no return
    return np.ascontiguousarray(rows).view(f"{order}u2").reshape(h, w).astype(np.float32) / 1000.0


def camera_info_msg(k: Intrinsics, hdr: Header) -> CameraInfo:
    """Pinhole camera info without distortion (``plumb_bob`` with zero coefficients)."""
    msg = CameraInfo(header=hdr, width=k.width, height=k.height, distortion_model="plumb_bob")
    msg.d = [0.0] * 5
    msg.k = [k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# -- poses ----------------------------------------------------------------------------------
def pose_to_matrix(pose: Pose) -> np.ndarray:
    """4x4 from ``geometry_msgs/Pose``; :class:`InputError` for NaN or a zero quaternion."""
    p, q = pose.position, pose.orientation
    xyz = [p.x, p.y, p.z]
    if not np.all(np.isfinite(xyz)):
        raise InputError(f"pose position {xyz} is not finite")
    return validate_pose(pose_from_xyz_quat(xyz, [q.x, q.y, q.z, q.w]))


def matrix_to_pose(mat: np.ndarray) -> Pose:
    xyz, q = pose_to_xyz_quat(mat)
    out = Pose()
    out.position.x, out.position.y, out.position.z = (float(v) for v in xyz)
    out.orientation.x, out.orientation.y, out.orientation.z, out.orientation.w = (float(v) for v in q)
    return out


def transform_msg(parent: str, child: str, mat: np.ndarray, ns: int) -> TransformStamped:
    xyz, q = pose_to_xyz_quat(mat)
    msg = TransformStamped(header=header(parent, ns), child_frame_id=child)
    t, r = msg.transform.translation, msg.transform.rotation
    t.x, t.y, t.z = (float(v) for v in xyz)
    r.x, r.y, r.z, r.w = (float(v) for v in q)
    return msg


def odometry_msg(odom_frame: str, base_frame: str, base_pose: np.ndarray, twist: np.ndarray, ns: int) -> Odometry:
    """Odometry of the base in ``odom_frame``; ``twist`` = (vx, vy, wz) in the base frame."""
    msg = Odometry(header=header(odom_frame, ns), child_frame_id=base_frame)
    msg.pose.pose = matrix_to_pose(base_pose)
    msg.twist.twist.linear.x, msg.twist.twist.linear.y = float(twist[0]), float(twist[1])
    msg.twist.twist.angular.z = float(twist[2])
    return msg


# -- point clouds ---------------------------------------------------------------------------
def pointcloud2_msg(xyz: np.ndarray, rgb: np.ndarray, hdr: Header) -> PointCloud2:
    """``x y z`` float32 + ``rgb`` (uint32 0x00RRGGBB stored as FLOAT32, as RViz expects)."""
    n = xyz.shape[0]
    cloud = np.zeros(n, dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
    cloud["x"], cloud["y"], cloud["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    rgb = rgb.astype(np.uint32)
    cloud["rgb"] = (rgb[:, 0] << 16) | (rgb[:, 1] << 8) | rgb[:, 2]
    fields = [PointField(name=name, offset=4 * i, datatype=PointField.FLOAT32, count=1) for i, name in enumerate("xyz")]
    fields.append(PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1))
    msg = PointCloud2(header=hdr, height=1, width=n, fields=fields, is_bigendian=False, point_step=16,
                      row_step=16 * n, is_dense=True)
    msg.data = cloud.tobytes()
    return msg


_FIELD_DTYPES = {PointField.INT8: "i1", PointField.UINT8: "u1", PointField.INT16: "i2", PointField.UINT16: "u2",
                 PointField.INT32: "i4", PointField.UINT32: "u4", PointField.FLOAT32: "f4", PointField.FLOAT64: "f8"}


def pointcloud2_to_numpy(msg: PointCloud2) -> tuple[np.ndarray, np.ndarray | None]:
    """``(xyz float32 (N, 3), rgb uint8 (N, 3) or None)``; points with NaN coordinates dropped."""
    names = {f.name: f for f in msg.fields}
    if not {"x", "y", "z"} <= names.keys():
        raise InputError("PointCloud2 needs x, y and z fields")
    order = ">" if msg.is_bigendian else "<"
    dtype = {"names": [], "formats": [], "offsets": [], "itemsize": msg.point_step}
    for name in ("x", "y", "z", "rgb", "rgba"):
        if name in names:
            f = names[name]
            base = "u4" if name in ("rgb", "rgba") else _FIELD_DTYPES.get(f.datatype)
            if base is None:
                raise InputError(f"PointCloud2 field {name} has unsupported datatype {f.datatype}")
            dtype["names"].append(name)
            dtype["formats"].append(order + base)
            dtype["offsets"].append(f.offset)
    n = msg.width * msg.height
    data = bytes(msg.data)
    if msg.point_step <= 0 or len(data) < n * msg.point_step:
        raise InputError(f"PointCloud2 data has {len(data)} bytes for {n} points of {msg.point_step} bytes")
    if msg.height > 1 and msg.row_step != msg.width * msg.point_step:
        rows = np.frombuffer(data, np.uint8)[: msg.row_step * msg.height].reshape(msg.height, msg.row_step)
        data = rows[:, : msg.width * msg.point_step].tobytes()
    arr = np.frombuffer(data, dtype=np.dtype(dtype), count=n)
    xyz = np.stack([arr["x"], arr["y"], arr["z"]], 1).astype(np.float32)
    keep = np.isfinite(xyz).all(1)
    rgb = None
    colour_field = "rgb" if "rgb" in names else "rgba" if "rgba" in names else None
    if colour_field:
        packed = arr[colour_field].astype(np.uint32)
        rgb = np.stack([(packed >> 16) & 255, (packed >> 8) & 255, packed & 255], 1).astype(np.uint8)[keep]
    return xyz[keep], rgb
