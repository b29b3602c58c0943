"""Camera trajectories: the official test-case format, RealEstate10K pose files, generated paths.

All functions return camera-to-world poses, float64 (T, 4, 4), OpenCV camera axes, validated.
Generated paths keep the camera upright in the map frame (world z up) and start at
``start_pose``; ``orbit``, ``forward_back``, ``loop`` and ``look_around`` end exactly there.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import FileFormatError, InputError
from .geometry import Intrinsics, invert_pose, validate_pose, validate_poses


# -- the official test-case folder ------------------------------------------------------------
@dataclass
class TestCase:
    """One folder of the official release's test cases (plus our optional depth map)."""

    __test__ = False  # not a pytest class

    folder: Path
    image: np.ndarray  # uint8 (H, W, 3) RGB, the first frame
    intrinsics: Intrinsics  # at the image size
    poses: np.ndarray  # float64 (T, 4, 4) camera-to-world
    prompts: list[str]
    mask: np.ndarray | None = None  # bool (H, W): dynamic entities in the first image
    depth: np.ndarray | None = None  # float32 (H, W) metres (depth.png mm / depth.npy m), ours


def _numbers(text: str, where: str) -> list[float]:
    try:
        data = json.loads(text)
        return [float(v) for v in np.asarray(data, dtype=np.float64).reshape(-1)]
    except (json.JSONDecodeError, ValueError, TypeError):
        pass
    try:
        return [float(v) for v in text.replace(",", " ").replace("[", " ").replace("]", " ").split()]
    except ValueError as exc:
        raise FileFormatError(f"{where}: not numbers") from exc


def read_testcase(folder: str | Path) -> TestCase:
    """Read ``img.jpg``, ``intrinsics.txt`` (normalised ``[fx fy cx cy]``), ``w2c.txt`` (one JSON
    4x4 or 3x4 world-to-camera matrix per line), ``prompt.txt`` and optional ``mask.png``,
    ``depth.png`` / ``depth.npy``."""
    from .worlds.rgbd_folder import read_depth, read_rgb

    folder = Path(folder)
    if not folder.is_dir():
        raise FileFormatError(f"no such test-case folder: {folder}")
    img_path = next((folder / n for n in ("img.jpg", "img.png") if (folder / n).is_file()), None)
    for name, path in (("img.jpg", img_path), ("intrinsics.txt", folder / "intrinsics.txt"), ("w2c.txt", folder / "w2c.txt")):
        if path is None or not path.is_file():
            raise FileFormatError(f"test case {folder} has no {name}")
    image = read_rgb(img_path)
    h, w = image.shape[:2]
    k = _numbers((folder / "intrinsics.txt").read_text(), str(folder / "intrinsics.txt"))
    if len(k) != 4:
        raise FileFormatError(f"{folder / 'intrinsics.txt'}: expected [fx fy cx cy], got {len(k)} numbers")
    intrinsics = Intrinsics.from_normalized(*k, width=w, height=h)
    poses = []
    for lineno, line in enumerate((folder / "w2c.txt").read_text().splitlines(), 1):
        if not line.strip():
            continue
        vals = _numbers(line, f"{folder / 'w2c.txt'}:{lineno}")
        if len(vals) not in (12, 16):
            raise FileFormatError(f"{folder / 'w2c.txt'}:{lineno}: expected a 3x4 or 4x4 matrix, got {len(vals)} numbers")
        mat = np.reshape(vals, (-1, 4))
        try:
            w2c = validate_pose(mat, f"w2c.txt line {lineno}")
        except InputError as exc:
            raise FileFormatError(f"{folder / 'w2c.txt'}:{lineno}: {exc}") from exc
        poses.append(invert_pose(w2c))
    if not poses:
        raise FileFormatError(f"{folder / 'w2c.txt'} holds no poses")
    prompt_file = folder / "prompt.txt"
    prompts = [ln.strip() for ln in prompt_file.read_text().splitlines() if ln.strip()] if prompt_file.is_file() else []
    mask = None
    if (folder / "mask.png").is_file():
        import cv2

        m = cv2.imread(str(folder / "mask.png"), cv2.IMREAD_GRAYSCALE)
        if m is None or m.shape != (h, w):
            raise FileFormatError(f"{folder / 'mask.png'} is unreadable or not {w}x{h}")
        mask = m > 0
    depth = None
    for name in ("depth.npy", "depth.png"):
        if (folder / name).is_file():
            depth = read_depth(folder / name, 1000.0)
            if depth.shape != (h, w):
                raise FileFormatError(f"{folder / name} is not {w}x{h}")
            break
    return TestCase(folder, image, intrinsics, np.stack(poses), prompts or [""], mask, depth)


