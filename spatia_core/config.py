"""One configuration schema for the CLI, the YAML files, the ROS node and the Python API.

Typed, validated sections (pydantic dataclasses): every field has a type, a range or a set of
allowed values where one exists, finite numbers only, list item types and lengths, and a
description (``Field(description=...)``, which also becomes the ROS parameter descriptor). Unknown
keys are errors, not silent defaults. Bools are not numbers, text is a number only if it spells one
(``1e-3``, which PyYAML reads as text), integers accept integral floats (``2.0``) and floats accept
integers.

The same schema checks ``--set section.key=value`` (:meth:`SpatiaConfig.with_overrides`), YAML files
(:meth:`SpatiaConfig.from_yaml`, plain or a ROS 2 parameters file), ROS parameters at start and at
run time (the node's set-parameters callback goes through ``with_overrides``), direct
construction (``MemoryConfig(voxel_size=0)`` raises :class:`InputError`), assignments
(``cfg.sim.max_linear = float("nan")`` raises) and, through :func:`schema_dataclass`, the training
configs (``spatia_core.training``). :func:`parameter_specs` lists the flattened names
with their descriptions and simple ranges for ROS parameter descriptors.

The sections are dataclasses: ``dataclasses.replace``, ``fields`` and ``asdict`` keep working.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass as _std_dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import AfterValidator, BeforeValidator, ConfigDict, Field, ValidationError
from pydantic.dataclasses import dataclass

from .errors import FileFormatError, InputError

#: Largest output image side, px (an 8k frame already needs gigabytes of render buffers).
MAX_IMAGE_SIDE = 8192
_DEVICE_PATTERN = r"^(cpu|cuda(:\d+)?|mps)$"


def _number(value):
    """Refuse bools and text that is not a number. PyYAML reads ``1e-3`` (no dot) as text, so text
    that spells a number is read as that number."""
    if isinstance(value, str):
        try:
            return int(value) if value.strip().lstrip("+-").isdigit() else float(value)
        except ValueError:
            pass
    if isinstance(value, (bool, str, bytes)):
        raise ValueError(f"expects a number, got {value!r}")
    return value


def _text(value):
    """Scalars become text (YAML reads ``prompt: 12`` as a number); None is empty; containers are refused."""
    if value is None:
        return ""
    if isinstance(value, (bool, int, float)):
        return str(value)
    return value


def _flag(value):
    if type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"):
        return bool(value)
    if not isinstance(value, bool):
        raise ValueError(f"expects true or false, got {value!r}")
    return value


Real = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]
Int = Annotated[int, BeforeValidator(_number)]
Text = Annotated[str, BeforeValidator(_text)]
Flag = Annotated[bool, BeforeValidator(_flag)]
PosReal = Annotated[Real, Field(gt=0)]


def _intrinsics(value: list) -> list:
    if len(value) not in (0, 4):
        raise ValueError("must be [fx, fy, cx, cy] or empty")
    if value and not (value[0] > 0 and value[1] > 0):
        raise ValueError("fx, fy must be > 0")
    return value


def _none_is_empty(value):
    return [] if value is None else value


Intrinsics = Annotated[list[Real], BeforeValidator(_none_is_empty), AfterValidator(_intrinsics)]
Vec3 = Annotated[list[Real], BeforeValidator(_none_is_empty), Field(min_length=3, max_length=3)]

def schema_dataclass(cls=None, *, frozen: bool = False, docstrings: bool = False):
    """A validated dataclass of this schema (a pydantic dataclass: strict keys, validated
    construction and assignment) whose invalid values raise :class:`InputError` with one line per
    problem, like every other bad input. ``docstrings``: a field's description is the docstring
    under it (the training configs' style). The training configs use it too."""

    def wrap(c):
        config = ConfigDict(extra="forbid", validate_assignment=True, use_attribute_docstrings=docstrings)
        made = dataclass(c, config=config, frozen=frozen)
        init, assign = made.__init__, made.__setattr__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            try:
                init(self, *args, **kwargs)
            except ValidationError as exc:
                raise InputError(_message(exc)) from None

        def __setattr__(self, name, value):
            try:
                assign(self, name, value)
            except ValidationError as exc:
                raise InputError(_message(exc)) from None

        made.__init__ = __init__
        if not frozen:
            made.__setattr__ = __setattr__
        return made

    return wrap(cls) if cls is not None else wrap


def _f(default, description: str, **constraints):
    """A field: its default (a list default is copied per instance), description and constraints."""
    if isinstance(default, list):
        return Field(default_factory=lambda d=tuple(default): list(d), description=description, **constraints)
    return Field(default, description=description, **constraints)


def _section(cls, description: str):
    return Field(default_factory=cls, description=description)


@schema_dataclass
class WorldConfig:
    source: Literal["builtin", "rgbd_folder", "ply", "image_depth", "testcase", "capture", "auto"] = _f(
        "builtin", "builtin | rgbd_folder | ply | image_depth | testcase | capture (posed photos) | auto (from path)")
    path: Text = _f("", "folder or file of the world (not used by builtin)")
    depth_path: Text = _f("", "depth map for an image_depth world (.png mm, .npy metres)")
    seed: Int = _f(0, "seed of the built-in procedural scene", ge=0)
    intrinsics: Intrinsics = _f([], "[fx, fy, cx, cy] px of the source images, if the files lack them")
    depth_scale: PosReal = _f(1000.0, "integer depth units per metre (16-bit PNG/PGM)")
    frames: Annotated[list[Annotated[Int, Field(ge=0)]], BeforeValidator(_none_is_empty)] = _f(
        [], "indices of the folder frames to fuse; empty = all")
    metric_scale: PosReal = _f(1.0, "captures: metres per capture unit (SfM and RE10K units are arbitrary; 1 = as "
                                    "given)")
    capture_size: Int = _f(640, "posed-photo captures (COLMAP, transforms.json, LLFF, Strecha): long side the photos "
                                "are used at, px", ge=1, le=MAX_IMAGE_SIDE)


@schema_dataclass
class CameraConfig:
    """The output camera. Left at 0 / empty, it is the world's camera (a test case's, an RGB-D
    folder's, an image's given intrinsics), else 640x480 at 70 degrees; set width/height alone to
    rescale the world's camera."""

    width: Int = _f(0, "output image width, px; 0 = the world's (else 640)", ge=0, le=MAX_IMAGE_SIDE)
    height: Int = _f(0, "output image height, px; 0 = the world's (else 480)", ge=0, le=MAX_IMAGE_SIDE)
    fov_deg: Real = _f(0.0, "horizontal field of view when intrinsics is empty; 0 = the world's camera (else 70)",
                       ge=0, lt=180)
    intrinsics: Intrinsics = _f([], "[fx, fy, cx, cy] px at width x height; overrides fov_deg, the world's")


@schema_dataclass
class MemoryConfig:
    voxel_size: PosReal = _f(0.01, "voxel edge, metres (paper default)")
    max_voxels: Int = _f(5_000_000, "size bound; least recently observed voxels are evicted beyond it", gt=0)
    max_weight: Int = _f(16, "cap on the running-mean weight of a voxel", ge=1)
    min_depth: Real = _f(0.05, "depth readings below this are not fused, metres (must be < max_depth)", ge=0)
    max_depth: PosReal = _f(10.0, "depth readings beyond this are not fused, metres")
    block_size: PosReal = _f(0.5, "edge of the coarse blocks used for frustum culling, metres")


@schema_dataclass
class RenderConfig:
    splat_scale: PosReal = _f(1.25, "splat footprint relative to a voxel's projected size")
    max_radius: Int = _f(8, "largest splat is a square of 2 * max_radius + 1 pixels", ge=1, le=256)
    near: PosReal = _f(0.05, "near clipping distance, metres")
    compile: Flag = _f(True, "fuse the torch kernel's per-point projection with torch.compile (falls back to eager)")
    kernel: Literal["auto", "numba", "torch"] = _f("auto", "auto (numba on CPU when installed, else torch) | numba | torch")
    threads: Int = _f(0, "threads the numba kernel splits one view over (0: one per core, at most 4)", ge=0, le=64)


@schema_dataclass
class RetrievalConfig:
    k: Int = _f(7, "maximum number of reference frames (K)", ge=0)
    epsilon: Real = _f(0.1, "minimum 3D IoU for a reference", ge=0, le=1)
    voxel_size: PosReal = _f(0.1, "voxel edge for the view voxel sets, metres")
    max_frames: Int = _f(5000, "frame bank size bound (oldest dropped first, the first frame kept)", ge=1)
    method: Literal["auto", "release", "iou"] = _f(
        "auto", "release (z-buffered shared points, Hungarian, as the release) | iou (Algorithm 1) | auto (release for "
                "the spatia backend's release layout, else iou)")
    history_stride: Int = _f(4, "release method: every n-th past frame is a candidate (24 fps / 6 fps)", ge=1)
    target_stride: Int = _f(12, "release method: every n-th pose of the round is a target view (24 fps / 2 fps)", ge=1)


@schema_dataclass
class GeneratorConfig:
    backend: Literal["projection", "spatia"] = _f("projection", "projection (no weights) | spatia (diffusion)")
    layout: Literal["release", "stream"] = _f(
        "release", "spatia backend: release (rounds of 121, then 81 frames holding the last 9, as inference.py) | "
                   "stream (clip_frames per clip, for the real-time loop)")
    clip_frames: Int = _f(16, "frames generated per clip (stream layout, projection backend)", ge=1)
    history_frames: Int = _f(9, "preceding frames that condition a clip (release: 9, must be 1 + 4k)", ge=0)
    prompt: Text = _f("", "text prompt")
    seed: Int = _f(20917, "random seed of stochastic backends (the release's; release layout: the same every round)",
                   ge=0)
    checkpoint: Text = _f("", "weights directory of the diffusion backend")
    steps: Int = _f(40, "diffusion sampling steps (official default)", ge=1)
    guidance_scale: Real = _f(3.5, "classifier-free guidance scale (1 disables the unconditional pass)", ge=0)
    shift: PosReal = _f(5.0, "flow-matching sigma shift of the sampler")
    control_scale: Real = _f(1.0, "scale of the scene-projection control hints")
    negative_prompt: Text = _f("release", "text the unconditional branch is pushed away from (\"release\": the "
                                          "release's, \"\": none)")
    prompt_suffix: Text = _f("release", "appended to every prompt (\"release\": \" 4K, realistic, high quality, "
                                        "HDR.\", \"\": none)")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = _f(
        "auto", "auto (bfloat16 on CUDA, float32 on CPU) | float32 | bfloat16 | float16")
    offload: Literal["none", "model", "sequential"] = _f(
        "none", "none | model (one sub-model on the GPU at a time) | sequential (layer by layer)")


@schema_dataclass
class UpdateConfig:
    depth: Literal["auto", "rendered", "multiview", "mono", "mapanything"] = _f(
        "auto", "depth of new content: auto (mono if the world lacks depth) | rendered | multiview | mono | mapanything")
    depth_checkpoint: Text = _f("depth-anything/Depth-Anything-V2-Small-hf",
                                "mono: Hugging Face id or folder; mapanything: folder")
    pose_refine: Literal["none", "rgbd_odometry", "icp"] = _f(
        "none", "none | rgbd_odometry | icp: align generated frames to the memory before fusing")
    max_correction_m: Real = _f(0.10, "pose corrections beyond this translation are refused (frame fused "
                                      "unrefined), metres", ge=0)
    max_correction_deg: Real = _f(5.0, "pose corrections beyond this rotation are refused (frame fused unrefined), "
                                       "degrees", ge=0)
    carve: Flag = _f(True, "free-space carving: a voxel a new frame sees through loses an observation, and is removed "
                           "at none (never with the projection backend: its depth is the memory's own)")
    free_space_tol: Real = _f(0.05, "carving: relative depth margin (plus one voxel) beyond which a frame sees "
                                    "through a voxel", ge=0)
    dynamics: Literal["none", "residual", "sam2"] = _f("none", "dynamic-entity masks: none | residual (weight-free) | sam2")
    sam2_checkpoint: Text = _f("", "SAM2 weights (.pt); sam2 needs them")
    sam2_config: Text = _f("configs/sam2.1/sam2.1_hiera_t.yaml", "SAM2 model config (packaged name)")
    dynamic_mask: Text = _f("", "mask image of dynamic entities in the first frame (official mask.png)")
    residual_color: PosReal = _f(30.0, "residual dynamics: mean |RGB| difference (0-255) that counts as disagreement")
    residual_depth: Real = _f(0.05, "residual dynamics: relative depth difference that counts as disagreement", ge=0)
    residual_depth_abs: Real = _f(0.03, "residual dynamics: absolute depth tolerance added to it, metres", ge=0)
    residual_window: Int = _f(2, "residual dynamics: frames on each side checked for multi-frame consistency", ge=1)
    residual_dilate: Int = _f(2, "residual dynamics: pixels the dynamic mask is grown by", ge=0)


@schema_dataclass
class SimConfig:
    rate_hz: Real = _f(30.0, "frames per second (the sim-time step is 1 / rate_hz)", gt=0, le=1000)
    publish_clock: Flag = _f(True, "own the time: sim time advances only when a frame is produced (lockstep)")
    start_paused: Flag = _f(False, "start paused: frames only through the step service / action")
    render_on_pose: Flag = _f(True, "produce a frame as soon as a camera_pose arrives (lowest latency)")
    base_model: Literal["unicycle", "holonomic"] = _f("unicycle", "unicycle | holonomic kinematic base carrying the camera")
    max_linear: PosReal = _f(2.0, "velocity commands beyond this linear speed are refused, m/s")
    max_angular: PosReal = _f(3.0, "velocity commands beyond this angular speed are refused, rad/s")
    cmd_timeout: Real = _f(0.5, "a velocity command expires after this much sim time, s (0: never)", ge=0)
    max_input_rate_hz: PosReal = _f(200.0, "commands arriving faster than this are dropped")
    cmd_vel_stamped: Flag = _f(False, "cmd_vel is geometry_msgs/TwistStamped instead of Twist")
    mount_xyz: Vec3 = _f([0.0, 0.0, 1.2], "base_link -> camera_link translation, m")
    mount_rpy: Vec3 = _f([0.0, 0.0, 0.0], "base_link -> camera_link roll pitch yaw, rad")
    map_frame: Text = _f("map", "TF frame of the world")
    odom_frame: Text = _f("odom", "TF frame of the odometry")
    base_frame: Text = _f("base_link", "TF frame of the robot base")
    camera_frame: Text = _f("camera_link", "TF frame of the camera body")
    optical_frame: Text = _f("camera_optical_frame", "TF frame of the camera images (OpenCV axes)")
    reliable_images: Flag = _f(True, "publish camera images reliably (best effort drops most 640x480 frames between "
                                     "processes)")
    cloud_rate_hz: PosReal = _f(1.0, "spatial_memory PointCloud2 publish rate (only when the memory changed)")
    cloud_max_points: Int = _f(200_000, "the published cloud is downsampled to at most this many points", ge=1)
    bank_every: Int = _f(10, "add every n-th frame to the retrieval frame bank", ge=1)
    map_dir: Text = _f("maps", "save/load map paths are confined to this folder")
    spawnables_dir: Text = _f("spawnables", "PLY files offered by GetSpawnables / SpawnEntity are confined to this "
                                            "folder")
    worlds_dir: Text = _f("worlds", "worlds offered by GetAvailableWorlds / LoadWorld (PLY maps, capture folders) are "
                                    "confined to this folder")


@schema_dataclass
class SpatiaConfig:
    world: WorldConfig = _section(WorldConfig, "the world the memory starts from")
    camera: CameraConfig = _section(CameraConfig, "the output camera")
    memory: MemoryConfig = _section(MemoryConfig, "the voxel memory")
    render: RenderConfig = _section(RenderConfig, "the splat renderer")
    retrieval: RetrievalConfig = _section(RetrievalConfig, "reference-frame retrieval")
    generator: GeneratorConfig = _section(GeneratorConfig, "the image generator")
    update: UpdateConfig = _section(UpdateConfig, "how generated frames enter the memory")
    sim: SimConfig = _section(SimConfig, "the ROS simulator")
    device: Annotated[Text, Field(pattern=_DEVICE_PATTERN)] = _f("cpu", "torch device: cpu, cuda, cuda:1, ...")

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict | None) -> "SpatiaConfig":
        """Build from a nested dict; unknown keys and invalid values raise :class:`InputError`."""
        data = {} if data is None else data
        if not isinstance(data, dict):
            raise InputError("config must be a mapping")
        sections = {f.name for f in dataclasses.fields(cls) if f.name != "device"}
        # an empty YAML section (``memory:``) reads as None
        data = {k: ({} if k in sections and v is None else v) for k, v in data.items()}
        try:
            cfg = cls(**data)
        except ValidationError as exc:
            raise InputError(_message(exc)) from None
        cfg.validate()
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SpatiaConfig":
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
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
            if parts[-1] not in node or isinstance(node[parts[-1]], dict):
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
        """Raise :class:`InputError` for values no component accepts: every field again (a list may
        have been changed in place) and the checks that involve more than one field."""
        try:
            type(self)(**self.to_dict())
        except ValidationError as exc:
            raise InputError(_message(exc)) from None
        if not self.memory.min_depth < self.memory.max_depth:
            raise InputError("memory.min_depth must be < memory.max_depth")


