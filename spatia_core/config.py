"""One configuration schema for the CLI, the ROS node and the Python API.

Nested dataclasses; every field has a one-line comment. Load from YAML / dicts with strict
keys (a typo is an error, not a silent default), override with ``section.key=value`` strings,
and flatten to ``section.key`` names for ROS parameters.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import FileFormatError, InputError


@dataclass
class WorldConfig:
    source: str = "builtin"  # builtin | rgbd_folder | ply | image_depth | testcase | capture (posed photos) | auto (from path)
    path: str = ""  # folder or file of the world (not used by builtin)
    depth_path: str = ""  # depth map for an image_depth world (.png mm, .npy metres)
    seed: int = 0  # seed of the built-in procedural scene
    intrinsics: list = field(default_factory=list)  # [fx, fy, cx, cy] px of the source images, if the files lack them
    depth_scale: float = 1000.0  # integer depth units per metre (16-bit PNG/PGM)
    frames: list = field(default_factory=list)  # indices of the folder frames to fuse; empty = all
    capture_size: int = 640  # posed-photo captures (COLMAP, transforms.json, LLFF, Strecha): long side the photos are used at, px


@dataclass
class CameraConfig:
    """The output camera. Left at 0 / empty, it is the world's camera (a test case's, an RGB-D
    folder's, an image's given intrinsics), else 640x480 at 70 degrees; set width/height alone to
    rescale the world's camera."""

    width: int = 0  # output image width, px; 0 = the world's (else 640)
    height: int = 0  # output image height, px; 0 = the world's (else 480)
    fov_deg: float = 0.0  # horizontal field of view when intrinsics is empty; 0 = the world's camera (else 70)
    intrinsics: list = field(default_factory=list)  # [fx, fy, cx, cy] px at width x height; overrides fov_deg, the world's


@dataclass
class MemoryConfig:
    voxel_size: float = 0.01  # voxel edge, metres (paper default)
    max_voxels: int = 5_000_000  # size bound; least recently observed voxels are evicted beyond it
    max_weight: int = 16  # cap on the running-mean weight of a voxel
    min_depth: float = 0.05  # depth readings outside [min_depth, max_depth] are not fused, metres
    max_depth: float = 10.0
    block_size: float = 0.5  # edge of the coarse blocks used for frustum culling, metres


@dataclass
class RenderConfig:
    splat_scale: float = 1.25  # splat footprint relative to a voxel's projected size
    max_radius: int = 8  # largest splat is a square of 2 * max_radius + 1 pixels
    near: float = 0.05  # near clipping distance, metres
    compile: bool = True  # fuse the torch kernel's per-point projection with torch.compile (falls back to eager)
    kernel: str = "auto"  # auto (numba on CPU when installed, else torch) | numba | torch


@dataclass
class RetrievalConfig:
    k: int = 7  # maximum number of reference frames (K)
    epsilon: float = 0.1  # minimum 3D IoU for a reference
    voxel_size: float = 0.1  # voxel edge for the view voxel sets, metres
    max_frames: int = 5000  # frame bank size bound (oldest dropped first, the first frame kept)
    method: str = "auto"  # release (z-buffered shared points, Hungarian, as the release) | iou (Algorithm 1) | auto (release for the spatia backend's release layout, else iou)
    history_stride: int = 4  # release method: every n-th past frame is a candidate (24 fps / 6 fps)
    target_stride: int = 12  # release method: every n-th pose of the round is a target view (24 fps / 2 fps)


@dataclass
class GeneratorConfig:
    backend: str = "projection"  # projection (no weights) | spatia (diffusion)
    layout: str = "release"  # spatia backend: release (rounds of 121, then 81 frames holding the last 9, as inference.py) | stream (clip_frames per clip, for the real-time loop)
    clip_frames: int = 16  # frames generated per clip (stream layout, projection backend)
    history_frames: int = 9  # preceding frames that condition a clip (release: 9, must be 1 + 4k)
    prompt: str = ""  # text prompt
    seed: int = 20917  # random seed of stochastic backends (the release's; release layout: the same every round)
    checkpoint: str = ""  # weights directory of the diffusion backend
    steps: int = 40  # diffusion sampling steps (official default)
    guidance_scale: float = 3.5  # classifier-free guidance scale (1 disables the unconditional pass)
    shift: float = 5.0  # flow-matching sigma shift of the sampler
    control_scale: float = 1.0  # scale of the scene-projection control hints
    negative_prompt: str = "release"  # text the unconditional branch is pushed away from ("release": the release's, "": none)
    prompt_suffix: str = "release"  # appended to every prompt ("release": " 4K, realistic, high quality, HDR.", "": none)
    dtype: str = "auto"  # auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16
    offload: str = "none"  # none | model (one sub-model on the GPU at a time) | sequential (layer by layer)


