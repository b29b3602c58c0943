"""Training clips: target, history and reference frames plus the clip's scene projection.

Every source yields :class:`TrainingClip` objects built the same way (:func:`build_clip`): the
clip's frames come with metric depth and camera-to-world poses; a fresh
:class:`~spatia_core.memory.SpatialMemory` is filled from *that clip's own geometry* (history and
reference frames always, each target frame with probability ``1 - drop_frame_prob``, every fused
frame optionally with a random rectangular hole and without its dynamic pixels), and rendered
into the history and target poses. The projection therefore shows what a memory built from
earlier views would show at inference: mostly the right content, with holes where nothing was
observed.

Sources:

* :class:`ProceduralClips`: the built-in procedural rooms (:func:`~spatia_core.worlds.procedural.make_room`)
  rendered along random camera paths; unlimited, deterministic per index.
* :class:`RGBDFolderClips`: a posed RGB-D folder (:func:`~spatia_core.worlds.rgbd_folder.read_rgbd_folder`),
  cut into windows of consecutive frames.
* :class:`Re10kClips`: RealEstate10K-style clip folders: images in ``frames/`` (or ``images/``,
  ``rgb/``, ``color/``), a camera file in the RE10K text format (``cameras.txt``, or the one
  ``.txt`` file with 19 numbers per line, as in ``../shared/data/re10k_trajectories``), depth in
  ``depth/`` when present (else from a depth source passed in), optional ``masks/`` (non-zero =
  dynamic) and ``prompt.txt``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import cv2
import numpy as np

from ..cameras import read_mask
from ..errors import FileFormatError, InputError
from ..geometry import Intrinsics, look_at, validate_poses

log = logging.getLogger(__name__)

#: A depth callable: ``fn(frames uint8 (T, H, W, 3), poses float64 (T, 4, 4), intrinsics) -> float32
#: (T, H, W)`` metres (0 = unknown). Objects with the ``DepthSource.estimate`` method also work.
DepthFn = Callable[[np.ndarray, np.ndarray, Intrinsics], np.ndarray]

_IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


@dataclass(frozen=True)
class ClipSpec:
    """Shape of a training clip and how its scene projection is degraded."""

    num_history: int = 9
    """Preceding frames (paper: 9, i.e. 3 latent frames)."""
    num_target: int = 72
    """Frames to generate; history + target = 81 = ``4k + 1``, the release's later rounds."""
    num_references: int = 7
    """Reference frames (K; each is encoded alone)."""
    width: int = 1248
    """Frame width in pixels (a multiple of 16)."""
    height: int = 704
    """Frame height in pixels (a multiple of 16)."""
    voxel_size: float = 0.01
    """Voxel size of the clip's memory (metres; RE10K units for RE10K clips)."""
    drop_frame_prob: float = 0.3
    """Chance that a target frame's depth is left out of the clip's memory."""
    hole_prob: float = 0.5
    """Chance that a fused frame loses a random rectangle (so projections have holes)."""
    hole_max_frac: float = 0.5
    """Largest hole side as a fraction of the image side."""
    max_depth: float = 10.0
    """Depth beyond this is not fused (metres)."""

    def __post_init__(self):
        if self.num_history < 0 or self.num_target < 1 or self.num_references < 0:
            raise InputError("clip needs num_target >= 1 and non-negative num_history / num_references")
        if self.width < 8 or self.height < 8:
            raise InputError(f"clip size {self.width}x{self.height} is too small")
        if not self.voxel_size > 0:
            raise InputError(f"voxel_size must be positive, got {self.voxel_size}")
        for name in ("drop_frame_prob", "hole_prob", "hole_max_frac"):
            if not 0 <= getattr(self, name) <= 1:
                raise InputError(f"{name} must be in [0, 1], got {getattr(self, name)}")

    @property
    def window(self) -> int:
        """Consecutive frames a clip spans (history + target)."""
        return self.num_history + self.num_target


@dataclass
class TrainingClip:
    """One training sample in pixel space.

    Attributes:
        target: uint8 (T, H, W, 3) frames to generate.
        history: uint8 (Th, H, W, 3) preceding frames.
        references: uint8 (K, H, W, 3) reference frames of the same scene.
        projection: uint8 (Th + T, H, W, 3) scene projection at the history then target poses.
        visibility: bool (Th + T, H, W) where the projection shows a memory point.
        poses: float64 (Th + T, 4, 4) camera-to-world poses of history then target frames.
        reference_poses: float64 (K, 4, 4).
        intrinsics: the camera.
        prompt: the text prompt ('' for none).
        name: where the clip came from.
    """

    target: np.ndarray
    history: np.ndarray
    references: np.ndarray
    projection: np.ndarray
    visibility: np.ndarray
    poses: np.ndarray
    reference_poses: np.ndarray
    intrinsics: Intrinsics
    prompt: str = ""
    name: str = ""