@_std_dataclass(frozen=True)
class ParameterSpec:
    """What a ROS parameter descriptor needs to know about one flattened config key."""

    name: str
    description: str
    constraints: str  # human-readable: "> 0", "in [0, 1]", "one of: a, b", "3 items"
    low: float | int | None = None  # inclusive range, only when both ends are inclusive bounds
    high: float | int | None = None


def parameter_specs() -> dict[str, ParameterSpec]:
    """``{"memory.voxel_size": ParameterSpec(...), ...}`` for every flattened key, in schema order."""
    out: dict[str, ParameterSpec] = {}

    def walk(cls, prefix):
        for name, info in cls.__pydantic_fields__.items():
            key = prefix + name
            if dataclasses.is_dataclass(info.annotation):
                walk(info.annotation, key + ".")
                continue
            bounds = _bounds(info)
            text = []
            if "ge" in bounds and "le" in bounds:
                text.append(f"in [{bounds['ge']:g}, {bounds['le']:g}]")
            else:
                for op, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
                    if op in bounds:
                        text.append(f"{sym} {bounds[op]:g}")
            choices = _choices(info.annotation)
            if choices:
                text.append("one of: " + ", ".join(choices))
            if "min_length" in bounds and bounds.get("min_length") == bounds.get("max_length"):
                text.append(f"{bounds['min_length']} items")
            if "pattern" in bounds:
                text.append(f"matches {bounds['pattern']}")
            simple = "ge" in bounds and "le" in bounds
            out[key] = ParameterSpec(key, info.description or "", ", ".join(text),
                                     bounds["ge"] if simple else None, bounds["le"] if simple else None)

    walk(SpatiaConfig, "")
    return out


