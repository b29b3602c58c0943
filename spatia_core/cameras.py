"""One home for camera maths: the half-pixel resize rule, projection, back-projection, the pixel
index rule, lens distortion and mask files.

Pixel centres sit at integer coordinates (OpenCV); pixel ``i`` covers ``[i - 0.5, i + 0.5)``.
Resizing by ``sx`` maps edges to edges, so a principal point moves as
``cx' = (cx + 0.5) * sx - 0.5`` (focal lengths just scale). The nearest pixel of a projected
point is ``floor(u + 0.5)`` (the renderer's splat rule; ``np.round`` differs at .5 ties).
Back-projection of pixel ``(u, v)`` at depth ``z`` (z-depth along the optical axis) is
``x = (u - cx) z / fx, y = (v - cy) z / fy``, then camera-to-world. Distortion is OpenCV's
``(k1, k2, p1, p2[, k3])`` model, removed by OpenCV. A mask file is True where any channel is
non-zero (one threshold for every reader).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from spatia_core.errors import FileFormatError
from spatia_core.geometry import Intrinsics

__all__ = ["Intrinsics", "resized_matrix", "scaled_matrix", "project", "pixel_index", "backproject", "undistort",
           "read_mask"]


def resized_matrix(k: Intrinsics, width: int, height: int) -> np.ndarray:
    """3x3 K of ``k`` for the same camera at ``width`` x ``height`` (half-pixel rule above)."""
    return scaled_matrix(k, width / k.width, height / k.height)


def scaled_matrix(k: Intrinsics, sx: float, sy: float) -> np.ndarray:
    """3x3 K of ``k`` with the image scaled by ``sx``, ``sy`` (half-pixel rule above)."""
    return np.array([[k.fx * sx, 0.0, (k.cx + 0.5) * sx - 0.5],
                     [0.0, k.fy * sy, (k.cy + 0.5) * sy - 0.5],
                     [0.0, 0.0, 1.0]])


def project(points_world, pose_c2w, k_matrix):
    """Project (N, 3) world points through a camera-to-world pose; returns (uv (N, 2), z (N,)).

    numpy in: float64 numpy out. A torch tensor in: tensors of its dtype (float64 advised) and
    device. ``uv`` is inf / nan where ``z`` is 0; callers test ``z`` first."""
    if torch.is_tensor(points_world):
        p = points_world.reshape(-1, 3)
        pose = torch.as_tensor(np.asarray(pose_c2w) if not torch.is_tensor(pose_c2w) else pose_c2w, dtype=p.dtype,
                               device=p.device)
        km = torch.as_tensor(np.asarray(k_matrix) if not torch.is_tensor(k_matrix) else k_matrix, dtype=p.dtype,
                             device=p.device)
        pc = (p - pose[:3, 3]) @ pose[:3, :3]  # R^T (p - t): the inverse of a rigid pose
        uvw = pc @ km.T
        return uvw[:, :2] / uvw[:, 2:3], pc[:, 2]
    p = np.asarray(points_world, dtype=np.float64).reshape(-1, 3)
    w2c = np.linalg.inv(np.asarray(pose_c2w, dtype=np.float64))
    pc = p @ w2c[:3, :3].T + w2c[:3, 3]
    z = pc[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uvw = pc @ np.asarray(k_matrix, dtype=np.float64).T
        uv = uvw[:, :2] / uvw[:, 2:3]
    return uv, z


def pixel_index(uv):
    """Nearest pixel centre of sub-pixel coordinates: ``floor(u + 0.5)`` as int64 (numpy or torch)."""
    if torch.is_tensor(uv):
        return torch.floor(uv + 0.5).long()
    return np.floor(np.asarray(uv, dtype=np.float64) + 0.5).astype(np.int64)


def backproject(depth, k: Intrinsics, pose=None, valid=None, stride: int = 1):
    """Points of the pixels of ``depth`` (H, W) (z-depth) where ``valid`` (default: depth > 0).

    numpy in, float64 (M, 3) numpy out; torch in, a tensor of ``depth``'s float dtype and device
    out (float32 for integer depth). ``pose``: camera-to-world (4, 4), None = camera frame.
    Pixels in row-major order (as ``nonzero``), every ``stride``-th row and column.
    """
    if torch.is_tensor(depth):
        d = depth if depth.is_floating_point() else depth.float()
        m = (d > 0) if valid is None else torch.as_tensor(valid, device=d.device).bool()
        if stride > 1:
            keep = torch.zeros_like(m)
            keep[::stride, ::stride] = True
            m = m & keep
        v, u = m.nonzero(as_tuple=True)
        z = d[v, u]
        cam = torch.stack([(u.to(z.dtype) - k.cx) * z / k.fx, (v.to(z.dtype) - k.cy) * z / k.fy, z], 1)
        if pose is None:
            return cam
        p = torch.as_tensor(pose, dtype=z.dtype, device=z.device) if not torch.is_tensor(pose) else pose.to(cam)
        return cam @ p[:3, :3].T + p[:3, 3]
    d = np.asarray(depth)
    m = (d > 0) if valid is None else np.asarray(valid, bool)
    if stride > 1:
        keep = np.zeros_like(m)
        keep[::stride, ::stride] = True
        m = m & keep
    v, u = np.nonzero(m)
    z = d[v, u].astype(np.float64)
    cam = np.stack([(u - k.cx) * z / k.fx, (v - k.cy) * z / k.fy, z], 1)
    if pose is None:
        return cam
    p = np.asarray(pose, np.float64)
    return cam @ p[:3, :3].T + p[:3, 3]


def undistort(image: np.ndarray, k: Intrinsics, distortion) -> np.ndarray:
    """``image`` (H, W[, C]) with OpenCV lens ``distortion`` ``(k1, k2, p1, p2[, k3])`` removed,
    keeping the pinhole ``k`` (same size; ``()`` or all zeros: a copy)."""
    dist = np.asarray(distortion, np.float64).reshape(-1)
    if dist.size == 0 or not dist.any():
        return np.array(image, copy=True)
    if dist.size not in (4, 5, 8):
        raise ValueError(f"distortion must have 4, 5 or 8 OpenCV coefficients, got {dist.size}")
    import cv2

    km = k.matrix()
    return cv2.undistort(np.asarray(image), km, dist, None, km)


def read_mask(path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """bool (H, W) from a mask file: an image (any colour channel non-zero = True; an alpha
    channel is ignored) or a ``.npy`` array (non-zero = True). With ``shape`` (H, W) a mask of another size is an error."""
    import cv2

    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"mask file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise FileFormatError(f"{path}: cannot read mask ({exc})") from None
    else:
        arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if arr is None:
            raise FileFormatError(f"{path}: cannot decode mask image")
    arr = np.asarray(arr)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2) if path.suffix.lower() != ".npy" else arr.max(axis=2)
    if arr.ndim != 2:
        raise FileFormatError(f"{path}: mask must be 2-D, got shape {arr.shape}")
    if shape is not None and arr.shape != tuple(shape):
        raise FileFormatError(f"{path}: mask is {arr.shape[1]}x{arr.shape[0]}, image is {shape[1]}x{shape[0]}")
    return arr != 0
