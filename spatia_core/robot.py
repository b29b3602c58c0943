"""A kinematic robot base that carries the camera: integrates velocity commands into poses.

Frames (REP 103/105): the base pose is ``odom -> base_link`` (x forward, y left, z up); the
camera sits at a fixed mount ``base_link -> camera_link`` (same axis convention) and the optical
frame ``camera_optical_frame`` is ``camera_link`` rotated to x right, y down, z forward. The
simulator has no odometry drift, so ``map -> odom`` is the identity.

Velocity commands are body-frame twists (vx, vy, wz). ``unicycle`` ignores vy; ``holonomic``
uses it. Integration over a step is exact for constant velocity (a circular arc).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputError
from .geometry import R_BODY_OPTICAL, invert_pose, validate_pose

MODELS = ("unicycle", "holonomic")


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rotation from roll, pitch, yaw (rad, fixed axes x-y-z as in URDF / REP 103)."""
    from scipy.spatial.transform import Rotation

    return Rotation.from_euler("xyz", [roll, pitch, yaw]).as_matrix()


@dataclass
class CameraMount:
    """Where ``camera_link`` sits on ``base_link``: translation (m) and roll, pitch, yaw (rad)."""

    xyz: list = field(default_factory=lambda: [0.0, 0.0, 1.2])
    rpy: list = field(default_factory=lambda: [0.0, 0.0, 0.0])

    def base_to_link(self) -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = rpy_matrix(*self.rpy)
        out[:3, 3] = self.xyz
        return out

    @staticmethod
    def link_to_optical() -> np.ndarray:
        out = np.eye(4)
        out[:3, :3] = R_BODY_OPTICAL
        return out

    def base_to_optical(self) -> np.ndarray:
        return self.base_to_link() @ self.link_to_optical()


class KinematicBase:
    """Planar kinematic base; its pose is a full 4x4 so a placed camera may tilt or lift it."""

    def __init__(self, model: str = "unicycle", mount: CameraMount | None = None,
                 max_linear: float = 2.0, max_angular: float = 3.0):
        if model not in MODELS:
            raise InputError(f"unknown base model {model!r}; choose one of {', '.join(MODELS)}")
        self.model = model
        self.mount = mount or CameraMount()
        self.max_linear, self.max_angular = float(max_linear), float(max_angular)
        self.pose = np.eye(4)  # odom -> base_link
        self.twist = np.zeros(3)  # last applied (vx, vy, wz), body frame

    def check_twist(self, vx: float, vy: float, wz: float) -> np.ndarray:
        """Validate a command; raises :class:`InputError` if not finite or beyond the limits."""
        cmd = np.array([vx, vy if self.model == "holonomic" else 0.0, wz], dtype=np.float64)
        if not np.all(np.isfinite(cmd)):
            raise InputError(f"velocity command {cmd.tolist()} is not finite")
        if np.hypot(cmd[0], cmd[1]) > self.max_linear or abs(cmd[2]) > self.max_angular:
            raise InputError(
                f"velocity command {np.round(cmd, 3).tolist()} exceeds the limits "
                f"(linear {self.max_linear} m/s, angular {self.max_angular} rad/s)"
            )
        return cmd

    def step(self, twist: np.ndarray, dt: float) -> np.ndarray:
        """Advance the base by a constant body twist ``(vx, vy, wz)`` for ``dt`` s; returns the pose."""
        vx, vy, wz = twist
        th = wz * dt
        if abs(th) < 1e-9:
            dx, dy = vx * dt, vy * dt
        else:
            s, c = np.sin(th), np.cos(th)
            dx = (vx * s + vy * (c - 1.0)) / wz
            dy = (vx * (1.0 - c) + vy * s) / wz
        delta = np.eye(4)
        delta[:2, :2] = [[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]]
        delta[:2, 3] = dx, dy
        self.pose = self.pose @ delta
        self.twist = np.array([vx, vy, wz], dtype=np.float64)
        return self.pose

    def camera_pose(self) -> np.ndarray:
        """Camera-to-world pose of the optical frame (world = map = odom here)."""
        return self.pose @ self.mount.base_to_optical()

    def set_camera_pose(self, camera_pose) -> np.ndarray:
        """Place the base so that its optical frame is at ``camera_pose``; returns the base pose."""
        cam = validate_pose(camera_pose, "camera pose")
        self.pose = cam @ invert_pose(self.mount.base_to_optical())
        self.twist = np.zeros(3)
        return self.pose


def demo_velocity(t: float, linear: float = 0.3, angular: float = 0.4) -> tuple[float, float, float]:
    """The demo drive, a body twist ``(vx, vy, wz)`` at time ``t`` seconds (repeats forever).

    Look around in place (one full turn), then drive one full circle of radius
    ``linear / angular`` (0.75 m by default), which ends where it started.
    """
    turn = 2 * np.pi / angular
    t = t % (2 * turn)
    return (0.0, 0.0, angular) if t < turn else (linear, 0.0, angular)
