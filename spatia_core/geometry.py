"""Camera geometry: validated poses, pinhole intrinsics and frame conventions.

Conventions used everywhere in spatia_core:

* A pose is a camera-to-world 4x4 matrix (float64) whose rotation columns are the OpenCV camera
  axes (x right, y down, z forward), i.e. the ROS optical frame.
* The world is the ROS ``map`` frame (REP 103: x forward, y left, z up).
* Depth is metric z along the optical axis; 0 means "no value".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

#: Rotation from the ROS body frame (x fwd, y left, z up) to the optical frame axes:
#: ``R_body_optical`` maps optical-frame vectors to body-frame vectors.
R_BODY_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def validate_pose(pose, name: str = "pose", tol: float = 1e-3) -> np.ndarray:
    """Check a camera-to-world pose and return it as a float64 (4, 4) array.

    Accepts (4, 4) or (3, 4). Raises :class:`InputError` for non-finite values, a rotation
    that is not orthonormal within ``tol`` (or is a reflection), or a bad last row.
    """
    arr = np.asarray(pose, dtype=np.float64)
    if arr.shape == (3, 4):
        arr = np.vstack([arr, [0.0, 0.0, 0.0, 1.0]])
    if arr.shape != (4, 4):
        raise InputError(f"{name} must be a 4x4 or 3x4 matrix, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or inf")
    if not np.allclose(arr[3], [0.0, 0.0, 0.0, 1.0], atol=tol):
        raise InputError(f"{name} last row must be [0 0 0 1], got {arr[3].tolist()}")
    rot = arr[:3, :3]
    err = np.abs(rot.T @ rot - np.eye(3)).max()
    if err > tol:
        raise InputError(f"{name} rotation is not orthonormal (max |R^T R - I| = {err:.3g})")
    if np.linalg.det(rot) < 0:
        raise InputError(f"{name} rotation is a reflection (det < 0)")
    return arr


def validate_poses(poses, name: str = "poses") -> np.ndarray:
    """Validate a sequence of poses; returns float64 (T, 4, 4)."""
    arr = np.asarray(poses, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[0] == 0:
        raise InputError(f"{name} must be a non-empty (T, 4, 4) array, got shape {arr.shape}")
    return np.stack([validate_pose(p, f"{name}[{i}]") for i, p in enumerate(arr)])


def invert_pose(pose: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform (works on (..., 4, 4))."""
    pose = np.asarray(pose, dtype=np.float64)
    out = np.zeros_like(pose)
    rot_t = np.swapaxes(pose[..., :3, :3], -1, -2)
    out[..., :3, :3] = rot_t
    out[..., :3, 3] = -(rot_t @ pose[..., :3, 3:4])[..., 0]
    out[..., 3, 3] = 1.0
    return out


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world pose at ``eye`` looking at ``target`` (OpenCV axes, world z up)."""
    eye = np.asarray(eye, dtype=np.float64)
    fwd = np.asarray(target, dtype=np.float64) - eye
    norm = np.linalg.norm(fwd)
    if norm < 1e-9:
        raise InputError("look_at: eye and target coincide")
    fwd /= norm
    right = np.cross(fwd, np.asarray(up, dtype=np.float64))
    if np.linalg.norm(right) < 1e-9:
        raise InputError("look_at: viewing direction is parallel to up")
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2], pose[:3, 3] = right, down, fwd, eye
    return pose


def pose_from_xyz_quat(xyz, quat_xyzw) -> np.ndarray:
    """4x4 transform from a translation and a Hamilton quaternion in (x, y, z, w) order."""
    from scipy.spatial.transform import Rotation

    q = np.asarray(quat_xyzw, dtype=np.float64)
    big = np.abs(q).max() if q.shape == (4,) and np.all(np.isfinite(q)) else 0.0
    unit = q / big if big > 0 else q  # scaled first: the norm of a finite (1e308, 1e308, 0, 0) overflows
    if big == 0 or big * np.linalg.norm(unit) < 1e-9:
        raise InputError(f"quaternion {q.tolist()} is zero or not finite")
    pose = np.eye(4)
    pose[:3, :3] = Rotation.from_quat(unit / np.linalg.norm(unit)).as_matrix()
    pose[:3, 3] = xyz
    return pose


def pose_to_xyz_quat(pose) -> tuple[np.ndarray, np.ndarray]:
    """Split a 4x4 transform into translation and (x, y, z, w) quaternion."""
    from scipy.spatial.transform import Rotation

    pose = np.asarray(pose, dtype=np.float64)
    return pose[:3, 3].copy(), Rotation.from_matrix(pose[:3, :3]).as_quat()


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels for an image of ``width`` x ``height``."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self):
        vals = np.array([self.fx, self.fy, self.cx, self.cy], dtype=np.float64)
        if not np.all(np.isfinite(vals)) or self.fx <= 0 or self.fy <= 0:
            raise InputError(f"invalid intrinsics fx={self.fx} fy={self.fy} cx={self.cx} cy={self.cy}")
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise InputError(f"invalid image size {self.width}x{self.height}")

    @classmethod
    def from_fov(cls, fov_x_deg: float, width: int, height: int) -> "Intrinsics":
        """Square pixels, principal point at the image centre, horizontal field of view."""
        f = 0.5 * width / np.tan(np.deg2rad(fov_x_deg) / 2)
        return cls(f, f, (width - 1) / 2, (height - 1) / 2, width, height)

    @classmethod
    def from_normalized(cls, fx, fy, cx, cy, width: int, height: int) -> "Intrinsics":
        """From ``[fx fy cx cy]`` normalised by width/height (official test-case, RE10K)."""
        return cls(fx * width, fy * height, cx * width, cy * height, width, height)

    @classmethod
    def from_matrix(cls, k, width: int, height: int) -> "Intrinsics":
        k = np.asarray(k, dtype=np.float64)
        return cls(k[0, 0], k[1, 1], k[0, 2], k[1, 2], width, height)

    def matrix(self) -> np.ndarray:
        """The 3x3 camera matrix K (float64)."""
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    def normalized(self) -> list[float]:
        """``[fx fy cx cy]`` divided by width/height."""
        return [self.fx / self.width, self.fy / self.height, self.cx / self.width, self.cy / self.height]

    def resized(self, width: int, height: int) -> "Intrinsics":
        """The same camera at another resolution: focal lengths scale, the principal point keeps
        pixel edges aligned, ``c' = (c + 0.5) s - 0.5`` (:func:`spatia_core.cameras.resized_matrix`)."""
        from .cameras import resized_matrix

        return Intrinsics.from_matrix(resized_matrix(self, width, height), width, height)
