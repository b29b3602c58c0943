"""Camera trajectories: RealEstate10K and pose files, anchoring and generated paths.

All poses are camera-to-world (c2w) float64 (4, 4) matrices with OpenCV camera axes (x right,
y down, z forward) in the ROS ``map`` frame (x forward, y left, z up); a trajectory is a
float64 (T, 4, 4) array. The official test-case folder is read by :mod:`spatia_core.testcase`.

File formats:

* **RealEstate10K** camera file: first line the source URL, then per frame
  ``timestamp_us fx fy cx cy k1 k2`` and the 12 numbers of the 3x4 world-to-camera matrix
  (row-major), intrinsics normalised by width/height.
* **Pose file** (ours): one pose per line, the 16 numbers of the c2w matrix row-major (12 for a
  3x4); ``#`` starts a comment.

Generated trajectories (:func:`orbit`, :func:`forward_back`, :func:`closed_loop`,
:func:`look_around`) start exactly at ``start_pose``; all but ``look_around``'s midway frames also
end there. They only add yaw about the world z axis and pitch about the camera's own x axis to
the start rotation, so an upright start camera stays upright (no roll).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FileFormatError, InputError
from .geometry import Intrinsics, invert_pose, validate_pose, validate_poses

#: Names accepted by :func:`make_trajectory` (``closed_loop`` is an alias of ``loop``).
TRAJECTORY_NAMES = ("orbit", "forward_back", "loop", "look_around")
_ALIASES = {"closed_loop": "loop", "forward-back": "forward_back", "look-around": "look_around"}
#: Frame count used by :func:`load_trajectory` for a generated trajectory when none is given.
DEFAULT_N_FRAMES = 33


# --------------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------------


def _orthonormalize(rot: np.ndarray) -> np.ndarray:
    """Nearest proper rotation(s) to ``rot`` ((..., 3, 3)) by SVD."""
    u, _, vt = np.linalg.svd(rot)
    r = u @ vt
    d = np.linalg.det(r)
    if np.any(d < 0):  # cannot happen for inputs that passed validate_pose, kept for safety
        u[..., :, -1] *= np.sign(d)[..., None]
        r = u @ vt
    return r


def _clean(poses: np.ndarray) -> np.ndarray:
    """Copy of validated poses (T, 4, 4) with an exact last row and the rotations that are off by
    more than 1e-12 (e.g. read from files with 9 digits) projected onto proper rotations."""
    out = np.array(poses, dtype=np.float64)
    rot = out[..., :3, :3]
    err = np.abs(np.swapaxes(rot, -1, -2) @ rot - np.eye(3)).max(axis=(-2, -1))
    off = err > 1e-12
    if np.any(off):
        out[off, :3, :3] = _orthonormalize(rot[off])
    out[..., 3, :] = (0.0, 0.0, 0.0, 1.0)
    return out


def _rot_z(angle: np.ndarray) -> np.ndarray:
    """Rotations about the world z axis, float64 (T, 3, 3)."""
    c, s = np.cos(angle), np.sin(angle)
    r = np.zeros(np.shape(angle) + (3, 3))
    r[..., 0, 0], r[..., 0, 1], r[..., 1, 0], r[..., 1, 1], r[..., 2, 2] = c, -s, s, c, 1.0
    return r


def _rot_x(angle: np.ndarray) -> np.ndarray:
    """Rotations about the x axis, float64 (T, 3, 3); positive tilts an OpenCV camera up."""
    c, s = np.cos(angle), np.sin(angle)
    r = np.zeros(np.shape(angle) + (3, 3))
    r[..., 0, 0], r[..., 1, 1], r[..., 1, 2], r[..., 2, 1], r[..., 2, 2] = 1.0, c, -s, s, c
    return r


#: Longest trajectory generated (about 70 minutes at 24 fps; 128 bytes of poses per frame).
MAX_FRAMES = 100_000


def _check_frames(n_frames, minimum: int = 2) -> int:
    if isinstance(n_frames, bool) or not isinstance(n_frames, (int, np.integer)) or n_frames < minimum:
        raise InputError(f"n_frames must be an integer >= {minimum}, got {n_frames!r}")
    if n_frames > MAX_FRAMES:
        raise InputError(f"n_frames must be at most {MAX_FRAMES}, got {n_frames}")
    return int(n_frames)


def _check_number(value, name: str, positive: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number, got {value!r}") from None
    if not np.isfinite(v) or (positive and v <= 0):
        raise InputError(f"{name} must be a finite{' positive' if positive else ''} number, got {value!r}")
    return v


def _heading(pose: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Horizontal forward and left unit vectors, yaw and elevation of a camera's view direction.

    A camera looking straight up or down uses its "up" image direction as heading instead.
    """
    fwd = pose[:3, 2]
    h = np.array([fwd[0], fwd[1], 0.0])
    if np.linalg.norm(h) < 1e-6:
        up = -pose[:3, 1]
        h = np.array([up[0], up[1], 0.0]) * (-1.0 if fwd[2] > 0 else 1.0)  # image top = heading when looking down
    h /= np.linalg.norm(h)
    left = np.array([-h[1], h[0], 0.0])
    yaw = float(np.arctan2(h[1], h[0]))
    elev = float(np.arctan2(fwd[2], np.hypot(fwd[0], fwd[1])))
    return h, left, yaw, elev


