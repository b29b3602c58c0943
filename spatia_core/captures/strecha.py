"""The Strecha et al. (CVPR 2008) ``.camera`` format, as openMVG's SfM_quality_evaluation ships it.

A folder with ``images/NAME.jpg`` and ``gt_dense_cameras/NAME.jpg.camera`` (or the ``.camera``
files beside the images). Each ``.camera`` holds 26 numbers: K (3 rows), the distortion line
(3 numbers, zero in the benchmark), R (3 rows: the camera-to-world rotation), the camera centre C
in world coordinates, then ``width height``; so c2w = [R | C] with OpenCV axes, in metres.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import FileFormatError
from ..geometry import Intrinsics, validate_pose
from .base import Capture, PosedImage, check_capture

_IMAGE_EXT = (".jpg", ".jpeg", ".png", ".JPG", ".PNG")


def read_camera_file(path: str | Path) -> tuple[np.ndarray, Intrinsics, tuple]:
    """``(c2w float64 (4, 4), Intrinsics, distortion)`` of one ``.camera`` file."""
    path = Path(path)
    try:
        vals = [float(v) for v in path.read_text().split()]
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"{path}: a Strecha .camera file holds 26 numbers ({exc})") from exc
    if len(vals) != 26:
        raise FileFormatError(f"{path}: a Strecha .camera file holds 26 numbers, got {len(vals)}")
    k = np.reshape(vals[0:9], (3, 3))
    dist = tuple(vals[9:12])
    rot = np.reshape(vals[12:21], (3, 3))
    centre = np.asarray(vals[21:24])
    width, height = vals[24:26]
    if not (width >= 1 and height >= 1 and float(width).is_integer() and float(height).is_integer()):
        raise FileFormatError(f"{path}: image size {width} x {height} is not a positive integer size")
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rot, centre
    try:
        pose = validate_pose(pose, f"{path.name} pose")
        intr = Intrinsics.from_matrix(k, int(width), int(height))
    except Exception as exc:
        raise FileFormatError(f"{path}: {exc}") from exc
    # the benchmark's middle line is zero; non-zero values are radial k1 k2 (k3)
    distortion = (dist[0], dist[1], 0.0, 0.0, dist[2]) if any(dist) else ()
    return pose, intr, distortion


def is_strecha(root: Path) -> bool:
    return root.is_dir() and (any((root / "gt_dense_cameras").glob("*.camera")) or any(root.glob("images/*.camera")))


def read_strecha(root: str | Path) -> Capture:
    """Every image of ``root/images`` that has a ``.camera`` file, in name order."""
    root = Path(root)
    cam_dir = root / "gt_dense_cameras" if (root / "gt_dense_cameras").is_dir() else root / "images"
    images = []
    for cam in sorted(cam_dir.glob("*.camera")):
        stem = cam.name[: -len(".camera")]  # "0000.jpg"
        img = root / "images" / stem
        if not img.suffix:
            img = next((root / "images" / (stem + e) for e in _IMAGE_EXT if (root / "images" / (stem + e)).is_file()), img)
        pose, k, dist = read_camera_file(cam)
        images.append(PosedImage(img, pose, k, Path(stem).stem, dist))
    check_capture(images, root)
    return Capture(images, "strecha", root)