# --------------------------------------------------------------------------------------------
# Building a clip from posed RGB-D frames
# --------------------------------------------------------------------------------------------


def _random_hole(shape: tuple[int, int], rng: np.random.Generator, max_frac: float) -> np.ndarray:
    h, w = shape
    hh = int(rng.integers(1, max(2, int(h * max_frac) + 1)))
    ww = int(rng.integers(1, max(2, int(w * max_frac) + 1)))
    y, x = int(rng.integers(0, h - hh + 1)), int(rng.integers(0, w - ww + 1))
    hole = np.zeros(shape, bool)
    hole[y : y + hh, x : x + ww] = True
    return hole


def build_clip(
    rgb: np.ndarray,
    depth: np.ndarray,
    poses: np.ndarray,
    intrinsics: Intrinsics,
    history: Sequence[int],
    target: Sequence[int],
    references: Sequence[int],
    spec: ClipSpec,
    rng: np.random.Generator,
    dynamic_masks: np.ndarray | None = None,
    prompt: str = "",
    name: str = "",
) -> TrainingClip:
    """Assemble a :class:`TrainingClip` from posed RGB-D frames of one scene.

    Args:
        rgb: uint8 (N, H, W, 3) frames; depth: float32 (N, H, W) metres (0 = unknown);
            poses: (N, 4, 4) camera-to-world; intrinsics: the camera of all frames.
        history, target, references: frame indices of each role.
        spec: clip settings (hole and drop probabilities, voxel size).
        rng: random generator for the memory degradation.
        dynamic_masks: optional bool (N, H, W), True on dynamic pixels (never fused).
        prompt, name: carried into the clip.

    Returns:
        The clip; its projection comes from a fresh memory built from these frames.
    """
    from ..memory import SpatialMemory
    from ..render import render_memory

    rgb, depth = np.asarray(rgb), np.asarray(depth, dtype=np.float32)
    poses = validate_poses(poses)
    n = rgb.shape[0]
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"rgb must be uint8 (N, H, W, 3), got {rgb.dtype} {rgb.shape}")
    if depth.shape != rgb.shape[:3] or len(poses) != n:
        raise InputError(f"rgb {rgb.shape}, depth {depth.shape} and {len(poses)} poses do not match")
    if dynamic_masks is not None and np.asarray(dynamic_masks).shape != depth.shape:
        raise InputError(f"dynamic masks {np.asarray(dynamic_masks).shape} do not match depth {depth.shape}")
    for idx in (*history, *target, *references):
        if not 0 <= idx < n:
            raise InputError(f"frame index {idx} out of range for {n} frames")
    memory = SpatialMemory(voxel_size=spec.voxel_size, max_depth=spec.max_depth, block_size=max(0.5, 20 * spec.voxel_size))
    fused = list(history) + list(references) + [i for i in target if rng.random() >= spec.drop_frame_prob]
    for i in fused:
        exclude = np.zeros(depth.shape[1:], bool) if dynamic_masks is None else np.asarray(dynamic_masks[i], bool).copy()
        if rng.random() < spec.hole_prob:
            exclude |= _random_hole(depth.shape[1:], rng, spec.hole_max_frac)
        memory.insert_frame(rgb[i], depth[i], intrinsics, poses[i], exclude_mask=exclude)
    clip_idx = list(history) + list(target)
    view = render_memory(memory, intrinsics, poses[clip_idx], compile=False).numpy()
    return TrainingClip(
        target=rgb[list(target)].copy(),
        history=rgb[list(history)].copy(),
        references=rgb[list(references)].copy(),
        projection=view["rgb"],
        visibility=view["mask"],
        poses=poses[clip_idx].copy(),
        reference_poses=poses[list(references)].copy(),
        intrinsics=intrinsics,
        prompt=prompt,
        name=name,
    )


def _pick_references(n: int, window: Sequence[int], k: int, rng: np.random.Generator) -> list[int]:
    """``k`` reference frames outside ``window`` (nearest first if too few; history if none)."""
    if k == 0:
        return []
    outside = [i for i in range(n) if i not in set(window)]
    if not outside:
        outside = list(window[:1])
    if len(outside) >= k:
        return sorted(int(i) for i in rng.choice(outside, size=k, replace=False))
    return [outside[j % len(outside)] for j in range(k)]