@dataclass
class UpdateConfig:
    depth: str = "auto"  # depth of new content: auto (mono if the world lacks depth) | rendered | multiview | mono | mapanything
    depth_checkpoint: str = "depth-anything/Depth-Anything-V2-Small-hf"  # mono: Hugging Face id or folder; mapanything: folder
    pose_refine: str = "none"  # none | rgbd_odometry | icp: align generated frames to the memory before fusing
    max_correction_m: float = 0.10  # pose corrections beyond these bounds are refused (frame fused unrefined)
    max_correction_deg: float = 5.0
    dynamics: str = "none"  # dynamic-entity masks: none | residual (weight-free) | sam2
    sam2_checkpoint: str = ""  # SAM2 weights (.pt); sam2 needs them
    sam2_config: str = "configs/sam2.1/sam2.1_hiera_t.yaml"  # SAM2 model config (packaged name)
    dynamic_mask: str = ""  # mask image of dynamic entities in the first frame (official mask.png)
    residual_color: float = 30.0  # residual dynamics: mean |RGB| difference (0-255) that counts as disagreement
    residual_depth: float = 0.05  # residual dynamics: relative depth difference that counts as disagreement
    residual_depth_abs: float = 0.03  # residual dynamics: absolute depth tolerance added to it, metres
    residual_window: int = 2  # residual dynamics: frames on each side checked for multi-frame consistency
    residual_dilate: int = 2  # residual dynamics: pixels the dynamic mask is grown by


@dataclass
class SimConfig:
    rate_hz: float = 30.0  # frames per second (the sim-time step is 1 / rate_hz)
    publish_clock: bool = True  # own the time: sim time advances only when a frame is produced (lockstep)
    start_paused: bool = False  # start paused: frames only through the step service / action
    render_on_pose: bool = True  # produce a frame as soon as a camera_pose arrives (lowest latency)
    base_model: str = "unicycle"  # unicycle | holonomic kinematic base carrying the camera
    max_linear: float = 2.0  # velocity commands beyond these limits are refused, m/s
    max_angular: float = 3.0  # rad/s
    cmd_timeout: float = 0.5  # a velocity command expires after this much sim time, s (0: never)
    max_input_rate_hz: float = 200.0  # commands arriving faster than this are dropped
    cmd_vel_stamped: bool = False  # cmd_vel is geometry_msgs/TwistStamped instead of Twist
    mount_xyz: list = field(default_factory=lambda: [0.0, 0.0, 1.2])  # base_link -> camera_link translation, m
    mount_rpy: list = field(default_factory=lambda: [0.0, 0.0, 0.0])  # base_link -> camera_link roll pitch yaw, rad
    map_frame: str = "map"
    odom_frame: str = "odom"
    base_frame: str = "base_link"
    camera_frame: str = "camera_link"
    optical_frame: str = "camera_optical_frame"
    reliable_images: bool = True  # publish camera images reliably (best effort drops most 640x480 frames between processes)
    cloud_rate_hz: float = 1.0  # spatial_memory PointCloud2 publish rate (only when the memory changed)
    cloud_max_points: int = 200_000  # the published cloud is downsampled to at most this many points
    bank_every: int = 10  # add every n-th frame to the retrieval frame bank
    map_dir: str = "maps"  # save/load map paths are confined to this folder


