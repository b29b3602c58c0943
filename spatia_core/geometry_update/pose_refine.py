"""Pose refinement: align each generated frame to the memory before it is fused.

A generator may drift off the commanded camera pose. Fusing its frames at the commanded pose
would then smear the map (doubled walls, blurred edges). Both refiners here compare a generated
frame (RGB + depth) with the memory's own rendering at the commanded pose and estimate the rigid
motion between them:

* ``rgbd_odometry``: Open3D's ``compute_rgbd_odometry`` (hybrid photometric + geometric term,
  coarse-to-fine) between the generated RGB-D frame (source) and the rendered RGB-D view
  (target). It returns ``T`` with ``p_target = T p_source`` in camera coordinates, so the frame
  was really taken at ``P_cmd @ T`` and the map-frame correction is ``delta = P_cmd T P_cmd^-1``.
* ``icp``: point-to-plane ICP (Open3D) of the frame's back-projected points against the memory
  points the view shows (its rendered depth back-projected), both in the map frame, coarse to
  fine; the result is directly the map-frame correction ``delta``.

Every frame gets a :class:`PoseCorrection`. Corrections larger than ``max_correction_m`` /
``max_correction_deg`` are refused (the frame keeps its commanded pose, and ``reason`` says
why), as are estimates made from too little overlap or that did not converge.
"""

from __future__ import annotations

import logging

import numpy as np

from .._open3d import open3d
from ..cameras import backproject
from ..errors import InputError
from ..geometry import Intrinsics, invert_pose, validate_poses
from .base import PoseCorrection

log = logging.getLogger(__name__)

METHODS = ("rgbd_odometry", "icp")


def correction_size(delta: np.ndarray) -> tuple[float, float]:
    """``(translation m, rotation deg)`` of a rigid 4x4 ``delta``."""
    cos = np.clip((np.trace(delta[:3, :3]) - 1.0) / 2.0, -1.0, 1.0)
    return float(np.linalg.norm(delta[:3, 3])), float(np.degrees(np.arccos(cos)))


def _orthonormal(delta: np.ndarray) -> np.ndarray:
    """Project the rotation part of a 4x4 onto SO(3) (removes numerical drift)."""
    u, _, vt = np.linalg.svd(delta[:3, :3])
    rot = u @ vt
    if np.linalg.det(rot) < 0:
        u[:, -1] *= -1
        rot = u @ vt
    out = np.eye(4)
    out[:3, :3], out[:3, 3] = rot, delta[:3, 3]
    return out


def _backproject(depth: np.ndarray, k: Intrinsics, pose: np.ndarray, stride: int = 1) -> np.ndarray:
    """World points float64 (M, 3) of every ``stride``-th pixel with depth > 0 (:func:`~spatia_core.cameras.backproject`)."""
    return backproject(np.asarray(depth), k, pose, stride=stride)