def write_testcase(folder, image, intrinsics: Intrinsics, poses_c2w, prompts, mask=None, depth=None) -> Path:
    """Write a test-case folder in the official format (``depth`` as ``depth.npy``, metres)."""
    import cv2

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    poses = validate_poses(poses_c2w)
    if not cv2.imwrite(str(folder / "img.jpg"), cv2.cvtColor(np.asarray(image, np.uint8), cv2.COLOR_RGB2BGR),
                       [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise FileFormatError(f"cannot write {folder / 'img.jpg'}")
    (folder / "intrinsics.txt").write_text(json.dumps([round(v, 8) for v in intrinsics.normalized()]) + "\n")
    (folder / "w2c.txt").write_text("".join(json.dumps(invert_pose(p).tolist()) + "\n" for p in poses))
    (folder / "prompt.txt").write_text("\n".join([prompts] if isinstance(prompts, str) else prompts) + "\n")
    if mask is not None:
        cv2.imwrite(str(folder / "mask.png"), np.asarray(mask, bool).astype(np.uint8) * 255)
    if depth is not None:
        np.save(folder / "depth.npy", np.asarray(depth, np.float32))
    return folder


# -- RealEstate10K -----------------------------------------------------------------------------
@dataclass
class Re10kTrajectory:
    poses: np.ndarray  # float64 (T, 4, 4) camera-to-world
    intrinsics: np.ndarray  # float64 (T, 4) normalised fx fy cx cy
    timestamps_us: np.ndarray  # int64 (T,)
    url: str


def read_re10k(path: str | Path) -> Re10kTrajectory:
    """A RealEstate10K camera file: URL line, then ``t fx fy cx cy k1 k2`` + 3x4 world-to-camera."""
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"no such file: {path}")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if len(lines) < 2:
        raise FileFormatError(f"{path}: no poses")
    poses, intr, stamps = [], [], []
    for lineno, line in enumerate(lines[1:], 2):
        try:
            vals = [float(v) for v in line.split()]
        except ValueError as exc:
            raise FileFormatError(f"{path}:{lineno}: not numbers") from exc
        if len(vals) != 19:
            raise FileFormatError(f"{path}:{lineno}: expected 19 numbers, got {len(vals)}")
        try:
            w2c = validate_pose(np.reshape(vals[7:], (3, 4)), f"{path.name} line {lineno}")
        except InputError as exc:
            raise FileFormatError(f"{path}:{lineno}: {exc}") from exc
        poses.append(invert_pose(w2c))
        intr.append(vals[1:5])
        stamps.append(int(vals[0]))
    return Re10kTrajectory(np.stack(poses), np.array(intr), np.array(stamps, np.int64), lines[0].strip())


# -- simple pose files -------------------------------------------------------------------------
def write_poses(path: str | Path, poses) -> None:
    """One line per pose: the 16 numbers of the camera-to-world matrix, row-major."""
    poses = validate_poses(poses)
    lines = ["# camera-to-world 4x4, row-major, OpenCV camera axes, map frame"]
    lines += [" ".join(f"{v:.9g}" for v in p.reshape(-1)) for p in poses]
    Path(path).write_text("\n".join(lines) + "\n")


def read_poses(path: str | Path) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise FileFormatError(f"no such file: {path}")
    poses = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        vals = _numbers(line, f"{path}:{lineno}")
        if len(vals) != 16:
            raise FileFormatError(f"{path}:{lineno}: expected 16 numbers, got {len(vals)}")
        try:
            poses.append(validate_pose(np.reshape(vals, (4, 4)), f"{path.name} line {lineno}"))
        except InputError as exc:
            raise FileFormatError(f"{path}:{lineno}: {exc}") from exc
    if not poses:
        raise FileFormatError(f"{path} holds no poses")
    return np.stack(poses)


# -- generated paths ---------------------------------------------------------------------------
def anchor(poses, start_pose, scale: float = 1.0) -> np.ndarray:
    """Re-express ``poses`` relative to their first pose and place them at ``start_pose``:
    ``c2w_i' = start @ inv(c2w_0) @ c2w_i`` (translations scaled by ``scale``)."""
    poses = validate_poses(poses)
    rel = invert_pose(poses[0]) @ poses
    rel[:, :3, 3] *= scale
    return validate_poses(validate_pose(start_pose) @ rel)


def _upright(start_pose: np.ndarray, position: np.ndarray, yaw: float) -> np.ndarray:
    """A pose at ``position`` with the start pose's orientation turned by ``yaw`` about world z."""
    c, s = np.cos(yaw), np.sin(yaw)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    out = np.eye(4)
    out[:3, :3] = rz @ start_pose[:3, :3]
    out[:3, 3] = position
    return out


def _heading(start_pose: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Horizontal forward and left unit vectors of the start camera."""
    fwd = start_pose[:3, 2].copy()
    fwd[2] = 0.0
    if np.linalg.norm(fwd) < 1e-6:
        fwd = start_pose[:3, 0].copy()
        fwd[2] = 0.0
    fwd /= np.linalg.norm(fwd)
    return fwd, np.cross([0.0, 0.0, 1.0], fwd)


def _phase(n_frames: int) -> np.ndarray:
    if n_frames < 2:
        raise InputError("a generated trajectory needs at least 2 frames")
    return np.linspace(0.0, 1.0, n_frames)


def orbit(start_pose, n_frames: int, radius: float = 0.5) -> np.ndarray:
    """The camera travels once around a circle of ``radius`` to its left, turning with it (its
    heading stays at the same angle to the circle's tangent), and returns to the start."""
    start = validate_pose(start_pose)
    fwd, left = _heading(start)
    centre = start[:3, 3] + left * radius
    out = []
    for u in _phase(n_frames):
        a = 2 * np.pi * u
        offset = -left * np.cos(a) + fwd * np.sin(a)
        out.append(_upright(start, centre + radius * offset, a))
    return validate_poses(out)


def forward_back(start_pose, n_frames: int, distance: float = 1.0) -> np.ndarray:
    """Move ``distance`` metres along the view direction and back (smooth, ends at the start)."""
    start = validate_pose(start_pose)
    fwd, _ = _heading(start)
    out = []
    for u in _phase(n_frames):
        d = distance * 0.5 * (1 - np.cos(2 * np.pi * u))
        out.append(_upright(start, start[:3, 3] + fwd * d, 0.0))
    return validate_poses(out)


def closed_loop(start_pose, n_frames: int, radius: float = 0.4) -> np.ndarray:
    """Look around through 360 degrees while moving on a small circle; ends exactly at the start.

    The camera keeps looking outwards from the circle's centre, so the loop sees the whole room
    and comes back to the first view (the paper's closed-loop protocol)."""
    start = validate_pose(start_pose)
    fwd, _ = _heading(start)
    centre = start[:3, 3] - fwd * radius
    out = []
    for u in _phase(n_frames):
        a = 2 * np.pi * u
        c, s = np.cos(a), np.sin(a)
        out.append(_upright(start, centre + radius * (c * fwd + s * np.cross([0.0, 0.0, 1.0], fwd)), a))
    return validate_poses(out)


def look_around(start_pose, n_frames: int, yaw_deg: float = 60.0) -> np.ndarray:
    """Turn in place to the left by ``yaw_deg``, to the right by as much, and back."""
    start = validate_pose(start_pose)
    yaws = np.deg2rad(yaw_deg) * np.sin(2 * np.pi * _phase(n_frames))
    return validate_poses([_upright(start, start[:3, 3], y) for y in yaws])


GENERATORS = {"orbit": orbit, "forward_back": forward_back, "loop": closed_loop, "look_around": look_around}


def make_trajectory(name: str, start_pose, n_frames: int, **kwargs) -> np.ndarray:
    """A generated trajectory by name: orbit, forward_back, loop or look_around."""
    if name not in GENERATORS:
        raise InputError(f"unknown trajectory {name!r}; choose one of {', '.join(GENERATORS)}, or give a file")
    return GENERATORS[name](start_pose, n_frames, **kwargs)


def load_trajectory(spec: str, start_pose, n_frames: int) -> np.ndarray:
    """A generated name, a test-case folder (poses as given), an RE10K .txt (anchored at
    ``start_pose``) or a pose file of 16 numbers per line (as given)."""
    if spec in GENERATORS:
        return make_trajectory(spec, start_pose, n_frames)
    path = Path(spec)
    if path.is_dir():
        return read_testcase(path).poses
    if not path.is_file():
        raise InputError(f"trajectory {spec!r} is neither a known name ({', '.join(GENERATORS)}) nor a file or folder")
    first = next((ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")), "")
    if first.startswith("http") or len(first.split()) == 19:
        return anchor(read_re10k(path).poses, start_pose)
    return read_poses(path)
