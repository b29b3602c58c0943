"""spatia_core: the ROS-free library of spatia_ros.

Spatia's loop (arXiv 2512.15716) over an explicit 3D spatial memory: scene projection,
reference retrieval, generation, memory update. Start with :class:`SpatiaWorld`.
"""

from .config import SpatiaConfig
from .errors import BackendUnavailableError, FileFormatError, InputError, SpatiaError
from .geometry import Intrinsics, look_at, validate_pose
from .memory import SpatialMemory, load_ply, save_ply
from .render import SceneProjection, render_memory, render_points
from .retrieval import FrameBank, retrieve_references
from .world import ClipResult, SpatiaWorld

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "ClipResult",
    "FileFormatError",
    "FrameBank",
    "InputError",
    "Intrinsics",
    "SceneProjection",
    "SpatiaConfig",
    "SpatiaError",
    "SpatiaWorld",
    "SpatialMemory",
    "load_ply",
    "look_at",
    "render_memory",
    "render_points",
    "retrieve_references",
    "save_ply",
    "validate_pose",
]
