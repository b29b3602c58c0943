"""The ``spatia`` world-loop backend: :class:`SpatiaGenerator` wraps :class:`~.pipeline.SpatiaPipeline`.

It takes the loop's scene projection (``request.scene_rgb``), visibility, history (the last 9
frames, oldest first; the first clip gets whatever the world holds, e.g. the start image) and the
retrieved references, and returns uint8 frames at the request's resolution.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ...errors import BackendUnavailableError, InputError, SpatiaError
from ..base import ConditionFrame, GenerationRequest, GenerationResult

logger = logging.getLogger(__name__)

MAKE_CHECKPOINT_HINT = (
    "make one with `spatia convert` (from the official Spatia release files) or `spatia train`, "
    "and set generator.checkpoint to its folder"
)


def _images(frames: list[ConditionFrame], height: int, width: int) -> np.ndarray | None:
    """Stack condition frames as uint8 (N, height, width, 3) (resized where a frame differs), None if empty."""
    if not frames:
        return None
    import cv2

    out = []
    for f in frames:
        img = np.asarray(f.image)
        if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
            raise InputError(f"condition frames must be uint8 (H, W, 3), got {img.shape} {img.dtype}")
        if img.shape[:2] != (height, width):
            img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
        out.append(img)
    return np.stack(out)


class SpatiaGenerator:
    """Spatia diffusion backend (Wan2.2-TI2V-5B + scene-projection control) for :class:`SpatiaWorld`.

    Args:
        checkpoint: checkpoint folder in our layout (``spatia convert`` / ``spatia train`` write one).
        device: torch device; a full-size model needs CUDA.
        steps, guidance_scale, shift, control_scale, negative_prompt: sampling settings
            (``None`` = the checkpoint's defaults, i.e. the release's 40 / 3.5 / 5 / 1 / "").
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16``, ``float16``.
        offload: ``none`` | ``model`` | ``sequential`` (CPU offload when GPU memory is short).
        history_frames: most history frames used per clip (release: 9).
        progress: show a progress bar per clip.
    """

    name = "spatia"
    uses_references = True

    def __init__(
        self,
        checkpoint: str | Path = "",
        device: str = "cpu",
        steps: int | None = None,
        guidance_scale: float | None = None,
        shift: float | None = None,
        control_scale: float | None = None,
        negative_prompt: str | None = None,
        dtype: str = "auto",
        offload: str = "none",
        history_frames: int | None = None,
        progress: bool = False,
        **unknown,
    ):
        if unknown:
            raise InputError(f"unknown options for the spatia generator: {', '.join(sorted(unknown))}")
        path = Path(checkpoint) if checkpoint else None
        if path is None:
            raise BackendUnavailableError(f"the 'spatia' backend needs weights but generator.checkpoint is empty; {MAKE_CHECKPOINT_HINT}")
        if not path.is_dir():
            raise BackendUnavailableError(f"spatia checkpoint folder {str(path)!r} does not exist; {MAKE_CHECKPOINT_HINT}")
        from .pipeline import SpatiaPipeline

        try:
            self.pipe = SpatiaPipeline.from_pretrained(path, device=device, dtype=dtype, offload=offload)
        except (BackendUnavailableError, InputError):
            raise
        except SpatiaError as exc:  # e.g. FileFormatError: an incomplete or corrupt folder
            raise BackendUnavailableError(f"cannot load spatia checkpoint {str(path)!r}: {exc}; {MAKE_CHECKPOINT_HINT}") from exc
        except (OSError, ValueError, KeyError, RuntimeError) as exc:  # corrupt or incomplete folder
            raise BackendUnavailableError(f"cannot load spatia checkpoint {str(path)!r}: {exc}; {MAKE_CHECKPOINT_HINT}") from exc
        d = self.pipe.defaults
        self.options = {
            "num_inference_steps": d.steps if steps is None else int(steps),
            "guidance_scale": d.guidance_scale if guidance_scale is None else float(guidance_scale),
            "shift": d.shift if shift is None else float(shift),
            "control_scale": d.control_scale if control_scale is None else float(control_scale),
            "negative_prompt": d.negative_prompt if negative_prompt is None else negative_prompt,
        }
        self.history_frames = d.history_frames if history_frames is None else int(history_frames)
        self.progress = progress
        self.checkpoint = path

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Sample the clip at ``request.poses``; frames are uint8 (T, H, W, 3) at the request's resolution."""
        h, w = int(request.intrinsics.height), int(request.intrinsics.width)
        scene = np.asarray(request.scene_rgb)
        t = len(request.poses)
        if scene.shape != (t, h, w, 3):
            raise InputError(f"scene_rgb must be ({t}, {h}, {w}, 3), got {scene.shape}")
        history = request.history[-self.history_frames:] if self.history_frames > 0 else []
        out = self.pipe(
            prompt=request.prompt,
            scene_video=scene,
            visibility=np.asarray(request.visibility, dtype=bool),
            history_frames=_images(history, h, w),
            reference_frames=_images(request.references, h, w),
            num_frames=t,
            height=h,
            width=w,
            seed=int(request.seed),
            progress=self.progress,
            output_type="np",
            **self.options,
        )
        return GenerationResult(frames=out.frames)