def _compose(start: np.ndarray, positions: np.ndarray, yaw: np.ndarray, pitch: np.ndarray | None = None) -> np.ndarray:
    """Poses (T, 4, 4) with rotation ``Rz(yaw) @ R_start @ Rx(pitch)`` at ``positions`` (T, 3)."""
    rot = _rot_z(yaw) @ start[:3, :3]
    if pitch is not None:
        rot = rot @ _rot_x(pitch)
    out = np.zeros((len(positions), 4, 4))
    out[:, :3, :3] = rot
    out[:, :3, 3] = positions
    out[:, 3, 3] = 1.0
    out[0] = start  # bit-exact first pose
    return validate_poses(out, "trajectory")


def _wrap(angle: np.ndarray) -> np.ndarray:
    return (angle + np.pi) % (2 * np.pi) - np.pi


# --------------------------------------------------------------------------------------------
# Generated trajectories
# --------------------------------------------------------------------------------------------


def orbit(
    start_pose,
    n_frames: int,
    radius: float = 0.5,
    look_distance: float = 1.5,
    turns: float = 1.0,
    side: str = "right",
    plane: str = "horizontal",
) -> np.ndarray:
    """Move the camera around a circle through its start position while it keeps looking at the
    point ``look_distance`` metres ahead of the start camera.

    Args:
        start_pose: float (4, 4) c2w start pose.
        n_frames: number of poses T >= 2 (the first is ``start_pose``).
        radius: circle radius in metres.
        look_distance: distance of the fixed look-at point ahead of the start camera (metres).
        turns: number of revolutions; whole numbers end back at ``start_pose``.
        side: ``"right"`` or ``"left"``: the circle's centre lies ``radius`` to that side of the
            start camera. The camera first moves forward (``plane="horizontal"``) or up
            (``"vertical"``), then sideways, then back; it reaches ``2 * radius`` sideways.
        plane: ``"horizontal"`` (circle in the ground plane, constant height) or ``"vertical"``
            (circle in the upright image plane: sideways and up/down).

    Returns:
        float64 (T, 4, 4) c2w poses.
    """
    start = validate_pose(start_pose, "start_pose")
    n = _check_frames(n_frames)
    radius = _check_number(radius, "radius", positive=True)
    look_distance = _check_number(look_distance, "look_distance", positive=True)
    turns = _check_number(turns, "turns")
    if side not in ("right", "left"):
        raise InputError(f"orbit side must be 'right' or 'left', got {side!r}")
    if plane not in ("horizontal", "vertical"):
        raise InputError(f"orbit plane must be 'horizontal' or 'vertical', got {plane!r}")
    fwd_h, left, yaw0, elev0 = _heading(start)
    eye0 = start[:3, 3]
    target = eye0 + look_distance * start[:3, 2]
    toward = left if side == "left" else -left  # from the start towards the circle's centre
    axis2 = fwd_h if plane == "horizontal" else np.array([0.0, 0.0, 1.0])
    theta = np.linspace(0.0, 2 * np.pi * turns, n)
    # offset from the start: r * (1 - cos) toward the centre side, r * sin along axis2
    pos = eye0 + radius * ((1 - np.cos(theta))[:, None] * toward + np.sin(theta)[:, None] * axis2)
    d = target - pos
    yaw = _wrap(np.arctan2(d[:, 1], d[:, 0]) - yaw0)
    pitch = np.arctan2(d[:, 2], np.hypot(d[:, 0], d[:, 1])) - elev0
    return _compose(start, pos, yaw, pitch)


