"""Worlds to start from: fill a :class:`SpatialMemory` and say where the camera starts.

Sources (``WorldConfig.source``): ``builtin`` (the seeded procedural room), ``rgbd_folder``
(posed RGB-D frames), ``ply`` (a point cloud, or a map saved by
``save_map``: its entities come back), ``image_depth`` (one image with a depth map),
``testcase`` (the official test-case folder with our optional ``depth.png``/``depth.npy``),
``capture`` (posed photos: COLMAP, transforms.json, LLFF, Strecha; see :mod:`spatia_core.captures`), or
``auto`` (decided from ``path``).

Worlds read from files are expressed in the ROS ``map`` frame: z up, the first camera at the
origin looking along +x (the transform applied is ``WorldInit.map_from_source``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import WorldConfig
from ..errors import BackendUnavailableError, FileFormatError, InputError
from ..geometry import R_BODY_OPTICAL, Intrinsics
from ..memory import SpatialMemory
from ..memory.ply import load_ply
from .rgbd_folder import RGBDFrame, read_depth, read_rgb, read_rgbd_folder

SOURCES = ("builtin", "rgbd_folder", "ply", "image_depth", "testcase", "capture", "auto")


@dataclass
class WorldInit:
    """What loading a world produced (the memory itself is filled in place)."""

    source: str
    start_pose: np.ndarray  # float64 (4, 4) camera-to-world in the map frame
    frames: list[RGBDFrame] = field(default_factory=list)  # real posed frames, in the map frame
    center: np.ndarray | None = None  # a good orbit centre, if known
    map_from_source: np.ndarray = field(default_factory=lambda: np.eye(4))  # applied to source poses
    prompts: list[str] = field(default_factory=list)  # test-case prompts
    camera: Intrinsics | None = None  # the camera the world defines (its images'), if any: the default output camera


def resolve_source(cfg: WorldConfig) -> str:
    """The concrete source kind of ``cfg`` (resolves ``auto``)."""
    if cfg.source not in SOURCES:
        raise InputError(f"unknown world source {cfg.source!r}; choose one of {', '.join(SOURCES)}")
    if cfg.source != "auto":
        return cfg.source
    if not cfg.path or cfg.path == "builtin":
        return "builtin"
    path = Path(cfg.path)
    if path.suffix.lower() == ".ply":
        return "ply"
    if path.is_dir():
        if (path / "w2c.txt").is_file() and any((path / n).is_file() for n in ("img.jpg", "img.png")):
            return "testcase"
        if not (path / "depth").is_dir() and _capture_format(path):
            return "capture"
        return "rgbd_folder"
    if path.is_file():
        return "capture" if _capture_format(path) else "image_depth"
    raise FileFormatError(f"world path does not exist: {path}")


def _capture_format(path: Path) -> str | None:
    from ..captures import detect_format

    return detect_format(path)


def world_has_depth(cfg: WorldConfig) -> bool:
    """Whether the world's images come with depth: False only for a test case without
    ``depth.npy``/``depth.png`` (its first image needs a single-image depth source). A path that
    cannot be resolved counts as True; :func:`load_world` reports it."""
    try:
        if resolve_source(cfg) != "testcase" or not Path(cfg.path).is_dir():
            return True
    except (InputError, FileFormatError):
        return True
    from ..testcase import has_depth

    return has_depth(cfg.path)


def upright_transform(pose: np.ndarray) -> np.ndarray:
    """Rigid transform taking ``pose``'s camera to the origin, upright, looking along +x.

    Up is the camera's -y axis; its forward axis projected on the horizontal becomes +x.
    """
    up = -pose[:3, 1]
    fwd = pose[:3, 2] - np.dot(pose[:3, 2], up) * up
    if np.linalg.norm(fwd) < 1e-6:  # looking straight up or down
        fwd = pose[:3, 0]
    fwd /= np.linalg.norm(fwd)
    left = np.cross(up, fwd)
    rot = np.stack([fwd, left, up])  # rows: source vectors -> map axes
    out = np.eye(4)
    out[:3, :3] = rot
    out[:3, 3] = -rot @ pose[:3, 3]
    return out


def _transform_frames(frames: list[RGBDFrame], tf: np.ndarray) -> list[RGBDFrame]:
    return [RGBDFrame(f.rgb, f.depth, tf @ f.pose, f.intrinsics, f.name) for f in frames]


def _fuse(memory: SpatialMemory, frames: list[RGBDFrame], masks=None) -> None:
    for i, f in enumerate(frames):
        memory.insert_frame(f.rgb, f.depth, f.intrinsics, f.pose, exclude_mask=None if masks is None else masks[i])


def load_world(cfg: WorldConfig, memory: SpatialMemory, camera: Intrinsics | None = None,
               depth_source=None) -> WorldInit:
    """Fill ``memory`` (cleared first, only once the source was read) from the world ``cfg``.

    ``camera`` is the output camera, used for image worlds without intrinsics. ``depth_source``
    (a single-image depth source with ``estimate_single(image, intrinsics)``: ``update.depth``
    mono or mapanything) gives a test case without a depth file its depth. ``WorldInit.camera``
    is the camera of the world's images (a test case's intrinsics at its image size, an RGB-D
    folder's first frame, an image world's ``intrinsics``); None for builtin, ply and an image
    world without intrinsics.
    """
    source = resolve_source(cfg)
    if source == "builtin":
        from .procedural import make_room

        scene = make_room(seed=cfg.seed, spacing=memory.voxel_size)
        memory.clear()
        memory.insert_points(scene.points, scene.colors)
        return WorldInit(source, scene.start_pose, center=np.asarray(scene.center, dtype=np.float64))
    if source == "ply":
        # A map we saved keeps its entities (names, poses, voxels); any other PLY point cloud
        # (no entity properties, maybe no counts) loads all static. Checked whole before the
        # memory is cleared; an empty cloud is refused (then the memory is left empty).
        load_ply(cfg.path, memory)
        if len(memory) == 0:
            raise FileFormatError(f"unreadable or empty PLY point cloud: {cfg.path}")
        xyz = memory.xyz.cpu().numpy()
        lo, hi = xyz.min(0).astype(np.float64), xyz.max(0).astype(np.float64)
        start = np.eye(4)
        start[:3, :3] = R_BODY_OPTICAL
        start[:3, 3] = (lo + hi) / 2
        return WorldInit(source, start, center=(lo + hi) / 2)
    if source == "capture":
        from ..captures.world import load_capture_world

        return load_capture_world(cfg, memory, device=str(memory.device))
    if source == "rgbd_folder":
        frames = read_rgbd_folder(cfg.path, cfg.intrinsics or None, cfg.depth_scale, cfg.frames or None)
        tf = upright_transform(frames[0].pose)
        frames = _transform_frames(frames, tf)
        memory.clear()
        _fuse(memory, frames)
        return WorldInit(source, frames[0].pose, frames=frames, map_from_source=tf, camera=frames[0].intrinsics)
    if source == "image_depth":
        if not cfg.depth_path:
            raise InputError("an image world needs world.depth_path (a depth map for the image)")
        rgb, depth = read_rgb(cfg.path), read_depth(cfg.depth_path, cfg.depth_scale)
        if rgb.shape[:2] != depth.shape:
            raise FileFormatError(f"image {cfg.path} and depth {cfg.depth_path} differ in size")
        h, w = depth.shape
        if cfg.intrinsics:
            k = Intrinsics(*[float(v) for v in cfg.intrinsics], width=w, height=h)
        elif camera is not None:
            k = camera.resized(w, h)
        else:
            k = Intrinsics.from_fov(70.0, w, h)
        pose = np.eye(4)
        pose[:3, :3] = R_BODY_OPTICAL
        frames = [RGBDFrame(rgb, depth, pose, k, Path(cfg.path).stem)]
        memory.clear()
        _fuse(memory, frames)
        return WorldInit(source, pose, frames=frames, camera=k if cfg.intrinsics else None)
    # testcase
    from ..testcase import read_testcase

    case = read_testcase(cfg.path)
    depth = case.depth
    if depth is None:
        estimate_single = getattr(depth_source, "estimate_single", None)
        if estimate_single is None:
            raise BackendUnavailableError(
                f"test case {cfg.path} has no depth.png/depth.npy and no single-image depth source was given; "
                "set update.depth to auto, mono or mapanything (with update.depth_checkpoint)"
            )
        depth = np.asarray(estimate_single(case.image, case.intrinsics), dtype=np.float32)
        if depth.shape != case.image.shape[:2]:
            raise InputError(f"depth source returned {depth.shape} for a {case.image.shape[:2]} image")
    tf = upright_transform(case.poses[0])
    frame = RGBDFrame(case.image, depth, tf @ case.poses[0], case.intrinsics, "img")
    memory.clear()
    _fuse(memory, [frame], masks=[case.mask] if case.mask is not None else None)
    return WorldInit(source, frame.pose, frames=[frame], map_from_source=tf, prompts=list(case.prompts),
                     camera=case.intrinsics)


__all__ = ["SOURCES", "RGBDFrame", "WorldInit", "load_world", "read_rgbd_folder", "resolve_source", "upright_transform",
           "world_has_depth"]
