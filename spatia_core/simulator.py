"""WorldSimulator: the frame-by-frame simulator behind the ROS node (ROS-free, thread-safe).

It owns a :class:`SpatiaWorld`, a :class:`KinematicBase` carrying the camera and the sim
clock. Each :meth:`step` produces one frame: the camera moves (a pending placement, or the
latest velocity command integrated over one period), the world generates the view, and sim
time advances by exactly one period, so a slow generator never makes time lie (lockstep).
Every ``sim.bank_every``-th frame is fused into the memory and the frame bank.

Map files are confined to ``sim.map_dir``: names with folders, ``..`` or other suffixes than
``.ply`` are refused, and so are symlinks in it that lead outside it.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .config import SpatiaConfig, WorldConfig
from .errors import InputError
from .geometry import validate_pose
from .paths import open_inside, resolve_inside
from .memory import MemoryEditor, load_ply, save_ply
from .memory import entities as entity_ops
from .robot import CameraMount, KinematicBase
from .world import SpatiaWorld


@contextmanager
def _opened_or_refused(path: Path, root: Path, name: str):
    with open_inside(path, [root]) as pinned:
        if pinned is None:  # swapped for a symlink (or a FIFO) after the check: the same refusal
            raise InputError(f"map name {name!r} must be a plain file name inside the map directory")
        yield pinned


@dataclass
class SimFrame:
    """One produced frame with the state it was produced in."""

    index: int
    stamp_ns: int  # sim time of the frame
    camera_pose: np.ndarray  # float64 (4, 4) map <- optical frame
    base_pose: np.ndarray  # float64 (4, 4) odom <- base_link
    twist: np.ndarray  # (vx, vy, wz) applied, base frame
    rgb: np.ndarray  # uint8 (H, W, 3)
    depth: np.ndarray  # float32 (H, W) metres rendered from memory, 0 = unknown
    scene_rgb: np.ndarray  # uint8 (H, W, 3) scene projection
    timings: dict = field(default_factory=dict)


class WorldSimulator:
    """Lockstep world simulator; all public methods may be called from any thread."""

    def __init__(self, config: SpatiaConfig | None = None, world: SpatiaWorld | None = None):
        self.config = config or SpatiaConfig()
        s = self.config.sim
        self.world = world or SpatiaWorld(self.config)
        self.base = KinematicBase(s.base_model, CameraMount(list(s.mount_xyz), list(s.mount_rpy)), s.max_linear, s.max_angular)
        self.period_ns = int(round(1e9 / s.rate_hz))
        self.sim_time_ns = 0
        self.frame_index = 0
        self.lock = threading.RLock()  # held while a frame is produced or the world changes
        self._input_lock = threading.Lock()  # commands only: never waits for a frame
        self._cmd = np.zeros(3)
        self._cmd_time_ns: int | None = None
        self._pending_pose: np.ndarray | None = None
        self.map_dir = Path(s.map_dir).expanduser().resolve()
        self._editor: MemoryEditor | None = None  # edits with undo, bound to the current memory
        self.reset()

    # -- inputs ----------------------------------------------------------------------------
    def command_velocity(self, vx: float, vy: float, wz: float) -> np.ndarray:
        """Set the body twist used by the next frames; :class:`InputError` if invalid."""
        twist = self.base.check_twist(vx, vy, wz)
        with self._input_lock:
            self._cmd, self._cmd_time_ns = twist, self.sim_time_ns
        return twist

    def place_camera(self, camera_pose) -> None:
        """Put the camera (optical frame, map) at ``camera_pose`` for the next frame."""
        pose = validate_pose(camera_pose, "camera pose")
        with self._input_lock:
            self._pending_pose = pose

    @property
    def has_pending_pose(self) -> bool:
        return self._pending_pose is not None

    # -- stepping --------------------------------------------------------------------------
    def _advance(self) -> np.ndarray:
        with self._input_lock:
            pending, self._pending_pose = self._pending_pose, None
            cmd, cmd_time = self._cmd, self._cmd_time_ns
        if pending is not None:
            self.base.set_camera_pose(pending)
            return np.zeros(3)
        timeout = self.config.sim.cmd_timeout
        expired = cmd_time is None or (timeout > 0 and self.sim_time_ns - cmd_time >= timeout * 1e9)
        twist = np.zeros(3) if expired else cmd
        self.base.step(twist, self.period_ns * 1e-9)
        return twist

    def step(self, camera_pose=None, publish: Callable[[SimFrame], None] | None = None) -> SimFrame:
        """Produce one frame (at ``camera_pose`` if given) and advance sim time by one period.

        ``publish(frame)``, if given, is called as soon as the frame exists, before the memory
        is updated from it (every ``sim.bank_every``-th frame), so that update never delays it.
        """
        with self.lock:
            if camera_pose is not None:
                self.place_camera(camera_pose)
            twist = self._advance()
            cam = self.base.camera_pose()
            remember = self.frame_index % self.config.sim.bank_every == 0
            made: list[SimFrame] = []

            def generated(clip) -> None:
                self.sim_time_ns += self.period_ns
                made.append(SimFrame(self.frame_index, self.sim_time_ns, cam, self.base.pose.copy(), twist,
                                     clip.frames[0], clip.scene_depth[0],  # the render's depth: 0 where nothing is visible
                                     clip.scene_rgb[0], clip.timings))
                self.frame_index += 1
                if publish is not None:
                    publish(made[0])

            self.world.step_clip(cam[None], remember=remember, on_generated=generated)
            return made[0]

    # -- world management ------------------------------------------------------------------
    def reset(self, world: WorldConfig | None = None, camera_pose=None) -> None:
        """Load a world and put the camera at ``camera_pose`` (default: the world's start).

        Sim time keeps running (it never goes backwards); nothing changes if loading fails.
        """
        pose = validate_pose(camera_pose, "initial pose") if camera_pose is not None else None
        with self.lock:
            init = self.world.reset(world)
            self.base.set_camera_pose(pose if pose is not None else init.start_pose)
            with self._input_lock:
                self._cmd, self._cmd_time_ns, self._pending_pose = np.zeros(3), None, None

    def map_path(self, name: str) -> Path:
        """``map_dir / name`` after checking it stays inside ``map_dir`` and ends in ``.ply``."""
        if not name or Path(name).name != name or name in (".", ".."):
            raise InputError(f"map name {name!r} must be a plain file name inside the map directory")
        if not name.endswith(".ply"):
            raise InputError(f"map name {name!r} must end in .ply")
        # symlinks are followed, then the target must still be a .ply inside map_dir; the same
        # error whether or not the outside target exists, and nothing outside is opened
        target = resolve_inside(name, [self.map_dir], base=self.map_dir)
        if target is None or target == self.map_dir.resolve() or target.suffix != ".ply":
            raise InputError(f"map name {name!r} must be a plain file name inside the map directory")
        return target

    def save_map(self, name: str) -> Path:
        path = self.map_path(name)
        self.map_dir.mkdir(parents=True, exist_ok=True)
        with self.lock:
            return save_ply(self.world.memory, path)

    def load_map(self, name: str) -> Path:
        path = self.map_path(name)
        with self.opened_map(name, path) as pinned, self.lock:
            load_ply(pinned, self.world.memory)
        return path

    def opened_map(self, name: str, path: Path):
        """``path`` (from :meth:`map_path`) opened without a check-then-open race
        (:func:`~spatia_core.paths.open_inside`): a context yielding a path that reads the opened file."""
        return _opened_or_refused(path, self.map_dir, name)

    #: ``edit`` operations: box, mask (a camera view), objects, fused points and undo.
    EDIT_OPERATIONS = ("remove_box", "recolor_box", "add_points", "remove_mask", "recolor_mask", "add_ply", "undo")

    def edit(self, operation: str, lo=None, hi=None, color=None, points=None, colors=None, *, mask=None,
             camera_pose=None, intrinsics=None, depth_range=None, filename=None, object_pose=None, scale=1.0) -> int:
        """Edit the memory (see :mod:`spatia_core.memory.edit`); returns the number of voxels changed.

        ``remove_box`` / ``recolor_box`` (``lo``, ``hi``, ``color``), ``add_points`` (``points``,
        ``colors``), ``remove_mask`` / ``recolor_mask`` (bool (H, W) ``mask`` seen from
        ``camera_pose`` with ``intrinsics``; default the current camera, its intrinsics scaled to the
        mask size; ``depth_range`` ``(near, far)`` or ``None`` for the visible surface only),
        ``add_ply`` (``filename`` in ``map_dir`` at ``object_pose`` 4x4 scaled by ``scale``) and
        ``undo`` (the last edit; the journal is dropped when the world is reset or a map loaded).
        """
        with self.lock:
            mem = self.world.memory
            if self._editor is None or self._editor.memory is not mem:  # a reset makes a new memory
                self._editor = MemoryEditor(mem)
            ed = self._editor
            if operation in ("remove_box", "recolor_box"):
                return ed.remove_box(lo, hi) if operation == "remove_box" else ed.recolor_box(lo, hi, color)
            if operation == "add_points":
                if points is None or len(points) == 0:
                    raise InputError("add_points needs a non-empty point cloud")
                if colors is None:
                    colors = np.full((len(points), 3), 200, np.uint8)
                return ed.add_points(points, colors)
            if operation in ("remove_mask", "recolor_mask"):
                if mask is None:
                    raise InputError(f"{operation} needs a mask")
                mask = np.asarray(mask, dtype=bool)
                if mask.ndim != 2:
                    raise InputError(f"a mask must be (H, W), got shape {mask.shape}")
                pose = self.base.camera_pose() if camera_pose is None else camera_pose
                k = intrinsics or self.world.intrinsics.resized(mask.shape[1], mask.shape[0])
                if operation == "remove_mask":
                    return ed.remove_mask(mask, pose, k, depth_range)
                return ed.recolor_mask(mask, pose, k, color, depth_range)
            if operation == "add_ply":
                with self.opened_map(filename or "", self.map_path(filename or "")) as pinned:
                    return ed.add_ply(pinned, object_pose, scale)
            if operation == "undo":
                return ed.undo().voxels_changed
        raise InputError(f"unknown edit operation {operation!r}")

    # -- entities (see :mod:`spatia_core.memory.entities`) -----------------------------------
    def spawn_entity(self, name: str, *, points=None, colors=None, ply=None, pose=np.eye(4), scale: float = 1.0):
        """Add entity ``name`` to the memory: ``points`` (N, 3) in its frame with ``colors`` (N, 3)
        uint8 or float [0, 1], or the PLY file ``ply`` (a path the caller has confined), at ``pose``
        (4x4 map <- entity) and ``scale``. Returns its :class:`~spatia_core.memory.EntityInfo`;
        :class:`~spatia_core.errors.EntityError` (``.reason``) when refused."""
        with self.lock:
            return entity_ops.spawn_entity(self.world.memory, name, points=points, colors=colors, ply=ply, pose=pose,
                                         scale=scale)

    def delete_entity(self, name: str) -> None:
        """Remove entity ``name`` (what it covered of the static scene comes back)."""
        with self.lock:
            entity_ops.delete_entity(self.world.memory, name)

    def set_entity_pose(self, name: str, pose):
        """Move entity ``name`` to ``pose`` (its voxels are removed and re-inserted, no ghost)."""
        with self.lock:
            return entity_ops.set_entity_pose(self.world.memory, name, pose)

    def entities(self) -> list:
        """Every entity of the memory, by id."""
        with self.lock:
            return entity_ops.entities(self.world.memory)

    def entity(self, name: str):
        """Entity ``name`` now; ``EntityError`` with reason ``unknown`` if there is none."""
        with self.lock:
            return entity_ops.entity(self.world.memory, name)

    def memory_cloud(self, max_points: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The memory's points, every n-th one so at most ``max_points`` remain: (xyz, rgb uint8)."""
        max_points = max_points or self.config.sim.cloud_max_points
        with self.lock:  # copy only the points kept, so frames wait as little as possible
            mem = self.world.memory
            stride = max(1, -(-len(mem) // max_points))
            xyz, rgb = mem.xyz[::stride].clone(), mem.rgb[::stride].clone()
        return xyz.cpu().numpy(), (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