def forward_back(start_pose, n_frames: int, distance: float = 1.0, horizontal: bool = False) -> np.ndarray:
    """Move along the view direction by ``distance`` metres and back (smooth cosine profile).

    Args:
        start_pose: float (4, 4) c2w start pose.
        n_frames: number of poses T >= 2; the middle frame is the farthest.
        distance: metres to travel forward (negative: backward first).
        horizontal: move along the horizontal heading instead of the (possibly tilted) optical axis.

    Returns:
        float64 (T, 4, 4) c2w poses; the rotation is the start rotation throughout.
    """
    start = validate_pose(start_pose, "start_pose")
    n = _check_frames(n_frames)
    distance = _check_number(distance, "distance")
    direction = _heading(start)[0] if horizontal else start[:3, 2]
    t = np.linspace(0.0, 1.0, n)
    s = 0.5 * (1.0 - np.cos(2 * np.pi * t))
    pos = start[:3, 3] + distance * s[:, None] * direction
    return _compose(start, pos, np.zeros(n))


def closed_loop(
    start_pose, n_frames: int, radius: float = 0.4, turn: str = "left", facing: str = "outward"
) -> np.ndarray:
    """Drive a horizontal circle while yawing through 360 degrees; ends exactly at the start pose.

    Args:
        start_pose: float (4, 4) c2w start pose.
        n_frames: number of poses T >= 2.
        radius: circle radius in metres.
        turn: ``"left"`` (counter-clockwise seen from above) or ``"right"``.
        facing: ``"outward"``: the camera faces away from a centre ``radius`` behind it, so the
            loop sees the whole room and comes back to the first view (the paper's closed-loop
            protocol; it travels up to ``2 * radius`` backward and ``radius`` sideways);
            ``"tangent"``: the camera faces along its motion like a turning vehicle (the centre is
            beside it; it sweeps up to ``2 * radius`` sideways and ``radius`` forward/back).

    Returns:
        float64 (T, 4, 4) c2w poses at the start height with the start pitch.
    """
    start = validate_pose(start_pose, "start_pose")
    n = _check_frames(n_frames)
    radius = _check_number(radius, "radius", positive=True)
    if turn not in ("left", "right"):
        raise InputError(f"loop turn must be 'left' or 'right', got {turn!r}")
    if facing not in ("tangent", "outward"):
        raise InputError(f"loop facing must be 'tangent' or 'outward', got {facing!r}")
    fwd_h, left, _, _ = _heading(start)
    sign = 1.0 if turn == "left" else -1.0
    theta = sign * np.linspace(0.0, 2 * np.pi, n)
    rz = _rot_z(theta)
    if facing == "tangent":
        center = start[:3, 3] + sign * radius * left
        offset0 = -sign * radius * left
    else:
        center = start[:3, 3] - radius * fwd_h
        offset0 = radius * fwd_h
    pos = center + rz @ offset0
    pos[-1] = start[:3, 3]
    yaw = theta.copy()
    yaw[-1] = 0.0  # Rz(2 pi) is the identity up to rounding; make the last pose exact
    return _compose(start, pos, yaw)


