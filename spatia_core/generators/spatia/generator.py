"""The ``spatia`` world-loop backend: :class:`SpatiaGenerator` wraps :class:`~.pipeline.SpatiaPipeline`.

It takes the loop's scene projection (``request.scene_rgb``, and ``history_scene_rgb`` at the
history poses), visibility, history (the last 9 frames, oldest first; the first round gets the
start image) and the retrieved references, runs one round of the release's sampler and returns
uint8 frames at the request's resolution, with the latents the release's final decode uses.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ...errors import BackendUnavailableError, InputError, SpatiaError
from ..base import ConditionFrame, GenerationRequest, GenerationResult

logger = logging.getLogger(__name__)

LAYOUTS = ("release", "stream")
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

    A clip is one round of the release: the known frames (the last ``history_frames`` frames; the
    start image alone in the first round) come first, the targets after them, the control video
    is the scene projection at all of their poses (the world renders the history poses too:
    ``wants_history_projection``), the round's prompt gets the release's suffix, LoRA is off in
    the first round and on later, and the frames of the clip beyond the known ones are returned.

    Args:
        checkpoint: checkpoint folder in our layout (``spatia convert`` / ``spatia train`` write one).
        device: torch device; a full-size model needs CUDA.
        layout: ``release`` (rounds of 121 frames, then 81 frames with the history inside, as
            ``inference.py``) or ``stream`` (known + target frames padded to 1 + 4k: short clips
            for the real-time loop; same mechanics otherwise).
        steps, guidance_scale, shift, control_scale: sampling settings (``None`` = the checkpoint's
            defaults, i.e. the release's 40 / 3.5 / 5 / 1).
        negative_prompt, prompt_suffix: ``"release"`` = the release's text; anything else is used
            as given ("" = none).
        dtype: ``auto`` (bf16 on CUDA, fp32 on CPU), ``float32``, ``bfloat16``, ``float16``.
        offload: ``none`` | ``model`` | ``sequential`` (CPU offload when GPU memory is short).
        history_frames: known frames of later rounds (release: 9; must be 1 + 4k).
        progress: show a progress bar per clip.
    """

    name = "spatia"
    uses_references = True
    wants_history_projection = True

    def __init__(
        self,
        checkpoint: str | Path = "",
        device: str = "cpu",
        layout: str = "release",
        steps: int | None = None,
        guidance_scale: float | None = None,
        shift: float | None = None,
        control_scale: float | None = None,
        negative_prompt: str | None = "release",
        prompt_suffix: str | None = "release",
        dtype: str = "auto",
        offload: str = "none",
        history_frames: int | None = None,
        progress: bool = False,
        pipeline=None,
        **unknown,
    ):
        if unknown:
            raise InputError(f"unknown options for the spatia generator: {', '.join(sorted(unknown))}")
        if layout not in LAYOUTS:
            raise InputError(f"unknown generator layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
        if pipeline is not None:
            self.pipe = pipeline
            path = Path(checkpoint) if checkpoint else None
        else:
            path = Path(checkpoint) if checkpoint else None
            if path is None:
                raise BackendUnavailableError(f"the 'spatia' backend needs weights but generator.checkpoint is empty; {MAKE_CHECKPOINT_HINT}")
            if not path.is_dir():
                raise BackendUnavailableError(f"spatia checkpoint folder {str(path)!r} does not exist; {MAKE_CHECKPOINT_HINT}")
            from .pipeline import SpatiaPipeline

            try:
                self.pipe = SpatiaPipeline.from_checkpoint(path, device=device, dtype=dtype, offload=offload)
            except (BackendUnavailableError, InputError):
                raise
            except SpatiaError as exc:  # e.g. FileFormatError: an incomplete or corrupt folder
                raise BackendUnavailableError(f"cannot load spatia checkpoint {str(path)!r}: {exc}; {MAKE_CHECKPOINT_HINT}") from exc
            except (OSError, ValueError, KeyError, RuntimeError) as exc:  # corrupt or incomplete folder
                raise BackendUnavailableError(f"cannot load spatia checkpoint {str(path)!r}: {exc}; {MAKE_CHECKPOINT_HINT}") from exc
        d = self.pipe.defaults
        self.layout = layout
        self.options = {
            "num_inference_steps": d.steps if steps is None else int(steps),
            "guidance_scale": d.guidance_scale if guidance_scale is None else float(guidance_scale),
            "shift": d.shift if shift is None else float(shift),
            "control_scale": d.control_scale if control_scale is None else float(control_scale),
            "negative_prompt": d.negative_prompt if negative_prompt in (None, "release") else negative_prompt,
        }
        self.prompt_suffix = d.prompt_suffix if prompt_suffix in (None, "release") else prompt_suffix
        self.history_frames = d.history_frames if history_frames is None else int(history_frames)
        t = self.pipe.vae_scale_temporal
        if self.history_frames < 1 or (self.history_frames - 1) % t:
            raise InputError(f"generator.history_frames must be 1 + {t}k (release: 9), got {self.history_frames}")
        self.first_clip_frames = int(d.first_clip_frames)
        self.later_clip_frames = int(d.later_clip_frames)
        self.progress = progress
        self.checkpoint = path

    def new_frames_per_round(self, round_index: int) -> int | None:
        """Target frames a round of the release layout adds (120, then 72); None in the stream layout."""
        if self.layout != "release":
            return None
        return self.first_clip_frames - 1 if round_index == 0 else self.later_clip_frames - self.history_frames

    def known_frames(self, history: list[ConditionFrame], round_index: int) -> list[ConditionFrame]:
        """The frames a clip starts with: the newest history frame in the first round, else the last
        ``history_frames`` (trimmed to 1 + 4k)."""
        if not history:
            return []
        if round_index == 0:
            return history[-1:]
        n = min(self.history_frames, len(history))
        n = 1 + self.pipe.vae_scale_temporal * ((n - 1) // self.pipe.vae_scale_temporal)
        return history[-n:]

    def generate(self, request: GenerationRequest) -> GenerationResult:
        """Sample the clip at ``request.poses``; frames are uint8 (T, H, W, 3) at the request's resolution."""
        h, w = int(request.intrinsics.height), int(request.intrinsics.width)
        scene = np.asarray(request.scene_rgb)
        t = len(request.poses)
        if scene.shape != (t, h, w, 3):
            raise InputError(f"scene_rgb must be ({t}, {h}, {w}, 3), got {scene.shape}")
        known = self.known_frames(request.history, request.round_index)
        n_known = len(known)
        visibility = np.asarray(request.visibility, dtype=bool)
        if n_known:
            if request.history_scene_rgb is None or request.history_visibility is None:
                raise InputError("the spatia backend needs the scene projection at the history poses "
                                 "(request.history_scene_rgb / history_visibility)")
            scene = np.concatenate([np.asarray(request.history_scene_rgb)[-n_known:], scene])
            visibility = np.concatenate([np.asarray(request.history_visibility, dtype=bool)[-n_known:], visibility])
        if self.layout == "release":
            n = self.first_clip_frames if request.round_index == 0 else self.later_clip_frames
            if n_known + t > n:
                raise InputError(f"a release-layout round holds {n} frames; got {n_known} known + {t} targets")
        else:
            n = n_known + t
        refs = request.references if request.round_index > 0 else []
        out = self.pipe(
            prompt=f"{request.prompt}{self.prompt_suffix}",
            control_video=scene,
            control_score=visibility,
            known_frames=_images(known, h, w),
            reference_frames=_images(refs, h, w),
            num_frames=n,
            height=h,
            width=w,
            seed=int(request.seed),
            use_lora=request.round_index > 0,
            progress=self.progress,
            output_type="np",
            **self.options,
        )
        frames = out.frames[n_known : n_known + t]
        # The release keeps round 1's latents whole (frame 0 is the input image) and drops the
        # history latents of later rounds before the final decode.
        drop = 0 if request.round_index == 0 else (n_known - 1) // self.pipe.vae_scale_temporal + 1
        return GenerationResult(frames=frames, latents=out.latents[:, :, drop:].cpu())

    def decode_video(self, latents: list) -> np.ndarray:
        """The release's final video: all rounds' latents decoded in one VAE call, uint8 (N, H, W, 3)."""
        import torch

        z = torch.cat([torch.as_tensor(x) for x in latents], dim=2).to(self.pipe._execution_device)
        return self.pipe.decode_frames(z)
