"""LLFF ``poses_bounds.npy`` (Mildenhall et al. 2019, the format NeRF's forward-facing scenes use).

An (N, 17) float array, one row per image of ``images/`` in sorted order: a 3x5 matrix (row-major)
``[R | t | hwf]`` whose rotation columns are the camera's **down, right, backwards** axes in the
world (camera-to-world), ``hwf`` = image height, width and focal length in pixels of the full-size
images, then the view's near and far depth bounds. We turn the columns into OpenCV axes (right,
down, forward = ``[c1, c0, -c2]``); the principal point is the image centre; the bounds become
each view's depth range. Downscaled image folders (``images_4``) are used at their own size.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import FileFormatError
from ..geometry import Intrinsics, validate_pose
from .base import Capture, PosedImage, check_capture

_EXT = {".jpg", ".jpeg", ".png", ".JPG", ".PNG", ".JPEG"}


def _natural(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def llff_to_opencv(mat35: np.ndarray) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``(c2w (4, 4) OpenCV axes, (height, width, focal))`` of one 3x5 LLFF pose."""
    m = np.asarray(mat35, np.float64).reshape(3, 5)
    pose = np.eye(4)
    pose[:3, 0], pose[:3, 1], pose[:3, 2] = m[:, 1], m[:, 0], -m[:, 2]
    pose[:3, 3] = m[:, 3]
    return pose, (float(m[0, 4]), float(m[1, 4]), float(m[2, 4]))


def read_llff(root: str | Path, images_dir: str = "images") -> Capture:
    """The posed images of an LLFF scene folder (``poses_bounds.npy`` + ``images/``)."""
    root = Path(root)
    path = root / "poses_bounds.npy" if root.is_dir() else root
    root = path.parent
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"cannot read {path}: {exc}") from exc
    if arr.ndim != 2 or arr.shape[1] != 17 or not np.issubdtype(arr.dtype, np.floating):
        raise FileFormatError(f"{path}: poses_bounds.npy must be a float (N, 17) array, got {arr.dtype} {arr.shape}")
    folder = root / images_dir
    files = sorted((p for p in folder.iterdir() if p.suffix in _EXT), key=_natural) if folder.is_dir() else []
    if len(files) != arr.shape[0]:
        raise FileFormatError(f"{path}: {arr.shape[0]} poses but {len(files)} images in {folder}")
    images = []
    for i, (row, img) in enumerate(zip(arr, files)):
        where = f"{path.name} row {i}"
        pose, (h, w, f) = llff_to_opencv(row[:15])
        near, far = float(row[15]), float(row[16])
        if not (np.isfinite([near, far]).all() and 0 < near < far):
            raise FileFormatError(f"{where}: bounds must satisfy 0 < near < far, got {near}, {far}")
        try:
            pose = validate_pose(pose, where)
            k = Intrinsics(f, f, w / 2.0, h / 2.0, int(round(w)), int(round(h)))
        except Exception as exc:
            raise FileFormatError(str(exc) if where in str(exc) else f"{where}: {exc}") from exc
        images.append(PosedImage(img, pose, k, img.stem, (), (near, far)))
    check_capture(images, root)
    return Capture(images, "llff", root, metric=False)
