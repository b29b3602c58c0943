"""instant-ngp / nerfstudio ``transforms.json``.

Frames list ``file_path`` and a 4x4 camera-to-world ``transform_matrix`` with OpenGL camera axes
(x right, y up, z backwards); we flip y and z to OpenCV axes (x right, y down, z forward).
Intrinsics are per frame or shared at the top level: ``fl_x``/``fl_y``, ``cx``/``cy``, ``w``/``h``
(or ``camera_angle_x``/``camera_angle_y`` as in the NeRF synthetic scenes; the principal point
is then the image centre), distortion ``k1 k2 p1 p2`` (``k3`` too). A ``file_path`` without a
suffix gets ``.png`` (NeRF synthetic). ``aabb_scale``, ``scale``, ``offset`` and nerfstudio's
``applied_transform`` describe how a NeRF normalises the scene and are ignored: the poses are
taken as they are. Pixel centres: nerfstudio and instant-ngp put pixel ``i``'s centre at
``i + 0.5``, so ``cx``/``cy`` are shifted by -0.5 to our integer-centre convention.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import FileFormatError
from ..geometry import Intrinsics, validate_pose
from .base import Capture, PosedImage, check_capture

#: OpenGL camera axes -> OpenCV camera axes (right-multiplied on a camera-to-world pose)
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except OSError as exc:
        raise FileFormatError(f"cannot read image {path}: {exc}") from exc


def _camera(frame: dict, top: dict, path: Path, where: str) -> tuple[Intrinsics, tuple]:
    def get(key):
        return frame.get(key, top.get(key))

    w, h = get("w"), get("h")
    if w is None or h is None:
        w, h = _image_size(path)
    w, h = int(w), int(h)
    fx, fy = get("fl_x"), get("fl_y")
    if fx is None and get("camera_angle_x") is not None:
        fx = 0.5 * w / math.tan(0.5 * float(get("camera_angle_x")))
    if fy is None and get("camera_angle_y") is not None:
        fy = 0.5 * h / math.tan(0.5 * float(get("camera_angle_y")))
    if fx is None and fy is None:
        raise FileFormatError(f"{where}: no focal length (fl_x / fl_y or camera_angle_x)")
    fx = float(fx if fx is not None else fy)
    fy = float(fy if fy is not None else fx)
    cx = float(get("cx")) if get("cx") is not None else 0.5 * w
    cy = float(get("cy")) if get("cy") is not None else 0.5 * h
    dist = tuple(float(get(k) or 0.0) for k in ("k1", "k2", "p1", "p2", "k3"))
    try:
        k = Intrinsics(fx, fy, cx - 0.5, cy - 0.5, w, h)
    except Exception as exc:
        raise FileFormatError(f"{where}: {exc}") from exc
    return k, dist if any(dist) else ()


def read_transforms_json(path: str | Path) -> Capture:
    """The frames of a ``transforms.json`` (a file, or a folder holding one)."""
    path = Path(path)
    if path.is_dir():
        path = path / "transforms.json"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise FileFormatError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise FileFormatError(f"{path}: a transforms.json needs a 'frames' list")
    root = path.parent
    images = []
    for i, frame in enumerate(data["frames"]):
        where = f"{path.name} frame {i}"
        if not isinstance(frame, dict) or "file_path" not in frame or "transform_matrix" not in frame:
            raise FileFormatError(f"{where}: needs file_path and transform_matrix")
        img = root / frame["file_path"]
        if not img.suffix:
            img = img.with_suffix(".png")
        try:
            c2w = np.asarray(frame["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise FileFormatError(f"{where}: transform_matrix is not a 4x4 matrix of numbers") from exc
        if c2w.shape not in ((4, 4), (3, 4)):
            raise FileFormatError(f"{where}: transform_matrix must be 4x4, got shape {c2w.shape}")
        if c2w.shape == (3, 4):
            c2w = np.vstack([c2w, [0, 0, 0, 1]])
        try:
            pose = validate_pose(c2w @ GL_TO_CV, where)
        except Exception as exc:
            raise FileFormatError(str(exc)) from exc
        k, dist = _camera(frame, data, img, where)
        images.append(PosedImage(img, pose, k, img.stem, dist))
    check_capture(images, root)
    notes = [f"ignored {key}" for key in ("aabb_scale", "scale", "offset", "applied_transform") if key in data]
    return Capture(images, "transforms_json", root, metric=False, notes=notes)
