"""The official Spatia release's test-case folder, plus our optional depth map.

One folder per case: ``img.jpg``; ``intrinsics.txt`` = ``[fx fy cx cy]`` normalised by
width/height (a JSON list or whitespace separated); ``w2c.txt`` = one JSON 4x4 (or 3x4)
world-to-camera matrix per line, OpenCV camera axes; ``prompt.txt`` (one prompt, or one per round,
a line each); optional ``mask.png`` (non-zero = dynamic entity in the first image). Our extension:
optional ``depth.npy`` (float32 metres) or ``depth.png`` (16-bit millimetres) beside ``img.jpg``,
the metric depth of the first image (0 = no value).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import FileFormatError, InputError
from .geometry import Intrinsics, invert_pose, validate_poses
from .trajectories import _as_pose, _clean, _numbers, _read_text
from .worlds.rgbd_folder import read_depth, read_rgb


@dataclass
class TestCase:
    """One test case folder (official release format plus our optional depth).

    Attributes:
        image: uint8 (H, W, 3) RGB first image.
        intrinsics: pixel intrinsics at the image size.
        poses: float64 (T, 4, 4) c2w poses (inverted from ``w2c.txt``); ``poses[0]`` is the
            first image's camera.
        prompts: list of prompts (one per round; empty if there is no ``prompt.txt``).
        mask: bool (H, W), True on dynamic entities, or None.
        depth: float32 (H, W) metric depth of the first image (0 = no value), or None.
        folder: the folder it was read from.
    """

    __test__ = False  # not a pytest test class despite the name

    image: np.ndarray
    intrinsics: Intrinsics
    poses: np.ndarray
    prompts: list[str] = field(default_factory=list)
    mask: np.ndarray | None = None
    depth: np.ndarray | None = None
    folder: Path | None = None

    @property
    def w2c(self) -> np.ndarray:
        """float64 (T, 4, 4) world-to-camera matrices."""
        return invert_pose(self.poses)

    @property
    def prompt(self) -> str:
        """The first prompt ('' if none)."""
        return self.prompts[0] if self.prompts else ""


def _read_intrinsics(path: Path, width: int, height: int) -> Intrinsics:
    """``[fx fy cx cy]`` normalised (JSON or whitespace; the first line if several). A 3x3 matrix
    is also accepted. Values with cx or cy above 2 are taken as pixels."""
    text = _read_text(path).strip()
    if not text:
        raise FileFormatError(f"{path}: empty file")
    vals = None
    try:
        obj = json.loads(text)
        arr = np.asarray(obj, dtype=np.float64)
        if arr.shape == (3, 3):
            vals = [arr[0, 0], arr[1, 1], arr[0, 2], arr[1, 2]]
        elif arr.ndim == 2 and arr.shape[1] == 4:  # one row per frame: use the first
            vals = list(arr[0])
        elif arr.shape == (4,):
            vals = list(arr)
    except (ValueError, TypeError):
        pass
    if vals is None:
        first = next(line for line in text.splitlines() if line.strip())
        nums = _numbers(first.strip().strip("[]"), f"{path}:1")
        if len(nums) == 9:
            nums = [nums[0], nums[4], nums[2], nums[5]]
        if len(nums) != 4:
            raise FileFormatError(f"{path}:1: expected [fx fy cx cy], got {len(nums)} numbers")
        vals = nums
    fx, fy, cx, cy = (float(v) for v in vals)
    if not all(np.isfinite([fx, fy, cx, cy])) or fx <= 0 or fy <= 0:
        raise FileFormatError(f"{path}: invalid intrinsics {[fx, fy, cx, cy]}")
    if cx > 2.0 or cy > 2.0:  # already in pixels
        return Intrinsics(fx, fy, cx, cy, width, height)
    return Intrinsics.from_normalized(fx, fy, cx, cy, width, height)


def _read_w2c(path: Path) -> np.ndarray:
    """World-to-camera matrices, one JSON matrix per line (or one JSON list of matrices)."""
    text = _read_text(path)
    mats = []
    try:  # the whole file as one JSON list of matrices
        arr = np.asarray(json.loads(text), dtype=np.float64)
        if arr.ndim == 3 and arr.shape[1:] in ((4, 4), (3, 4)):
            mats = [_as_pose(m, f"{path}: matrix {i + 1}") for i, m in enumerate(arr)]
    except (ValueError, TypeError):
        pass
    if not mats:
        for lineno, line in enumerate(text.splitlines(), 1):
            body = line.strip()
            if not body or body.startswith("#"):
                continue
            where = f"{path}:{lineno}"
            if body.startswith("["):
                try:
                    obj = json.loads(body)
                except ValueError:
                    raise FileFormatError(f"{where}: not a valid JSON matrix: {body[:60]!r}") from None
            else:
                obj = _numbers(body, where)
            try:
                arr = np.asarray(obj, dtype=np.float64)
            except (ValueError, TypeError):
                raise FileFormatError(f"{where}: not a numeric matrix") from None
            mats.append(_as_pose(arr, where))
    if not mats:
        raise FileFormatError(f"{path}: no matrices in file")
    return np.stack(mats)


def _read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    from .cameras import read_mask

    return read_mask(path, shape)


#: Our optional depth files beside ``img.jpg``, in the order they are looked for.
DEPTH_FILES = ("depth.npy", "depth.png")


def has_depth(folder) -> bool:
    """Whether the test case in ``folder`` has our optional depth file (else its first image
    needs a single-image depth source)."""
    return any((Path(folder) / name).is_file() for name in DEPTH_FILES)


def _read_depth(folder: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """Our optional ``depth.npy`` (float metres) or ``depth.png`` (16-bit millimetres)."""
    for name in DEPTH_FILES:
        if (folder / name).is_file():
            depth = read_depth(folder / name, 1000.0)
            if depth.shape != shape:
                raise FileFormatError(
                    f"{folder / name}: depth is {depth.shape[1]}x{depth.shape[0]}, image is {shape[1]}x{shape[0]}")
            return depth
    return None


def read_testcase(folder) -> TestCase:
    """Read a test case folder (see the module docstring for its files).

    ``img.jpg`` (or ``img.png``), ``intrinsics.txt`` and ``w2c.txt`` are required; ``prompt.txt``,
    ``mask.png`` and ``depth.npy`` / ``depth.png`` are optional.

    Raises:
        FileFormatError: a missing folder or required file, or a corrupt file; the one-line
            message names the file (and the line for text files).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileFormatError(f"{folder}: test-case folder not found")
    img_path = folder / "img.jpg"
    if not img_path.is_file() and (folder / "img.png").is_file():
        img_path = folder / "img.png"
    if not img_path.is_file():
        raise FileFormatError(f"{img_path}: file not found")
    image = read_rgb(img_path)
    h, w = image.shape[:2]
    intrinsics = _read_intrinsics(folder / "intrinsics.txt", w, h)
    poses = _clean(invert_pose(_read_w2c(folder / "w2c.txt")))
    prompts: list[str] = []
    if (folder / "prompt.txt").is_file():
        prompts = [ln.strip() for ln in _read_text(folder / "prompt.txt").splitlines() if ln.strip()]
    mask = _read_mask(folder / "mask.png", (h, w)) if (folder / "mask.png").is_file() else None
    depth = _read_depth(folder, (h, w))
    return TestCase(image, intrinsics, poses, prompts, mask, depth, folder)


