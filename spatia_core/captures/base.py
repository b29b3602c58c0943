"""Posed photos: the common form every capture reader returns, and loading at a working size.

A capture is a list of :class:`PosedImage` (an image file, its camera-to-world pose with OpenCV
axes, pinhole intrinsics at the file's own size) plus what the format says about scale: a depth
range (LLFF bounds), sparse 3D points (an SfM model), or nothing. Readers only parse; images are
decoded on demand by :func:`load_image`, resized with one half-pixel rule (:func:`scale_intrinsics`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..cameras import resized_matrix, undistort
from ..errors import FileFormatError, InputError
from ..geometry import Intrinsics


@dataclass
class PosedImage:
    """One photo of a capture."""

    path: Path  # the image file
    pose: np.ndarray  # float64 (4, 4) camera-to-world, OpenCV axes (x right, y down, z forward)
    intrinsics: Intrinsics  # pinhole camera at the file's own resolution (undistorted, see ``distortion``)
    name: str  # stem of the file, for reports
    distortion: tuple = ()  # OpenCV (k1, k2, p1, p2[, k3]) of the original photo; () = none
    depth_range: tuple[float, float] | None = None  # (near, far) of this view's scene content, when the format says


@dataclass
class Capture:
    """Posed photos of one scene, as a reader found them."""

    images: list[PosedImage]
    format: str  # strecha | transforms_json | llff | colmap
    root: Path
    points: np.ndarray | None = None  # float64 (N, 3) sparse scene points in the pose frame (SfM), if any
    metric: bool = True  # whether the units are metres (False: SfM up to scale)
    notes: list[str] = field(default_factory=list)  # what the reader assumed or dropped

    def __len__(self) -> int:
        return len(self.images)


def scale_intrinsics(k: Intrinsics, width: int, height: int) -> Intrinsics:
    """``k`` for the image resized to ``width`` x ``height``, pixel centres kept aligned.

    Pixel ``i`` covers ``[i - 0.5, i + 0.5]`` (centres at integers, as the renderer and the
    multi-view sweep use them), so ``c' = (c + 0.5) s - 0.5`` and ``f' = f s``.
    """
    return Intrinsics.from_matrix(resized_matrix(k, width, height), width, height)


def working_size(width: int, height: int, max_size: int) -> tuple[int, int]:
    """``(w, h)`` with the long side at most ``max_size`` (never upscaled)."""
    s = min(1.0, max_size / max(width, height))
    return max(int(round(width * s)), 8), max(int(round(height * s)), 8)


def load_image(img: PosedImage, max_size: int = 0) -> tuple[np.ndarray, Intrinsics]:
    """Decode ``img``: uint8 RGB (h, w, 3) with its long side at most ``max_size`` (0: full size),
    undistorted when the photo has distortion, and the intrinsics at that size."""
    bgr = cv2.imread(str(img.path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise FileFormatError(f"cannot read image {img.path}")
    h, w = bgr.shape[:2]
    k = img.intrinsics
    if (w, h) != (k.width, k.height):
        if abs(w / h - k.width / k.height) > 0.01:
            raise FileFormatError(f"{img.path} is {w}x{h} but its camera is {k.width}x{k.height}")
        k = scale_intrinsics(k, w, h)  # e.g. a downscaled copy of the calibrated images
    if img.distortion:
        bgr = undistort(bgr, k, img.distortion)
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    if max_size:
        ww, hh = working_size(w, h, max_size)
        if (ww, hh) != (w, h):
            rgb = cv2.resize(rgb, (ww, hh), interpolation=cv2.INTER_AREA)
            k = scale_intrinsics(k, ww, hh)
    return rgb, k


def check_capture(images: list[PosedImage], root: Path) -> None:
    """One clear error for a capture no memory can be built from."""
    if not images:
        raise FileFormatError(f"{root}: no posed images found")
    missing = [str(i.path) for i in images if not i.path.is_file()]
    if missing:
        raise FileFormatError(f"{root}: {len(missing)} image file(s) missing, e.g. {missing[0]}")
    for i in images:
        if not np.all(np.isfinite(i.pose)):
            raise FileFormatError(f"{root}: pose of {i.name} is not finite")


def parse_holdout(spec: str, n: int) -> list[int]:
    """Held-out view indices from ``every:N`` (every N-th view from the first, as LLFF / mip-NeRF
    evaluations do), ``every:N@K`` (every N-th from view K) or ``ids:1,5`` (0-based indices)."""
    spec = spec.strip()
    try:
        if spec.startswith("every:"):
            body = spec[len("every:"):]
            step, _, start = body.partition("@")
            step, start = int(step), int(start or 0)
            if step < 2 or not 0 <= start < step:
                raise ValueError
            out = list(range(start, n, step))
        elif spec.startswith("ids:"):
            out = sorted({int(v) for v in spec[len("ids:"):].split(",") if v.strip()})
        else:
            raise ValueError
    except ValueError:
        raise InputError(f"holdout {spec!r} must be every:N (N >= 2), every:N@K (0 <= K < N) or ids:i,j,...") from None
    if not out or any(not 0 <= i < n for i in out) or len(out) >= n:
        raise InputError(f"holdout {spec!r} selects {out} of {n} views: needs at least one held-out and one training view")
    return out