def look_around(start_pose, n_frames: int, yaw_deg: float = 60.0, pitch_deg: float = 0.0) -> np.ndarray:
    """Rotate in place: turn left by ``yaw_deg``, back through the start to the right by the same
    angle, and back to the start (a smooth sine in yaw); optionally nod by ``pitch_deg``.

    Returns:
        float64 (T, 4, 4) c2w poses, all at the start position; first and last equal the start.
    """
    start = validate_pose(start_pose, "start_pose")
    n = _check_frames(n_frames)
    yaw_deg = _check_number(yaw_deg, "yaw_deg")
    pitch_deg = _check_number(pitch_deg, "pitch_deg")
    if abs(pitch_deg) >= 80:
        raise InputError(f"pitch_deg must be within (-80, 80), got {pitch_deg}")
    t = np.linspace(0.0, 1.0, n)
    yaw = np.deg2rad(yaw_deg) * np.sin(2 * np.pi * t)
    pitch = np.deg2rad(pitch_deg) * np.sin(4 * np.pi * t)
    yaw[-1] = pitch[-1] = 0.0
    pos = np.repeat(start[None, :3, 3], n, axis=0)
    return _compose(start, pos, yaw, pitch)


_GENERATORS = {"orbit": orbit, "forward_back": forward_back, "loop": closed_loop, "look_around": look_around}
#: Generated-trajectory functions by name (read-only view kept for callers of the old API).
GENERATORS = dict(_GENERATORS)


def make_trajectory(name: str, start_pose, n_frames: int, **kwargs) -> np.ndarray:
    """Generate the trajectory ``name`` (one of :data:`TRAJECTORY_NAMES`, or ``closed_loop``).

    ``kwargs`` go to the generator (e.g. ``radius``). Returns float64 (T, 4, 4) c2w poses.
    """
    key = _ALIASES.get(str(name), str(name))
    if key not in _GENERATORS:
        raise InputError(f"unknown trajectory {name!r}; choose one of {', '.join(TRAJECTORY_NAMES)}")
    try:
        return _GENERATORS[key](start_pose, n_frames, **kwargs)
    except TypeError as exc:  # an unknown keyword
        raise InputError(f"trajectory {key!r}: {exc}") from None


# --------------------------------------------------------------------------------------------
# Anchoring and resampling
# --------------------------------------------------------------------------------------------


def anchor(poses, start_pose, scale: float = 1.0) -> np.ndarray:
    """Re-express a trajectory relative to its first pose and place it at ``start_pose``.

    ``c2w_i' = start_pose @ S(inv(c2w_0) @ c2w_i)`` where ``S`` multiplies the relative
    translation by ``scale`` (e.g. to convert RE10K's arbitrary units to metres).

    Args:
        poses: float (T, 4, 4) c2w poses.
        start_pose: float (4, 4) c2w pose of the first frame after anchoring.
        scale: positive factor on relative translations.

    Returns:
        float64 (T, 4, 4) c2w poses whose first element is ``start_pose``.
    """
    poses = validate_poses(poses)
    start = validate_pose(start_pose, "start_pose")
    scale = _check_number(scale, "scale", positive=True)
    rel = invert_pose(poses[0]) @ poses
    rel[:, :3, 3] *= scale
    out = _clean(start @ rel)
    out[0] = start
    return out


def resample(poses, n_frames: int) -> np.ndarray:
    """Resample a trajectory to ``n_frames`` poses evenly spaced in its frame index
    (linear translation, spherical-linear rotation). Returns float64 (n_frames, 4, 4)."""
    from scipy.spatial.transform import Rotation, Slerp

    poses = validate_poses(poses)
    n = _check_frames(n_frames, minimum=1)
    if len(poses) == n:
        return poses.copy()
    if len(poses) == 1:
        return np.repeat(poses, n, axis=0)
    src = np.arange(len(poses), dtype=np.float64)
    dst = np.linspace(0.0, len(poses) - 1.0, n)
    out = np.zeros((n, 4, 4))
    out[:, :3, :3] = Slerp(src, Rotation.from_matrix(poses[:, :3, :3]))(dst).as_matrix()
    for k in range(3):
        out[:, k, 3] = np.interp(dst, src, poses[:, k, 3])
    out[:, 3, 3] = 1.0
    out[0], out[-1] = poses[0], poses[-1]
    return out