def write_testcase(
    folder,
    image,
    intrinsics,
    poses_c2w,
    prompts,
    mask=None,
    depth=None,
    depth_format: str = "npy",
    jpeg_quality: int = 95,
) -> Path:
    """Write a test case folder readable by :func:`read_testcase` and the official release.

    Args:
        folder: output folder (created if needed; existing case files are overwritten).
        image: uint8 (H, W, 3) RGB.
        intrinsics: :class:`Intrinsics` (any resolution; written normalised) or normalised
            ``[fx, fy, cx, cy]``.
        poses_c2w: float (T, 4, 4) c2w poses; written as world-to-camera lines.
        prompts: a prompt string or a list of prompts (one per round); newlines are not allowed
            inside a prompt.
        mask: optional bool/uint8 (H, W), non-zero = dynamic.
        depth: optional float (H, W) metric depth (0 = no value).
        depth_format: ``"npy"`` (float32 metres, lossless) or ``"png"`` (16-bit millimetres).
        jpeg_quality: JPEG quality of ``img.jpg``.

    Returns:
        The folder path.
    """
    from PIL import Image

    folder = Path(folder)
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InputError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    h, w = image.shape[:2]
    if isinstance(intrinsics, Intrinsics):
        norm = intrinsics.normalized()
    else:
        norm = [float(v) for v in np.asarray(intrinsics, dtype=np.float64).ravel()]
        if len(norm) != 4:
            raise InputError(f"intrinsics must be an Intrinsics or [fx fy cx cy], got {len(norm)} values")
        Intrinsics.from_normalized(*norm, w, h)  # validates
    poses = validate_poses(poses_c2w, "poses_c2w")
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = [str(p) for p in prompts]
    if any("\n" in p for p in prompts):
        raise InputError("prompts must not contain newlines (one prompt per line in prompt.txt)")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.shape != (h, w):
            raise InputError(f"mask must be (H, W) = {(h, w)}, got {mask.shape}")
    if depth is not None:
        depth = np.asarray(depth, dtype=np.float32)
        if depth.shape != (h, w):
            raise InputError(f"depth must be (H, W) = {(h, w)}, got {depth.shape}")
    if depth_format not in ("npy", "png"):
        raise InputError(f"depth_format must be 'npy' or 'png', got {depth_format!r}")

    try:
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / "img.jpg", quality=int(jpeg_quality))
        (folder / "intrinsics.txt").write_text(json.dumps(norm) + "\n", encoding="utf-8")
        w2c = invert_pose(poses)
        (folder / "w2c.txt").write_text("".join(json.dumps(m.tolist()) + "\n" for m in w2c), encoding="utf-8")
        (folder / "prompt.txt").write_text("".join(p + "\n" for p in prompts), encoding="utf-8")
        for stale in ("mask.png", "depth.npy", "depth.png"):
            if (folder / stale).exists():
                os.remove(folder / stale)
        if mask is not None:
            Image.fromarray((mask != 0).astype(np.uint8) * 255).save(folder / "mask.png")
        if depth is not None:
            depth = np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)
            if depth_format == "npy":
                np.save(folder / "depth.npy", depth)
            else:
                mm = np.clip(np.round(depth * 1000.0), 0, 65535).astype(np.uint16)
                Image.fromarray(mm).save(folder / "depth.png")
    except OSError as exc:
        raise FileFormatError(f"{folder}: cannot write test case ({exc})") from None
    return folder


