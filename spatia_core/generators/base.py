"""The generator interface every backend implements (projection, spatia diffusion, ...)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..geometry import Intrinsics


@dataclass
class ConditionFrame:
    """A clean frame that conditions generation (a history or a reference frame)."""

    image: np.ndarray  # uint8 (H, W, 3) RGB
    pose: np.ndarray  # float64 (4, 4) camera-to-world
    intrinsics: Intrinsics


@dataclass
class GenerationRequest:
    """Everything the world loop hands a generator for one clip of T frames."""

    poses: np.ndarray  # float64 (T, 4, 4) camera-to-world target poses
    intrinsics: Intrinsics  # output camera (sets H and W)
    scene_rgb: np.ndarray  # uint8 (T, H, W, 3) scene projection video
    scene_depth: np.ndarray  # float32 (T, H, W) metres, 0 where the memory shows nothing
    visibility: np.ndarray  # bool (T, H, W) pixels the memory covers
    history: list[ConditionFrame] = field(default_factory=list)  # preceding frames, oldest first
    references: list[ConditionFrame] = field(default_factory=list)  # retrieved reference frames
    prompt: str = ""
    seed: int = 0
    round_index: int = 0  # clips generated before this one in the world (0 = the first round)
    # Scene projection at the history frames' poses, for backends whose clip starts with the
    # history (``wants_history_projection``); None otherwise.
    history_scene_rgb: np.ndarray | None = None  # uint8 (h, H, W, 3)
    history_visibility: np.ndarray | None = None  # bool (h, H, W)


@dataclass
class GenerationResult:
    """A generated clip."""

    frames: np.ndarray  # uint8 (T, H, W, 3)
    depth: np.ndarray | None = None  # float32 (T, H, W) metres the backend knows, 0 = unknown
    # The backend's latents of this clip's contribution to the final video (the release decodes
    # all rounds' latents at once at the end); None for backends without latents.
    latents: object | None = None


class Generator(Protocol):
    """A clip generator: ``generate(request) -> result`` with ``len(result.frames) == len(request.poses)``."""

    name: str
    uses_references: bool  # whether reference frames change the output (retrieval is skipped if not)

    def generate(self, request: GenerationRequest) -> GenerationResult: ...
