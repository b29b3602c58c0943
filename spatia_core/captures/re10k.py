"""RealEstate10K clips with their frames: a folder of frames plus the clip's camera file.

The frames are in ``frames/`` (or ``images/``, ``rgb/``, ``color/``); the camera file is
``cameras.txt`` or the one ``.txt`` in the RE10K format (:func:`~spatia_core.trajectories.read_re10k`:
first line the video URL, then per frame ``timestamp_us fx fy cx cy k1 k2`` and the 3x4
world-to-camera matrix row-major, OpenCV axes, intrinsics normalised by the image size). Frames
named by their timestamp (as RE10K extractions name them) are matched to the camera lines by it,
others by sorted order; every frame needs a camera line and every camera line a frame. RE10K
comes from ORB-SLAM on YouTube videos, so the units are arbitrary (``world.metric_scale``).
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import FileFormatError
from ..geometry import Intrinsics
from .base import Capture, PosedImage, check_capture

FRAME_DIRS = ("frames", "images", "rgb", "color")
_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def frame_dir(root: Path) -> Path | None:
    """The frames folder of a clip folder, or None."""
    return next((root / n for n in FRAME_DIRS if (root / n).is_dir()), None)


def camera_file(root: Path) -> Path | None:
    """``cameras.txt``, else the one ``.txt`` of ``root``, in the RE10K format, else None."""
    from ..trajectories import _is_re10k

    found = []
    for p in sorted(root.glob("*.txt")):
        try:
            if p.name != "prompt.txt" and _is_re10k(p):
                found.append(p)
        except FileFormatError:
            continue
    if root / "cameras.txt" in found:  # (a COLMAP cameras.txt is not in the RE10K format)
        return root / "cameras.txt"
    return found[0] if len(found) == 1 else None


def is_re10k_clip(root: Path) -> bool:
    return root.is_dir() and frame_dir(root) is not None and camera_file(root) is not None


def _image_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            return img.size
    except (OSError, UnidentifiedImageError) as exc:
        raise FileFormatError(f"cannot read image {path}: {exc}") from None


def read_re10k_clip(root: str | Path) -> Capture:
    """The frames of the clip folder ``root`` with their RE10K cameras, in camera-file order."""
    from ..trajectories import read_re10k

    root = Path(root)
    frames_at = frame_dir(root) if root.is_dir() else None
    if frames_at is None:
        raise FileFormatError(f"{root}: an RE10K clip needs a frames/ (or images/, rgb/, color/) folder")
    cams = camera_file(root)
    if cams is None:
        raise FileFormatError(f"{root}: an RE10K clip needs cameras.txt (or one .txt camera file in the RE10K format)")
    traj = read_re10k(cams)
    files = sorted((p for p in frames_at.iterdir() if p.suffix.lower() in _IMAGE_EXT), key=_natural_key)
    n = len(traj.poses)
    stamps = traj.timestamps_us.tolist()
    if files and all(p.stem.isdigit() for p in files) and {int(p.stem) for p in files} & set(stamps):
        by_stamp = {int(p.stem): p for p in files}
        extra = sorted(set(by_stamp) - set(stamps))
        if extra:
            raise FileFormatError(f"{root}: {len(extra)} frame(s) have no camera line in {cams.name}, e.g. "
                                  f"{by_stamp[extra[0]].name}")
        lacking = [t for t in stamps if t not in by_stamp]
        if lacking:
            raise FileFormatError(f"{root}: {len(lacking)} of {n} camera lines of {cams.name} have no frame in "
                                  f"{frames_at.name}/, e.g. timestamp {lacking[0]}")
        ordered = [by_stamp[t] for t in stamps]
    elif len(files) == n:
        ordered = files
    else:
        raise FileFormatError(f"{root}: {len(files)} frame(s) in {frames_at.name}/ but {n} camera lines in {cams.name}")
    dist = _distortions(cams)
    images = []
    for j, path in enumerate(ordered):
        w, h = _image_size(path)
        k = traj.intrinsics_at(w, h, j)
        k1, k2 = dist[j]
        images.append(PosedImage(path, traj.poses[j], Intrinsics(k.fx, k.fy, k.cx, k.cy, w, h), path.stem,
                                 (k1, k2, 0.0, 0.0) if (k1 or k2) else ()))
    check_capture(images, root)
    notes = [f"RE10K units from {cams.name} (not metres): set world.metric_scale to metres per unit"]
    return Capture(images, "re10k", root, metric=False, notes=notes)


def _distortions(path: Path) -> list[tuple[float, float]]:
    """``(k1, k2)`` of every camera line (RE10K writes 0 0: its frames are undistorted); the file
    was checked by :func:`~spatia_core.trajectories.read_re10k`."""
    rows = [ln.replace(",", " ").split() for ln in path.read_text(encoding="utf-8").splitlines()]
    rows = [r for r in rows if len(r) == 19 and not r[0].startswith("#")]
    return [(float(r[5]), float(r[6])) for r in rows]