def _resize(rgb: np.ndarray, depth: np.ndarray | None, k: Intrinsics, width: int, height: int):
    """Resize a frame (area for colour, nearest for depth) and its intrinsics."""
    if (rgb.shape[1], rgb.shape[0]) == (width, height):
        return rgb, depth, k.resized(width, height)
    rgb = cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    if depth is not None:
        depth = cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST)
    return rgb, depth, k.resized(width, height)


# --------------------------------------------------------------------------------------------
# Procedural rooms
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _room(seed: int, spacing: float):
    """The procedural room ``seed`` as a memory (voxel = ``spacing``), for fast culled rendering."""
    from ..memory import SpatialMemory
    from ..worlds.procedural import make_room

    scene = make_room(seed, spacing=spacing)
    memory = SpatialMemory(voxel_size=spacing, block_size=0.5)
    memory.insert_points(scene.points, scene.colors)
    return scene, memory


def _random_path(scene, rng: np.random.Generator, n: int) -> np.ndarray:
    """A random camera path of ``n`` poses inside the room's free camera zone."""
    from ..trajectories import make_trajectory

    eye = np.array([rng.uniform(-2.3, -0.6), rng.uniform(-0.9, 0.9), rng.uniform(1.0, 1.5)])
    aim = scene.center - eye
    yaw = np.arctan2(aim[1], aim[0]) + rng.uniform(-0.8, 0.8)
    pitch = rng.uniform(-0.25, 0.15)
    direction = np.array([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)])
    start = look_at(eye, eye + direction)
    kind = ("orbit", "forward_back", "look_around", "loop")[int(rng.integers(4))]
    kwargs = {
        "orbit": lambda: {"radius": rng.uniform(0.2, 0.5), "look_distance": rng.uniform(1.0, 2.5),
                          "side": ("left", "right")[int(rng.integers(2))]},
        "forward_back": lambda: {"distance": rng.uniform(0.3, 0.8) * (1 if rng.random() < 0.7 else -1)},
        "look_around": lambda: {"yaw_deg": rng.uniform(20, 70), "pitch_deg": rng.uniform(-10, 10)},
        "loop": lambda: {"radius": rng.uniform(0.2, 0.4), "turn": ("left", "right")[int(rng.integers(2))]},
    }[kind]()
    return make_trajectory(kind, start, n, **kwargs)