@dataclass
class SpatiaConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    update: UpdateConfig = field(default_factory=UpdateConfig)
    sim: SimConfig = field(default_factory=SimConfig)
    device: str = "cpu"  # torch device: cpu, cuda, cuda:1, ...

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict | None) -> "SpatiaConfig":
        """Build from a nested dict; unknown keys raise :class:`InputError`."""
        cfg = _build(cls, data or {}, "")
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SpatiaConfig":
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise FileFormatError(f"cannot read config {path}: {_one_line(exc)}") from None
        if not isinstance(data, dict):
            raise FileFormatError(f"config {path} must hold a mapping")
        return cls.from_dict(unwrap_ros_params(data))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides: dict[str, Any] | list[str]) -> "SpatiaConfig":
        """A copy with ``{"memory.voxel_size": 0.02}`` or ``["memory.voxel_size=0.02"]`` applied."""
        if isinstance(overrides, (list, tuple)):
            pairs = {}
            for item in overrides:
                if "=" not in item:
                    raise InputError(f"override {item!r} must look like section.key=value")
                key, value = item.split("=", 1)
                try:
                    pairs[key.strip()] = yaml.safe_load(value) if value.strip() else ""
                except yaml.YAMLError as exc:
                    raise InputError(f"override {item!r}: the value is not valid YAML ({_one_line(exc)})") from None
            overrides = pairs
        data = self.to_dict()
        for key, value in overrides.items():
            node = data
            parts = key.split(".")
            for part in parts[:-1]:
                if not isinstance(node.get(part), dict):
                    raise InputError(f"unknown config key {key!r}")
                node = node[part]
            if parts[-1] not in node:
                raise InputError(f"unknown config key {key!r}")
            node[parts[-1]] = value
        return SpatiaConfig.from_dict(data)

    def flatten(self) -> dict[str, Any]:
        """``{"memory.voxel_size": 0.01, ...}`` (ROS parameter names)."""
        out: dict[str, Any] = {}

        def walk(prefix, node):
            for key, value in node.items():
                if isinstance(value, dict):
                    walk(f"{prefix}{key}.", value)
                else:
                    out[f"{prefix}{key}"] = value

        walk("", self.to_dict())
        return out

    def validate(self) -> None:
        """Raise :class:`InputError` for values no component accepts."""
        checks = [
            (self.memory.voxel_size > 0, "memory.voxel_size must be > 0"),
            (self.memory.max_voxels > 0, "memory.max_voxels must be > 0"),
            (0 <= self.memory.min_depth < self.memory.max_depth, "memory.min_depth must be < memory.max_depth"),
            (self.camera.width >= 0 and self.camera.height >= 0, "camera.width/height must be > 0 (0: the world's)"),
            (0 <= self.camera.fov_deg < 180, "camera.fov_deg must be in (0, 180) (0: the world's)"),
            (len(self.camera.intrinsics) in (0, 4), "camera.intrinsics must be [fx, fy, cx, cy] or empty"),
            (len(self.world.intrinsics) in (0, 4), "world.intrinsics must be [fx, fy, cx, cy] or empty"),
            (self.retrieval.k >= 0, "retrieval.k must be >= 0"),
            (self.retrieval.voxel_size > 0, "retrieval.voxel_size must be > 0"),
            (self.generator.clip_frames > 0, "generator.clip_frames must be > 0"),
            (self.generator.layout in ("release", "stream"), "generator.layout must be release or stream"),
            (self.retrieval.method in ("auto", "release", "iou"), "retrieval.method must be auto, release or iou"),
            (self.retrieval.history_stride >= 1 and self.retrieval.target_stride >= 1,
             "retrieval.history_stride/target_stride must be >= 1"),
            (self.generator.history_frames >= 0, "generator.history_frames must be >= 0"),
            (self.generator.steps >= 1, "generator.steps must be >= 1"),
            (self.generator.dtype in ("auto", "float32", "bfloat16", "float16"),
             "generator.dtype must be auto, float32, bfloat16 or float16"),
            (self.generator.offload in ("none", "model", "sequential"), "generator.offload must be none, model or sequential"),
            (self.update.max_correction_m >= 0 and self.update.max_correction_deg >= 0,
             "update.max_correction_m/deg must be >= 0"),
            (self.update.residual_color > 0 and self.update.residual_depth >= 0 and self.update.residual_depth_abs >= 0,
             "update.residual_color must be > 0 and residual_depth/residual_depth_abs >= 0"),
            (self.update.residual_window >= 1 and self.update.residual_dilate >= 0,
             "update.residual_window must be >= 1 and residual_dilate >= 0"),
            (self.render.max_radius >= 1, "render.max_radius must be >= 1"),
            (self.render.kernel in ("auto", "numba", "torch"), "render.kernel must be auto, numba or torch"),
            (self.sim.rate_hz > 0, "sim.rate_hz must be > 0"),
            (self.sim.base_model in ("unicycle", "holonomic"), "sim.base_model must be unicycle or holonomic"),
            (len(self.sim.mount_xyz) == 3 and len(self.sim.mount_rpy) == 3, "sim.mount_xyz/mount_rpy need 3 values"),
            (self.sim.bank_every >= 1, "sim.bank_every must be >= 1"),
            (self.sim.cloud_max_points >= 1, "sim.cloud_max_points must be >= 1"),
            # ranges and enums the components assumed (adversarial review, issue 13)
            (self.world.source in _WORLD_SOURCES, f"world.source must be one of {', '.join(_WORLD_SOURCES)}"),
            (self.world.depth_scale > 0, "world.depth_scale must be > 0"),
            (all(v > 0 for v in self.world.intrinsics[:2]), "world.intrinsics fx, fy must be > 0"),
            (all(v > 0 for v in self.camera.intrinsics[:2]), "camera.intrinsics fx, fy must be > 0"),
            (self.camera.width <= MAX_IMAGE_SIDE and self.camera.height <= MAX_IMAGE_SIDE,
             f"camera.width/height must be at most {MAX_IMAGE_SIDE}"),
            (self.memory.max_weight >= 1, "memory.max_weight must be >= 1"),
            (self.memory.block_size > 0, "memory.block_size must be > 0"),
            (self.render.near > 0, "render.near must be > 0"),
            (self.render.splat_scale > 0, "render.splat_scale must be > 0"),
            (0 <= self.retrieval.epsilon <= 1, "retrieval.epsilon (a 3D IoU) must be in [0, 1]"),
            (self.retrieval.max_frames >= 1, "retrieval.max_frames must be >= 1"),
            (self.generator.backend in ("projection", "spatia"), "generator.backend must be projection or spatia"),
            (self.generator.guidance_scale >= 0 and self.generator.shift > 0,
             "generator.guidance_scale must be >= 0 and generator.shift > 0"),
            (self.update.depth in ("auto", "rendered", "multiview", "mono", "mapanything"),
             "update.depth must be auto, rendered, multiview, mono or mapanything"),
            (self.update.pose_refine in ("none", "rgbd_odometry", "icp"), "update.pose_refine must be none, rgbd_odometry or icp"),
            (self.update.dynamics in ("none", "residual", "sam2"), "update.dynamics must be none, residual or sam2"),
            (0 < self.sim.rate_hz <= 1000, "sim.rate_hz must be in (0, 1000]"),
            (self.sim.max_linear > 0 and self.sim.max_angular > 0, "sim.max_linear/max_angular must be > 0"),
            (self.sim.cmd_timeout >= 0, "sim.cmd_timeout must be >= 0 (0: never)"),
            (self.sim.max_input_rate_hz > 0, "sim.max_input_rate_hz must be > 0"),
            (self.sim.cloud_rate_hz > 0, "sim.cloud_rate_hz must be > 0"),
            (bool(_DEVICE.fullmatch(self.device)), "device must be cpu, cuda, cuda:N or mps"),
        ]
        for ok, message in checks:
            if not ok:
                raise InputError(message)


