"""Scene scale from the data: the depth range a capture's views see.

Plane-sweep stereo, the memory's depth limits and the voxel size all need to know how far the
scene is. A capture says it in one of three ways: sparse SfM points (COLMAP), per-view bounds
(LLFF), or nothing (calibrated photos); then SIFT matches between neighbouring views are
triangulated with the known poses, and the depth percentiles of the well-triangulated points
give the range.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from ..cameras import project
from ..errors import InputError
from ..geometry import Intrinsics, invert_pose

log = logging.getLogger(__name__)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def _projection(pose: np.ndarray, k: Intrinsics) -> np.ndarray:
    return k.matrix() @ invert_pose(pose)[:3]


def nearest_views(poses: np.ndarray, i: int, count: int, min_baseline: float = 0.0) -> list[int]:
    """The ``count`` views whose centres are nearest to view ``i``'s, farther than ``min_baseline``
    and looking within 60 degrees of it."""
    c = poses[:, :3, 3]
    d = np.linalg.norm(c - c[i], axis=1)
    cos = poses[:, :3, 2] @ poses[i, :3, 2]
    ok = (d > min_baseline) & (cos > 0.5)
    ok[i] = False
    order = [j for j in np.argsort(d) if ok[j]]
    return [int(j) for j in order[:count]]


def triangulate_matches(rgb_a: np.ndarray, cam_a: tuple, rgb_b: np.ndarray, cam_b: tuple,
                        max_reproj_px: float = 1.5, min_angle_deg: float = 1.0) -> np.ndarray:
    """World points (float64 (M, 3)) of SIFT matches (ratio test 0.75) between two posed images,
    triangulated linearly and kept when in front of both cameras, reprojecting within
    ``max_reproj_px`` in both and seen under at least ``min_angle_deg`` of parallax."""
    sift = cv2.SIFT_create(nfeatures=4000)
    ka, da = sift.detectAndCompute(_gray(rgb_a), None)
    kb, db = sift.detectAndCompute(_gray(rgb_b), None)
    if da is None or db is None or len(ka) < 8 or len(kb) < 8:
        return np.zeros((0, 3))
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    good = [m for m, n in (p for p in pairs if len(p) == 2) if m.distance < 0.75 * n.distance]
    if len(good) < 8:
        return np.zeros((0, 3))
    pa = np.float64([ka[m.queryIdx].pt for m in good])
    pb = np.float64([kb[m.trainIdx].pt for m in good])
    (pose_a, k_a), (pose_b, k_b) = cam_a, cam_b
    pa_m, pb_m = _projection(pose_a, k_a), _projection(pose_b, k_b)
    hom = cv2.triangulatePoints(pa_m, pb_m, pa.T, pb.T)
    with np.errstate(divide="ignore", invalid="ignore"):
        xyz = (hom[:3] / hom[3]).T
    ok = np.isfinite(xyz).all(1)
    for proj, pix in ((pa_m, pa), (pb_m, pb)):
        q = np.c_[xyz, np.ones(len(xyz))] @ proj.T
        with np.errstate(divide="ignore", invalid="ignore"):
            err = np.linalg.norm(q[:, :2] / q[:, 2:3] - pix, axis=1)
        ok &= (q[:, 2] > 0) & (err < max_reproj_px)
    ra, rb = xyz - pose_a[:3, 3], xyz - pose_b[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.sum(ra * rb, 1) / (np.linalg.norm(ra, axis=1) * np.linalg.norm(rb, axis=1))
    ok &= cos < np.cos(np.deg2rad(min_angle_deg))
    return xyz[ok]


def view_depths(points: np.ndarray, pose: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Depths (float64) of the world ``points`` that project inside the view."""
    uv, z = project(points, pose, k.matrix())
    front = z > 0
    u, v = uv[front, 0], uv[front, 1]
    inside = (u >= -0.5) & (u < k.width - 0.5) & (v >= -0.5) & (v < k.height - 0.5)
    return z[front][inside]


def range_from_depths(depths: np.ndarray, low_pct: float = 1.0, high_pct: float = 99.0,
                      margin: float = 2.0) -> tuple[float, float]:
    """``(percentile low / margin, percentile high * margin)`` of positive depths. The margin is
    generous: matches are rare where stereo is hard (slanted ground near the camera, the far end),
    and a sweep that stops short loses those surfaces entirely."""
    d = np.asarray(depths, np.float64)
    d = d[np.isfinite(d) & (d > 0)]
    if d.size < 10:
        raise InputError(f"only {d.size} scene points to take the depth range from (need 10)")
    lo, hi = np.percentile(d, [low_pct, high_pct])
    return float(lo / margin), float(hi * margin)


def depth_range_from_images(images: list[np.ndarray], cams: list[tuple], neighbours: int = 1) -> tuple[tuple[float, float], np.ndarray]:
    """Depth range of posed images (uint8 RGB, ``(pose, Intrinsics)`` each) from triangulated SIFT
    matches with each view's ``neighbours`` nearest views. Returns ``((near, far), points)``."""
    poses = np.stack([p for p, _ in cams])
    pts, depths = [], []
    done = set()
    for i in range(len(images)):
        for j in nearest_views(poses, i, neighbours):
            if (min(i, j), max(i, j)) in done:
                continue
            done.add((min(i, j), max(i, j)))
            xyz = triangulate_matches(images[i], cams[i], images[j], cams[j])
            pts.append(xyz)
            depths.append(view_depths(xyz, *cams[i]))
    points = np.concatenate(pts) if pts else np.zeros((0, 3))
    near_far = range_from_depths(np.concatenate(depths) if depths else np.zeros(0))
    log.info("depth range from %d triangulated SIFT points: %.3g .. %.3g", len(points), *near_far)
    return near_far, points
