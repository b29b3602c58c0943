"""Read a folder of posed RGB-D frames (and single images with depth maps).

Folder layout (what real sequences ship; see ``../shared/data``):

* colour images in ``color/`` (or ``rgb/``, ``image/``, ``images/``), depth maps in ``depth/``,
  matched by sorted order (numbers sorted numerically);
* poses, camera-to-world, one per frame, in ``pose.txt`` / ``poses.txt`` / ``groundtruth.txt``
  (``tx ty tz qx qy qz qw``, optionally preceded by a timestamp, or 12/16 numbers of a row-major
  matrix) or ``trajectory.log`` (Redwood: ``i j n`` then four matrix rows);
* intrinsics in ``intrinsics.json`` or ``camera*.json`` (Open3D: ``width``, ``height``,
  column-major ``intrinsic_matrix``) or ``intrinsics.txt`` (``fx fy cx cy`` in pixels), or
  passed by the caller;
* depth as 16-bit PNG/PGM (divided by ``depth_scale``) or ``.npy`` float metres.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import FileFormatError, InputError
from ..geometry import Intrinsics, pose_from_xyz_quat, validate_pose

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".pgm", ".bmp", ".tif", ".tiff"}


@dataclass
class RGBDFrame:
    """One posed RGB-D frame."""

    rgb: np.ndarray  # uint8 (H, W, 3)
    depth: np.ndarray  # float32 (H, W) metres, 0 = no reading
    pose: np.ndarray  # float64 (4, 4) camera-to-world
    intrinsics: Intrinsics
    name: str


def _natural_key(path: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _list_images(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_EXT or p.suffix == ".npy"), key=_natural_key)


def read_rgb(path: str | Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB image; FileFormatError if unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileFormatError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_depth(path: str | Path, depth_scale: float = 1000.0) -> np.ndarray:
    """float32 (H, W) metres from a 16-bit PNG/PGM (value / depth_scale) or a float ``.npy``."""
    path = Path(path)
    if path.suffix == ".npy":
        try:
            depth = np.load(path, allow_pickle=False).astype(np.float32)
        except (OSError, ValueError) as exc:
            raise FileFormatError(f"cannot read depth {path}: {exc}") from exc
    else:
        raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if raw is None:
            raise FileFormatError(f"cannot read depth {path}")
        if raw.ndim != 2:
            raise FileFormatError(f"depth {path} must be single-channel, got shape {raw.shape}")
        depth = raw.astype(np.float32) / depth_scale if raw.dtype.kind in "ui" else raw.astype(np.float32)
    if depth.ndim != 2:
        raise FileFormatError(f"depth {path} must be (H, W), got shape {depth.shape}")
    if not np.all(np.isfinite(depth)) or (depth < 0).any():
        raise FileFormatError(f"depth {path} has NaN, inf or negative values")
    return depth


def _read_pose_lines(path: Path) -> list[np.ndarray]:
    poses = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            vals = [float(v) for v in line.replace(",", " ").split()]
        except ValueError as exc:
            raise FileFormatError(f"{path}:{lineno}: not numbers") from exc
        if len(vals) in (7, 8):
            pose = pose_from_xyz_quat(vals[-7:-4], vals[-4:])
        elif len(vals) in (12, 16):
            pose = np.vstack([np.reshape(vals[:12], (3, 4)), [0, 0, 0, 1]])
        else:
            raise FileFormatError(f"{path}:{lineno}: expected 7, 8, 12 or 16 numbers, got {len(vals)}")
        poses.append(validate_pose(pose, f"{path.name} line {lineno}"))
    return poses


def _read_redwood_log(path: Path) -> list[np.ndarray]:
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) % 5:
        raise FileFormatError(f"{path}: a Redwood .log has 5 lines per frame")
    poses = []
    for i in range(0, len(lines), 5):
        try:
            mat = np.array([[float(v) for v in lines[i + r].split()] for r in range(1, 5)])
        except ValueError as exc:
            raise FileFormatError(f"{path}:{i + 2}: not numbers") from exc
        poses.append(validate_pose(mat, f"{path.name} frame {i // 5}"))
    return poses


def _read_intrinsics(folder: Path, width: int, height: int) -> Intrinsics | None:
    candidates = [folder / "intrinsics.json", *sorted(folder.glob("camera*.json"))]
    for path in candidates:
        if path.is_file():
            try:
                data = json.loads(path.read_text())
                k = np.asarray(data["intrinsic_matrix"], dtype=np.float64).reshape(3, 3).T  # column-major
                return Intrinsics.from_matrix(k, int(data.get("width", width)), int(data.get("height", height)))
            except (KeyError, ValueError, json.JSONDecodeError) as exc:
                raise FileFormatError(f"cannot read intrinsics {path}: {exc}") from exc
    txt = folder / "intrinsics.txt"
    if txt.is_file():
        vals = txt.read_text().replace(",", " ").replace("[", " ").replace("]", " ").split()
        try:
            fx, fy, cx, cy = (float(v) for v in vals[:4])
        except ValueError as exc:
            raise FileFormatError(f"cannot read intrinsics {txt}: expected fx fy cx cy") from exc
        return Intrinsics(fx, fy, cx, cy, width, height)
    return None


def read_rgbd_folder(
    folder: str | Path, intrinsics: list | None = None, depth_scale: float = 1000.0, frames: list | None = None
) -> list[RGBDFrame]:
    """Read the posed RGB-D frames of ``folder`` (layout in the module docstring).

    ``intrinsics`` = ``[fx, fy, cx, cy]`` in pixels overrides / supplies the camera;
    ``frames`` selects frame indices (0-based).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileFormatError(f"no such folder: {folder}")
    color_dir = next((folder / n for n in ("color", "rgb", "image", "images") if (folder / n).is_dir()), None)
    if color_dir is None or not (folder / "depth").is_dir():
        raise FileFormatError(f"{folder} needs color/ (or rgb/, image/) and depth/ sub-folders")
    colors, depths = _list_images(color_dir), _list_images(folder / "depth")
    if not colors or len(colors) != len(depths):
        raise FileFormatError(f"{folder}: {len(colors)} colour images but {len(depths)} depth maps")
    pose_file = next((folder / n for n in ("pose.txt", "poses.txt", "groundtruth.txt") if (folder / n).is_file()), None)
    if pose_file is not None:
        poses = _read_pose_lines(pose_file)
    elif (folder / "trajectory.log").is_file():
        poses = _read_redwood_log(folder / "trajectory.log")
    else:
        raise FileFormatError(f"{folder} has no pose file (pose.txt, poses.txt, groundtruth.txt or trajectory.log)")
    if len(poses) != len(colors):
        raise FileFormatError(f"{folder}: {len(colors)} frames but {len(poses)} poses")
    indices = list(range(len(colors))) if not frames else [int(i) for i in frames]
    if any(i < 0 or i >= len(colors) for i in indices):
        raise InputError(f"frame indices {indices} out of range for {len(colors)} frames")
    out = []
    for i in indices:
        rgb = read_rgb(colors[i])
        depth = read_depth(depths[i], depth_scale)
        h, w = depth.shape
        if rgb.shape[:2] != (h, w):
            raise FileFormatError(f"{colors[i].name} and {depths[i].name} differ in size")
        if intrinsics:
            k = Intrinsics(*[float(v) for v in intrinsics], width=w, height=h)
        else:
            k = _read_intrinsics(folder, w, h)
            if k is None:
                raise FileFormatError(f"{folder} has no intrinsics file; pass world.intrinsics=[fx,fy,cx,cy]")
        out.append(RGBDFrame(rgb, depth, poses[i], k, colors[i].stem))
    return out