def _bounds(info) -> dict:
    """The numeric bounds, lengths and pattern of a field, from its own and its type's metadata."""
    found: dict = {}
    stack = list(info.metadata)
    annotation = info.annotation
    while True:
        meta = getattr(annotation, "__metadata__", None)
        if meta is None:
            break
        stack.extend(meta)
        annotation = annotation.__origin__
    for item in stack:
        for attr in ("gt", "ge", "lt", "le", "min_length", "max_length", "pattern"):
            value = getattr(item, attr, None)
            if value is not None and attr not in found:
                found[attr] = value
        for sub in getattr(item, "metadata", ()):  # a FieldInfo inside Annotated
            for attr in ("gt", "ge", "lt", "le", "min_length", "max_length", "pattern"):
                value = getattr(sub, attr, None)
                if value is not None and attr not in found:
                    found[attr] = value
    return found


def _choices(annotation) -> tuple:
    if getattr(annotation, "__origin__", None) is Literal:
        return tuple(annotation.__args__)
    return ()


def _message(exc: ValidationError) -> str:
    """A validation error as one line per problem: ``config key memory.block_size: Input should be
    greater than 0 (got 0)``."""
    parts = []
    for err in exc.errors(include_url=False)[:3]:
        loc = err.get("loc", ())
        key = ".".join(str(p) for p in loc if not isinstance(p, int))
        index = "".join(f"[{p}]" for p in loc if isinstance(p, int))
        if err["type"] == "unexpected_keyword_argument":
            parts.append(f"unknown config key {key}")
            continue
        msg = err["msg"].removeprefix("Value error, ")
        if key == "device" and err["type"] == "string_pattern_mismatch":
            msg = "device must be cpu, cuda, cuda:N or mps"
        got = "" if err["type"] == "value_error" else f" (got {_short(err.get('input'))})"  # ours name the value
        parts.append(f"config key {key}{index}: {msg}{got}" if key or index else msg)  # a check of several fields
    more = len(exc.errors()) - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


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
            params.pop("world_dirs", None)  # a node parameter, not part of the schema
            return _nest(params)
    return data


def _nest(params: dict) -> dict:
    """``{"memory.voxel_size": 1}`` (flat ROS names, as ``ros2 param dump`` writes) -> nested sections."""
    out: dict = {}
    for key, value in params.items():
        parts = str(key).split(".")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise InputError(f"config key {key} collides with a value")
        if isinstance(value, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(value)
        else:
            node[parts[-1]] = value
    return out


__all__ = ["schema_dataclass", "Real", "Int", "Text", "Flag", "PosReal", "SpatiaConfig", "WorldConfig", "CameraConfig", "MemoryConfig", "RenderConfig", "RetrievalConfig",
           "GeneratorConfig", "UpdateConfig", "SimConfig", "ParameterSpec", "parameter_specs", "check_device",
           "unwrap_ros_params", "MAX_IMAGE_SIDE"]