class ProceduralClips:
    """Clips of the built-in procedural rooms along random camera paths (deterministic per index).

    Clip ``i`` belongs to path ``i // clips_per_path``: a random camera path in room
    ``scene_seeds[path % len(scene_seeds)]``, rendered once (ground-truth RGB and depth) and
    shared by its clips. Each clip takes a random window of ``spec.window`` frames (every
    ``stride``-th) of its path, reference frames elsewhere on the path, and builds its projection
    with :func:`build_clip` (its own random memory degradation).

    Args:
        num_clips: dataset length.
        spec: clip shape.
        seed: base seed.
        scene_seeds: room seeds to cycle through (default: one new room per path).
        spacing: sampling pitch of the ground-truth room (metres; coarse is fine at small sizes).
        fov_deg: horizontal field of view.
        path_frames: frames of each random path.
        stride: frame step inside a clip.
        clips_per_path: clips cut from one rendered path.
        prompt: text prompt of every clip.
    """

    def __init__(
        self,
        num_clips: int,
        spec: ClipSpec,
        seed: int = 0,
        scene_seeds: Sequence[int] | None = None,
        spacing: float = 0.03,
        fov_deg: float = 70.0,
        path_frames: int = 32,
        stride: int = 2,
        clips_per_path: int = 4,
        prompt: str = "a cozy indoor room with a table and a sofa",
    ):
        if num_clips < 1 or clips_per_path < 1:
            raise InputError(f"num_clips and clips_per_path must be >= 1, got {num_clips}, {clips_per_path}")
        self.num_clips, self.spec, self.seed = int(num_clips), spec, int(seed)
        self.clips_per_path = int(clips_per_path)
        n_paths = -(-self.num_clips // self.clips_per_path)
        self.scene_seeds = list(scene_seeds) if scene_seeds is not None else [self.seed * 1000 + p for p in range(n_paths)]
        if not self.scene_seeds:
            raise InputError("scene_seeds must not be empty")
        self.spacing, self.fov_deg, self.prompt = float(spacing), float(fov_deg), prompt
        self.stride = max(1, int(stride))
        self.path_frames = max(int(path_frames), (spec.window - 1) * self.stride + 1 + spec.num_references)
        self.intrinsics = Intrinsics.from_fov(self.fov_deg, spec.width, spec.height)
        self._paths: dict[int, tuple] = {}

    def __len__(self) -> int:
        return self.num_clips

    def _path(self, p: int):
        """(room seed, poses (N, 4, 4), rgb (N, H, W, 3), depth (N, H, W)) of path ``p`` (cached)."""
        if p not in self._paths:
            from ..render import render_memory

            scene_seed = int(self.scene_seeds[p % len(self.scene_seeds)])
            scene, memory = _room(scene_seed, self.spacing)
            poses = _random_path(scene, np.random.default_rng([self.seed, p, 0x9A7]), self.path_frames)
            view = render_memory(memory, self.intrinsics, poses, compile=False).numpy()
            if len(self._paths) >= 16:
                self._paths.pop(next(iter(self._paths)))
            self._paths[p] = (scene_seed, poses, view["rgb"], view["depth"])
        return self._paths[p]

    def __getitem__(self, i: int) -> TrainingClip:
        if not 0 <= i < self.num_clips:
            raise IndexError(i)
        scene_seed, poses, rgb, depth = self._path(i // self.clips_per_path)
        rng = np.random.default_rng([self.seed, int(i), 0x7A1])
        spec = self.spec
        span = (spec.window - 1) * self.stride + 1
        start = int(rng.integers(0, self.path_frames - span + 1))
        window = list(range(start, start + span, self.stride))
        refs = _pick_references(self.path_frames, list(range(start, start + span)), spec.num_references, rng)
        return build_clip(
            rgb, depth, poses, self.intrinsics,
            history=window[: spec.num_history], target=window[spec.num_history :], references=refs,
            spec=spec, rng=rng, prompt=self.prompt, name=f"procedural room {scene_seed} clip {i}",
        )


# --------------------------------------------------------------------------------------------
# Posed frame folders
# --------------------------------------------------------------------------------------------


@dataclass
class _Sequence:
    """Resized frames of one posed sequence."""

    rgb: np.ndarray
    depth: np.ndarray
    poses: np.ndarray
    intrinsics: Intrinsics
    masks: np.ndarray | None
    prompt: str
    name: str


class _WindowedClips:
    """Clips as windows of consecutive frames over one or more sequences."""

    def __init__(self, sequences: list[_Sequence], spec: ClipSpec, stride: int, seed: int):
        self.sequences, self.spec, self.seed = sequences, spec, int(seed)
        self.stride = max(1, int(stride))
        span = (spec.window - 1) * self.stride + 1
        self._index = [(s, start) for s, seq in enumerate(sequences) for start in range(0, len(seq.rgb) - span + 1)]
        if not self._index:
            longest = max((len(s.rgb) for s in sequences), default=0)
            raise InputError(f"no sequence is long enough for a clip of {span} frames (longest: {longest})")

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> TrainingClip:
        if not 0 <= i < len(self._index):
            raise IndexError(i)
        s, start = self._index[i]
        seq, spec = self.sequences[s], self.spec
        rng = np.random.default_rng([self.seed, int(i), 0x5E9])
        span = (spec.window - 1) * self.stride + 1
        window = list(range(start, start + span, self.stride))
        refs = _pick_references(len(seq.rgb), list(range(start, start + span)), spec.num_references, rng)
        return build_clip(
            seq.rgb, seq.depth, seq.poses, seq.intrinsics,
            history=window[: spec.num_history], target=window[spec.num_history :], references=refs,
            spec=spec, rng=rng, dynamic_masks=seq.masks, prompt=seq.prompt, name=f"{seq.name} frames {start}..",
        )


def _read_masks(folder: Path, n: int, width: int, height: int) -> np.ndarray | None:
    """Dynamic masks from ``folder/masks`` (or ``dynamic``): non-zero pixels are dynamic."""
    mdir = next((folder / d for d in ("masks", "dynamic", "dynamic_masks") if (folder / d).is_dir()), None)
    if mdir is None:
        return None
    files = sorted((p for p in mdir.iterdir() if p.suffix.lower() in _IMAGE_EXT | {".npy"}), key=_natural_key)
    if len(files) != n:
        raise FileFormatError(f"{mdir}: {len(files)} masks for {n} frames")
    out = []
    for p in files:
        m = read_mask(p)
        out.append(cv2.resize(m.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST) > 0)
    return np.stack(out)


def _natural_key(path: Path):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _prompt(folder: Path, default: str) -> str:
    p = folder / "prompt.txt"
    return p.read_text(encoding="utf-8").strip().splitlines()[0] if p.is_file() and p.read_text().strip() else default


class RGBDFolderClips(_WindowedClips):
    """Clips from posed RGB-D folders (layout of :func:`~spatia_core.worlds.rgbd_folder.read_rgbd_folder`).

    Optional ``masks/`` beside ``color/`` (one image per frame, non-zero = dynamic) and
    ``prompt.txt``.

    Args:
        folders: one folder or a list of folders.
        spec: clip shape (frames are resized to ``spec.width`` x ``spec.height``).
        intrinsics: ``[fx, fy, cx, cy]`` in pixels if the folders lack an intrinsics file.
        depth_scale: raw 16-bit depth units per metre.
        stride: frame step inside a clip.
        prompt: default prompt.
        seed: seed of the memory degradation.
    """

    def __init__(self, folders, spec: ClipSpec, intrinsics: list | None = None, depth_scale: float = 1000.0,
                 stride: int = 1, prompt: str = "", seed: int = 0):
        from ..worlds.rgbd_folder import read_rgbd_folder

        folders = [folders] if isinstance(folders, (str, Path)) else list(folders)
        sequences = []
        for folder in map(Path, folders):
            frames = read_rgbd_folder(folder, intrinsics=intrinsics, depth_scale=depth_scale)
            rgbs, depths = [], []
            k = frames[0].intrinsics
            for f in frames:
                rgb, depth, k = _resize(f.rgb, f.depth, f.intrinsics, spec.width, spec.height)
                rgbs.append(rgb)
                depths.append(depth)
            sequences.append(_Sequence(
                rgb=np.stack(rgbs), depth=np.stack(depths).astype(np.float32), poses=np.stack([f.pose for f in frames]),
                intrinsics=k, masks=_read_masks(folder, len(frames), spec.width, spec.height),
                prompt=_prompt(folder, prompt), name=folder.name,
            ))
        super().__init__(sequences, spec, stride, seed)


def _estimate_depth(depth_source, frames: np.ndarray, poses: np.ndarray, k: Intrinsics) -> np.ndarray:
    """Call a depth callable or a :class:`~spatia_core.geometry_update.DepthSource`."""
    if hasattr(depth_source, "estimate"):
        t, h, w = frames.shape[:3]
        empty = {"rgb": np.zeros_like(frames), "depth": np.zeros((t, h, w), np.float32), "mask": np.zeros((t, h, w), bool)}
        depth = depth_source.estimate(frames, empty, poses, k)
    else:
        depth = depth_source(frames, poses, k)
    depth = np.asarray(depth, dtype=np.float32)
    if depth.shape != frames.shape[:3]:
        raise InputError(f"depth source returned shape {depth.shape}, expected {frames.shape[:3]}")
    return np.where(np.isfinite(depth) & (depth > 0), depth, 0.0).astype(np.float32)


def find_re10k_camera_file(folder: Path) -> Path:
    """The RE10K camera file of a clip folder: ``cameras.txt`` or the one ``.txt`` in RE10K format
    (:func:`spatia_core.captures.re10k.camera_file`)."""
    from ..captures.re10k import camera_file

    found = camera_file(Path(folder)) if Path(folder).is_dir() else None
    if found is None:
        raise FileFormatError(f"{folder}: expected one RE10K camera file (cameras.txt or one .txt in the RE10K format)")
    return found


class Re10kClips(_WindowedClips):
    """Clips from RealEstate10K-style folders (frames + an RE10K camera file; see module docstring).

    The frames and their cameras come from :func:`spatia_core.captures.re10k.read_re10k_clip`:
    images are matched to camera lines by timestamp when their names are the timestamps (as RE10K
    extractions name them), otherwise by sorted order; every frame needs a camera line and every
    camera line a frame. Frames are in camera-file order; ``depth/`` and ``masks/`` files are
    matched to the frames by sorted order.

    Args:
        folders: clip folders, or one root folder whose sub-folders are clip folders.
        spec: clip shape (``voxel_size`` is in the camera file's units).
        depth_source: used when a folder has no ``depth/``: a :data:`DepthFn` or a ``DepthSource``.
        depth_scale: raw 16-bit depth units per metre for ``depth/`` PNGs.
        stride, prompt, seed: as for :class:`RGBDFolderClips`.
    """

    def __init__(self, folders, spec: ClipSpec, depth_source=None, depth_scale: float = 1000.0,
                 stride: int = 1, prompt: str = "", seed: int = 0):
        from ..captures.re10k import frame_dir

        folders = [Path(folders)] if isinstance(folders, (str, Path)) else [Path(f) for f in folders]
        if len(folders) == 1 and folders[0].is_dir() and frame_dir(folders[0]) is None:
            folders = sorted(p for p in folders[0].iterdir() if p.is_dir() and frame_dir(p) is not None)
            if not folders:
                raise FileFormatError("no RE10K clip folders (with frames/ and a camera file) found")
        self.depth_source = depth_source
        sequences = [self._read(f, spec, depth_scale, prompt) for f in folders]
        super().__init__(sequences, spec, stride, seed)

    def _read(self, folder: Path, spec: ClipSpec, depth_scale: float, prompt: str) -> _Sequence:
        from ..captures.re10k import frame_dir, read_re10k_clip
        from ..worlds.rgbd_folder import read_depth, read_rgb

        if not folder.is_dir():
            raise FileFormatError(f"no such folder: {folder}")
        images = read_re10k_clip(folder).images
        # depth/ and masks/ follow the frames' sorted order; the clip is in camera-file order
        files = sorted((p for p in frame_dir(folder).iterdir() if p.suffix.lower() in _IMAGE_EXT), key=_natural_key)
        at = {p: j for j, p in enumerate(files)}
        order = [at[im.path] for im in images]
        poses = np.stack([im.pose for im in images])
        rgbs = [read_rgb(im.path) for im in images]
        h0, w0 = rgbs[0].shape[:2]
        k0 = images[0].intrinsics
        depth_dir = folder / "depth"
        if depth_dir.is_dir():
            dfiles = sorted((p for p in depth_dir.iterdir() if p.suffix.lower() in _IMAGE_EXT | {".npy", ".pgm"}), key=_natural_key)
            if len(dfiles) != len(images):
                raise FileFormatError(f"{depth_dir}: {len(dfiles)} depth maps for {len(images)} frames")
            depths = [read_depth(dfiles[j], depth_scale) for j in order]
        else:
            if self.depth_source is None:
                raise InputError(f"{folder} has no depth/ folder: pass a depth source (e.g. the multiview one)")
            depths = list(_estimate_depth(self.depth_source, np.stack(rgbs), poses, k0))
        out_rgb, out_depth = [], []
        k = k0
        for rgb, depth in zip(rgbs, depths):
            if rgb.shape[:2] != (h0, w0) or depth.shape != (h0, w0):
                raise FileFormatError(f"{folder}: frames and depth maps must all be {w0}x{h0}")
            rgb, depth, k = _resize(rgb, depth.astype(np.float32), k0, spec.width, spec.height)
            out_rgb.append(rgb)
            out_depth.append(depth)
        masks = _read_masks(folder, len(images), spec.width, spec.height)
        return _Sequence(
            rgb=np.stack(out_rgb), depth=np.stack(out_depth), poses=poses, intrinsics=k,
            masks=None if masks is None else masks[order], prompt=_prompt(folder, prompt), name=folder.name,
        )


class ConcatClips:
    """Several clip datasets as one."""

    def __init__(self, datasets: Sequence):
        self.datasets = [d for d in datasets if len(d)]
        if not self.datasets:
            raise InputError("no training clips")
        self._offsets = np.cumsum([0] + [len(d) for d in self.datasets])

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, i: int) -> TrainingClip:
        if not 0 <= i < len(self):
            raise IndexError(i)
        d = int(np.searchsorted(self._offsets, i, side="right") - 1)
        return self.datasets[d][i - int(self._offsets[d])]


def without_projection(clip: TrainingClip) -> TrainingClip:
    """The clip with an empty scene projection (black, nothing visible): the no-control ablation."""
    return replace(clip, projection=np.zeros_like(clip.projection), visibility=np.zeros_like(clip.visibility))


__all__ = [
    "ClipSpec", "ConcatClips", "DepthFn", "ProceduralClips", "RGBDFolderClips", "Re10kClips", "TrainingClip",
    "build_clip", "find_re10k_camera_file", "without_projection",
]