# --------------------------------------------------------------------------------------------
# Pose files
# --------------------------------------------------------------------------------------------


def _numbers(text: str, where: str) -> list[float]:
    try:
        return [float(tok) for tok in text.replace(",", " ").split()]
    except ValueError:
        raise FileFormatError(f"{where}: expected numbers, got {text.strip()[:60]!r}") from None


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise FileFormatError(f"{path}: file not found")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FileFormatError(f"{path}: cannot read ({exc.__class__.__name__}: {exc})") from None


def _as_pose(values, where: str) -> np.ndarray:
    """(4, 4) pose from 16 or 12 row-major numbers, or a nested list; FileFormatError otherwise."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 16:
        arr = arr.reshape(4, 4)
    elif arr.size == 12:
        arr = arr.reshape(3, 4)
    else:
        raise FileFormatError(f"{where}: expected a 4x4 or 3x4 matrix (16 or 12 numbers), got {arr.size}")
    try:
        return validate_pose(arr, "matrix")
    except InputError as exc:
        raise FileFormatError(f"{where}: {exc}") from None


def write_poses(path, poses) -> Path:
    """Write c2w poses (T, 4, 4) to a text file, one line of 16 row-major numbers per pose."""
    poses = validate_poses(poses)
    path = Path(path)
    lines = ["# spatia_ros poses: camera-to-world 4x4 row-major per line; OpenCV camera axes; map frame"]
    lines += [" ".join(f"{v:.17g}" for v in p.ravel()) for p in poses]
    from .outputs import atomic_write_bytes

    try:
        atomic_write_bytes(path, ("\n".join(lines) + "\n").encode("utf-8"))  # whole or not at all
    except FileFormatError as exc:
        raise FileFormatError(f"{path}: cannot write ({exc})") from None
    return path


def read_poses(path) -> np.ndarray:
    """Read a pose file written by :func:`write_poses`; returns float64 (T, 4, 4) c2w poses.

    Raises:
        FileFormatError: missing file, a line that is not 16 (or 12) numbers, an invalid pose,
            or no pose at all; the message names the file and line.
    """
    path = Path(path)
    poses = []
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        body = line.split("#", 1)[0].strip()
        if body:
            where = f"{path}:{lineno}"
            poses.append(_as_pose(_numbers(body, where), where))
    if not poses:
        raise FileFormatError(f"{path}: no poses in file")
    return _clean(np.stack(poses))


# --------------------------------------------------------------------------------------------
# RealEstate10K
# --------------------------------------------------------------------------------------------


@dataclass
class Re10kTrajectory:
    """A RealEstate10K camera file.

    Attributes:
        poses: float64 (T, 4, 4) c2w poses (OpenCV axes, RE10K's own world frame and scale).
        intrinsics: float64 (T, 4) ``[fx fy cx cy]`` normalised by image width/height.
        timestamps_us: int64 (T,) frame timestamps in microseconds.
        url: the source video URL ('' if the file has none).
        path: the file it was read from.
    """

    poses: np.ndarray
    intrinsics: np.ndarray
    timestamps_us: np.ndarray
    url: str = ""
    path: Path | None = None

    def intrinsics_at(self, width: int, height: int, frame: int = 0) -> Intrinsics:
        """Pixel intrinsics of ``frame`` for an image of ``width`` x ``height``."""
        return Intrinsics.from_normalized(*self.intrinsics[frame], width, height)


def read_re10k(path) -> Re10kTrajectory:
    """Read a RealEstate10K camera file (see the module docstring for the format).

    Raises:
        FileFormatError: missing file, a frame line without 19 numbers, an invalid matrix or
            intrinsics, or no frames; the message names the file and line.
    """
    path = Path(path)
    lines = _read_text(path).splitlines()
    url = ""
    stamps, intr, poses = [], [], []
    for lineno, line in enumerate(lines, 1):
        body = line.strip()
        if not body or body.startswith("#"):
            continue
        if lineno == 1 and not body[0].isdigit() and not body[0] in "+-.":
            url = body
            continue
        where = f"{path}:{lineno}"
        vals = _numbers(body, where)
        if len(vals) != 19:
            raise FileFormatError(f"{where}: expected 19 numbers (timestamp, 6 intrinsics, 12 w2c), got {len(vals)}")
        if not np.all(np.isfinite(vals[:7])):
            raise FileFormatError(f"{where}: timestamp, intrinsics and distortion must be finite, got {vals[:7]}")
        k = np.asarray(vals[1:5])
        if not np.all(np.isfinite(k)) or k[0] <= 0 or k[1] <= 0:
            raise FileFormatError(f"{where}: invalid intrinsics {k.tolist()}")
        stamps.append(int(round(vals[0])))
        intr.append(k)
        poses.append(invert_pose(_as_pose(vals[7:], where)))
    if not poses:
        raise FileFormatError(f"{path}: no camera frames in file")
    return Re10kTrajectory(
        poses=_clean(np.stack(poses)),
        intrinsics=np.stack(intr),
        timestamps_us=np.asarray(stamps, dtype=np.int64),
        url=url,
        path=path,
    )


# --------------------------------------------------------------------------------------------
# One entry point for "where does the camera go"
# --------------------------------------------------------------------------------------------


def _is_re10k(path: Path) -> bool:
    """True if the first non-comment data line of ``path`` has 19 numbers (or line 1 is a URL)."""
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        body = line.strip()
        if not body or body.startswith("#"):
            continue
        if lineno == 1 and "://" in body:
            return True
        try:
            return len([float(t) for t in body.split()]) == 19
        except ValueError:
            return False
    return False


def load_trajectory(
    spec: str | os.PathLike, start_pose=None, n_frames: int | None = None, scale: float = 1.0, **kwargs
) -> np.ndarray:
    """Resolve a trajectory spec to c2w poses (T, 4, 4) float64.

    ``spec`` is one of:

    * a generated-trajectory name (:data:`TRAJECTORY_NAMES`): generated from ``start_pose`` with
      ``n_frames`` (default :data:`DEFAULT_N_FRAMES`) and ``kwargs``;
    * a test-case folder: its ``w2c.txt`` poses as given (world frame of the case);
    * an RE10K ``.txt`` camera file: anchored to ``start_pose`` with translations times ``scale``
      (as given if ``start_pose`` is None);
    * a pose file (:func:`write_poses` format): as given.

    ``n_frames`` only applies to generated trajectories: files keep their own frames (use
    :func:`resample` to change their count).

    Raises:
        InputError: an unknown name (and not a path), or a generated trajectory without start pose.
        FileFormatError: an unreadable or malformed file.
    """
    spec_str = os.fspath(spec)
    key = _ALIASES.get(spec_str, spec_str)
    if key in _GENERATORS:
        if start_pose is None:
            raise InputError(f"trajectory {spec_str!r} needs a start pose")
        return make_trajectory(key, start_pose, DEFAULT_N_FRAMES if n_frames is None else n_frames, **kwargs)
    path = Path(spec_str).expanduser()
    if not path.exists():
        raise InputError(
            f"trajectory {spec_str!r} is neither a known name ({', '.join(TRAJECTORY_NAMES)}) nor a file or folder"
        )
    if path.is_dir():
        from .testcase import read_testcase

        poses = read_testcase(path).poses
    elif _is_re10k(path):
        poses = read_re10k(path).poses
        if start_pose is not None:
            poses = anchor(poses, start_pose, scale=scale)
    else:
        poses = read_poses(path)
    return poses


__all__ = [
    "DEFAULT_N_FRAMES",
    "GENERATORS",
    "Re10kTrajectory",
    "TRAJECTORY_NAMES",
    "anchor",
    "closed_loop",
    "forward_back",
    "load_trajectory",
    "look_around",
    "make_trajectory",
    "orbit",
    "read_poses",
    "read_re10k",
    "resample",
    "write_poses",
]