class MemoryPoseRefiner:
    """Refine generated frames' poses against the memory's rendered view (see module docstring).

    Args:
        method: ``rgbd_odometry`` or ``icp``.
        max_correction_m, max_correction_deg: larger corrections are refused.
        min_overlap: smallest share of pixels with both a generated depth and a rendered depth
            for an estimate to be attempted.
        max_depth: depth beyond this (metres) is ignored by the odometry.
        depth_diff_max: largest depth difference (metres) of an odometry correspondence.
    """

    def __init__(self, method: str = "rgbd_odometry", max_correction_m: float = 0.10, max_correction_deg: float = 5.0,
                 min_overlap: float = 0.05, max_depth: float = 10.0, depth_diff_max: float = 0.07):
        if method not in METHODS:
            raise InputError(f"unknown pose refinement method {method!r}; choose one of {', '.join(METHODS)}")
        if not (max_correction_m >= 0 and max_correction_deg >= 0):
            raise InputError("max_correction_m and max_correction_deg must be >= 0")
        if not 0 <= min_overlap <= 1:
            raise InputError(f"min_overlap must be in [0, 1], got {min_overlap}")
        self.method = method
        self.max_correction_m = float(max_correction_m)
        self.max_correction_deg = float(max_correction_deg)
        self.min_overlap = float(min_overlap)
        self.max_depth = float(max_depth)
        self.depth_diff_max = float(depth_diff_max)

    # -- per frame estimators -------------------------------------------------------------
    def _odometry(self, rgb, depth, scene_rgb, scene_depth, k: Intrinsics, pose) -> tuple[np.ndarray | None, str]:
        o3d = open3d()
        intr = o3d.camera.PinholeCameraIntrinsic(k.width, k.height, k.fx, k.fy, k.cx, k.cy)

        def rgbd(color, d):
            return o3d.geometry.RGBDImage.create_from_color_and_depth(
                o3d.geometry.Image(np.ascontiguousarray(color)), o3d.geometry.Image(np.ascontiguousarray(d, dtype=np.float32)),
                depth_scale=1.0, depth_trunc=self.max_depth, convert_rgb_to_intensity=True)

        option = o3d.pipelines.odometry.OdometryOption()
        option.depth_diff_max = self.depth_diff_max
        option.depth_max = self.max_depth
        ok, trans, _ = o3d.pipelines.odometry.compute_rgbd_odometry(
            rgbd(rgb, depth), rgbd(scene_rgb, scene_depth), intr, np.eye(4),
            o3d.pipelines.odometry.RGBDOdometryJacobianFromHybridTerm(), option)
        if not ok:
            return None, "odometry did not converge"
        trans = np.asarray(trans, dtype=np.float64)
        return pose @ trans @ invert_pose(pose), ""

    def _icp(self, depth, scene_depth, k: Intrinsics, pose) -> tuple[np.ndarray | None, str]:
        o3d = open3d()
        stride = max(1, int(round(np.sqrt(k.width * k.height / 20000))))  # about 20k points per cloud
        src = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(_backproject(depth, k, pose, stride)))
        tgt = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(_backproject(scene_depth, k, pose, stride)))
        if len(src.points) < 30 or len(tgt.points) < 30:
            return None, "too few points for icp"
        median_z = float(np.median(scene_depth[scene_depth > 0]))
        spacing = max(median_z * stride / k.fx, 1e-3)  # metres between neighbouring samples
        tgt.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=4 * spacing, max_nn=30))
        tgt.orient_normals_towards_camera_location(pose[:3, 3])
        delta = np.eye(4)
        start = max(2.0 * self.max_correction_m, 4 * spacing)
        result = None
        for dist in (start, start / 2, start / 4, max(start / 8, 2 * spacing)):
            result = o3d.pipelines.registration.registration_icp(
                src, tgt, dist, delta, o3d.pipelines.registration.TransformationEstimationPointToPlane(),
                o3d.pipelines.registration.ICPConvergenceCriteria(max_iteration=30))
            delta = np.asarray(result.transformation, dtype=np.float64)
        if result is None or result.fitness < 0.3:
            return None, f"icp fitness {0.0 if result is None else result.fitness:.2f} below 0.30"
        return delta, ""

    # -- interface -------------------------------------------------------------------------
    def refine(self, frames: np.ndarray, depth: np.ndarray, poses: np.ndarray, scene: dict,
               intrinsics: Intrinsics) -> tuple[np.ndarray, list[PoseCorrection]]:
        """Poses to fuse the frames at (float64 (T, 4, 4)) and one correction per frame.

        ``frames`` uint8 (T, H, W, 3), ``depth`` float32 (T, H, W) metres (0 = unknown),
        ``poses`` commanded camera-to-world (T, 4, 4), ``scene`` the memory's rendering at
        ``poses`` (``rgb``, ``depth``, ``mask``).
        """
        poses = validate_poses(poses)
        frames, depth = np.asarray(frames), np.asarray(depth, dtype=np.float32)
        t = len(poses)
        if frames.shape[:1] != (t,) or depth.shape != frames.shape[:3] or scene["depth"].shape != depth.shape:
            raise InputError(f"frames {frames.shape}, depth {depth.shape} and scene {scene['depth'].shape} "
                             f"do not match {t} poses")
        out = poses.copy()
        corrections = []
        for i in range(t):
            scene_depth = np.where(scene["mask"][i], scene["depth"][i], 0.0).astype(np.float32)
            overlap = float(((depth[i] > 0) & (scene_depth > 0)).mean())
            if overlap < self.min_overlap:
                corrections.append(PoseCorrection(np.eye(4), 0.0, 0.0, False,
                                                  f"overlap {overlap:.2f} with the memory below {self.min_overlap:.2f}"))
                continue
            try:
                if self.method == "rgbd_odometry":
                    delta, why = self._odometry(frames[i], depth[i], scene["rgb"][i], scene_depth, intrinsics, poses[i])
                else:
                    delta, why = self._icp(depth[i], scene_depth, intrinsics, poses[i])
            except RuntimeError as exc:  # an Open3D failure must not stop the world loop
                delta, why = None, f"{self.method} failed: {exc}"
            if delta is None or not np.all(np.isfinite(delta)):
                corrections.append(PoseCorrection(np.eye(4), 0.0, 0.0, False, why or "non-finite estimate"))
                continue
            delta = _orthonormal(delta)
            dt, dr = correction_size(delta)
            if dt > self.max_correction_m or dr > self.max_correction_deg:
                corrections.append(PoseCorrection(delta, dt, dr, False,
                                                  f"correction {dt:.3f} m / {dr:.2f} deg exceeds the bound "
                                                  f"{self.max_correction_m:.3f} m / {self.max_correction_deg:.2f} deg"))
                continue
            out[i] = delta @ poses[i]
            corrections.append(PoseCorrection(delta, dt, dr, True, ""))
        return out, corrections


def make_memory_pose_refiner(update) -> MemoryPoseRefiner:
    """The refiner for an :class:`~spatia_core.config.UpdateConfig` (``pose_refine`` != none)."""
    return MemoryPoseRefiner(update.pose_refine, update.max_correction_m, update.max_correction_deg)