#: Largest output image side, px (an 8k frame already needs gigabytes of render buffers).
MAX_IMAGE_SIDE = 8192
_WORLD_SOURCES = ("builtin", "rgbd_folder", "ply", "image_depth", "testcase", "auto")
_DEVICE = re.compile(r"cpu|cuda(:\d+)?|mps")
#: list fields -> the type of their items (the other lists are free-form)
_LIST_ITEMS = {"world.intrinsics": float, "camera.intrinsics": float, "sim.mount_xyz": float,
               "sim.mount_rpy": float, "world.frames": int}


def _one_line(exc: Exception) -> str:
    """A YAML (or OS) error as one line: the problem and where it is."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split()) or type(exc).__name__


def check_device(device: str) -> None:
    """Raise :class:`InputError` if the torch ``device`` does not exist on this machine.

    Imports torch only for a non-CPU device (the schema itself stays light).
    """
    if device == "cpu":
        return
    import torch

    kind, _, index = device.partition(":")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise InputError(f"device {device}: CUDA is not available on this machine (use device=cpu)")
        if index and int(index) >= torch.cuda.device_count():
            raise InputError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {device}: MPS is not available on this machine (use device=cpu)")


def unwrap_ros_params(data: dict) -> dict:
    """Accept a ROS 2 parameters file (``node_name: {ros__parameters: {...}}``) as a plain config.

    Keys of the node that are not part of the schema (``use_sim_time``) are dropped.
    """
    if len(data) == 1:
        (inner,) = data.values()
        if isinstance(inner, dict) and "ros__parameters" in inner:
            params = dict(inner["ros__parameters"] or {})
            params.pop("use_sim_time", None)
            return params
    return data


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise InputError(f"config section {prefix.rstrip('.') or '<root>'} must be a mapping")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise InputError(f"unknown config key(s): {', '.join(prefix + k for k in unknown)}")
    kwargs = {}
    defaults = cls()
    for name, value in data.items():
        default = getattr(defaults, name)
        if dataclasses.is_dataclass(default):
            kwargs[name] = _build(type(default), value or {}, f"{prefix}{name}.")
        else:
            kwargs[name] = _coerce(value, default, prefix + name)
    return cls(**kwargs)


def _coerce(value, default, key):
    """Convert ``value`` to the type of ``default`` (int -> float allowed; bool kept strict)."""
    try:
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(default, float):
            if isinstance(value, bool) or not math.isfinite(float(value)):
                raise TypeError
            return float(value)
        if isinstance(default, int):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if isinstance(default, str):
            if isinstance(value, (dict, list)):
                raise TypeError
            return "" if value is None else str(value)
        if isinstance(default, list):
            if value is None:
                return []
            if isinstance(value, (str, bytes, dict)):
                raise TypeError
            items = list(value)
            kind = _LIST_ITEMS.get(key)
            if kind is None:
                return items
    except (TypeError, ValueError):
        pass
    else:
        if isinstance(default, list):  # numeric items, each checked like a scalar field
            return [_coerce(v, kind(), f"{key}[{i}]") for i, v in enumerate(items)]
        return value
    raise InputError(f"config key {key} expects {type(default).__name__}, got {value!r}")
