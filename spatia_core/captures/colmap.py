"""COLMAP sparse models (text or binary), read through ``pycolmap``.

Looks for the model in ``sparse/0``, ``sparse`` or the folder itself, and the images in
``images/``. COLMAP stores world-to-camera poses with OpenCV axes; we invert them. Pinhole models
(``SIMPLE_PINHOLE``, ``PINHOLE``) are used as they are; ``SIMPLE_RADIAL``, ``RADIAL`` and
``OPENCV`` are undistorted with OpenCV when the images are decoded; other models are refused.
COLMAP puts the centre of the top-left pixel at (0.5, 0.5), we put it at (0, 0): principal
points shift by -0.5. The 3D points give the scene's depth range; the units are SfM units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import BackendUnavailableError, FileFormatError
from ..geometry import Intrinsics, invert_pose, validate_pose
from .base import Capture, PosedImage, check_capture

MODEL_FILES = ("cameras.bin", "cameras.txt")


def find_model(root: Path) -> Path | None:
    """The folder holding ``cameras.bin``/``cameras.txt`` under ``root`` (sparse/0, sparse, root)."""
    for cand in (root / "sparse" / "0", root / "sparse", root):
        if any((cand / f).is_file() for f in MODEL_FILES):
            return cand
    return None


def _camera(cam) -> tuple[Intrinsics, tuple]:
    name = cam.model.name
    p = [float(v) for v in cam.params]
    w, h = int(cam.width), int(cam.height)
    if name in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = p[0]
        cx, cy = p[1], p[2]
        dist = () if name == "SIMPLE_PINHOLE" else (p[3], p[4] if name == "RADIAL" else 0.0, 0.0, 0.0)
    elif name in ("PINHOLE", "OPENCV"):
        fx, fy, cx, cy = p[:4]
        dist = () if name == "PINHOLE" else tuple(p[4:8])
    else:
        raise FileFormatError(f"COLMAP camera model {name} is not supported (PINHOLE, SIMPLE_PINHOLE, SIMPLE_RADIAL, "
                              "RADIAL, OPENCV); undistort the images with `colmap image_undistorter` first")
    return Intrinsics(fx, fy, cx - 0.5, cy - 0.5, w, h), dist if any(dist) else ()


def read_colmap(root: str | Path, images_dir: str = "images") -> Capture:
    """The registered images of the COLMAP model under ``root``, in name order."""
    try:
        import pycolmap
    except ImportError as exc:
        raise BackendUnavailableError("reading COLMAP models needs pycolmap (pip install pycolmap)") from exc
    root = Path(root)
    model = find_model(root)
    if model is None:
        raise FileFormatError(f"{root}: no COLMAP model (cameras.bin / cameras.txt in sparse/0, sparse or the folder)")
    try:
        rec = pycolmap.Reconstruction(str(model))
    except Exception as exc:  # pycolmap raises RuntimeError / ValueError on a broken model
        raise FileFormatError(f"cannot read COLMAP model {model}: {str(exc).splitlines()[0] if str(exc) else exc}") from exc
    base = root if (root / images_dir).is_dir() or model == root else model.parents[1] if model.name == "0" else model.parent
    cams = {}
    images = []
    for img in sorted(rec.images.values(), key=lambda im: im.name):
        if not img.has_pose:
            continue
        if img.camera_id not in cams:
            cams[img.camera_id] = _camera(rec.cameras[img.camera_id])
        k, dist = cams[img.camera_id]
        w2c = np.eye(4)
        w2c[:3, :4] = np.asarray(img.cam_from_world().matrix())
        try:
            pose = validate_pose(invert_pose(w2c), f"COLMAP image {img.name}")
        except Exception as exc:
            raise FileFormatError(str(exc)) from exc
        images.append(PosedImage(base / images_dir / img.name, pose, k, Path(img.name).stem, dist))
    check_capture(images, root)
    pts = np.array([p.xyz for p in rec.points3D.values()], dtype=np.float64).reshape(-1, 3)
    return Capture(images, "colmap", root, points=pts if len(pts) else None, metric=False)
