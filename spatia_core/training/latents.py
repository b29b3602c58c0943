"""Encode training clips into the latents the transformer trains on, exactly as the sampler does.

The encoders are :class:`~spatia_core.generators.spatia.pipeline.SpatiaPipeline`'s own
(``encode_prompt``, ``encode_video``, ``encode_images``), so training inputs match inference:

* the clip (history frames, then target frames, padded to ``1 + 4k`` at the end) encoded as one
  video, as the sampler's rounds are laid out: its first ``Fh = (Th - 1) / 4 + 1`` latents are the
  history (C, Fh, h, w) and the rest the targets (C, Ft, h, w); ``Th`` must be 0 or ``1 + 4k``;
* control = [scene projection latent ⊕ mask latent] of the whole clip, the projection rendered at
  the history and the target poses and the mask ``255 - render score`` read in [0, 1]
  (:meth:`SpatiaPipeline.encode_control`, the release's convention) -> (2C, Fh + Ft, h, w);
* each reference frame alone as a 1-frame latent -> (C, K, h, w);
* the prompt's text embedding (L, D), zero beyond its tokens.

At small sizes encoding is cheap, so a dataset is encoded once and kept in memory
(:func:`encode_dataset`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError
from .data import TrainingClip

log = logging.getLogger(__name__)


@dataclass
class LatentSample:
    """One encoded clip (float tensors on the CPU).

    Attributes:
        target: (C, Ft, h, w) clean target latents.
        history: (C, Fh, h, w) clean history latents (Fh may be 0).
        references: (C, K, h, w) clean reference latents (K may be 0).
        control: (2C, Fh + Ft, h, w) control input.
        text: (L, D) prompt embedding.
    """

    target: torch.Tensor
    history: torch.Tensor
    references: torch.Tensor
    control: torch.Tensor
    text: torch.Tensor


class ClipEncoder:
    """Encodes :class:`~spatia_core.training.data.TrainingClip` objects with the sampler's encoders.

    Args:
        transformer, vae, text_encoder, tokenizer: the model's components (the transformer only
            fixes patch size and dtype here).
        max_sequence_length: prompt tokens (the release uses 512).
        device: where the VAE and text encoder run.
    """

    def __init__(self, transformer, vae, text_encoder, tokenizer, max_sequence_length: int = 512,
                 device: str | torch.device = "cpu"):
        from ..generators.spatia.checkpoint import default_scheduler
        from ..generators.spatia.pipeline import SpatiaPipeline

        self.pipe = SpatiaPipeline(transformer, vae, text_encoder, tokenizer, default_scheduler())
        self.pipe.vae.to(device)
        self.pipe.text_encoder.to(device)
        self.max_sequence_length = int(max_sequence_length)
        self.temporal = self.pipe.vae_scale_temporal

    def check_size(self, width: int, height: int) -> None:
        """Raise InputError unless the frame size is a multiple of VAE factor x patch size."""
        m = self.pipe.size_multiple
        if width % m or height % m:
            raise InputError(f"training frames must be a multiple of {m} pixels, got {width}x{height}")

    def _pad(self, frames: np.ndarray, at_end: bool = True) -> np.ndarray:
        from ..generators.spatia.pipeline import _pad_to_4k1

        return _pad_to_4k1(frames, self.temporal, at_end=at_end)

    @torch.no_grad()
    def text(self, prompt: str) -> torch.Tensor:
        """(L, D) float32 embedding of ``prompt`` (cached by the pipeline)."""
        return self.pipe.encode_prompt(prompt, self.max_sequence_length)[0].float().cpu()

    @torch.no_grad()
    def encode(self, clip: TrainingClip) -> LatentSample:
        """Encode one clip (see the module docstring)."""
        h, w = clip.target.shape[1:3]
        self.check_size(w, h)
        pipe, nh = self.pipe, len(clip.history)
        if nh and (nh - 1) % self.temporal:
            raise InputError(f"training clips need 0 or 1 + {self.temporal}k history frames, got {nh}")
        video = np.concatenate([clip.history, clip.target]) if nh else clip.target
        latents = pipe.encode_video(self._pad(video))
        fh = (nh - 1) // self.temporal + 1 if nh else 0
        history, target = latents[:, :, :fh], latents[:, :, fh:]
        scene = self._pad(clip.projection)
        score = self._pad(clip.visibility.astype(np.uint8) * 255)
        control = pipe.encode_control(scene, score)
        if len(clip.references):
            refs = pipe.encode_images(clip.references)
        else:
            refs = target[:, :, :0]
        return LatentSample(
            target=target[0].cpu(), history=history[0].cpu(), references=refs[0].cpu(), control=control[0].cpu(),
            text=self.text(clip.prompt),
        )


def encode_dataset(dataset, encoder: ClipEncoder, indices: Sequence[int] | None = None, progress: bool = False) -> list[LatentSample]:
    """Encode ``dataset[i]`` for each index (default all) into a list of :class:`LatentSample`."""
    from tqdm.auto import tqdm

    indices = range(len(dataset)) if indices is None else indices
    out = []
    for i in tqdm(indices, desc="encoding clips", disable=not progress, leave=False):
        out.append(encoder.encode(dataset[i]))
    if out:
        shapes = {(tuple(s.target.shape), tuple(s.history.shape), tuple(s.references.shape)) for s in out}
        if len(shapes) > 1:
            raise InputError(f"clips encode to different latent shapes {sorted(shapes)}; use one clip size")
    return out


def collate(samples: Sequence[LatentSample]) -> dict[str, torch.Tensor]:
    """Stack samples into a batch: ``target``, ``history``, ``references``, ``control``, ``text``."""
    if not samples:
        raise InputError("cannot collate an empty batch")
    return {name: torch.stack([getattr(s, name) for s in samples]) for name in ("target", "history", "references", "control", "text")}


@torch.no_grad()
def calibrate_latent_stats(encoder: ClipEncoder, clips: Sequence[TrainingClip]) -> tuple[list[float], list[float]]:
    """Set the VAE's ``latents_mean`` / ``latents_std`` to the per-channel statistics of ``clips``.

    For randomly initialised (tiny) VAEs only: the released Wan VAE ships calibrated statistics
    and must not be changed. Normalised latents then have unit variance, as with the real VAE, so
    the flow-matching loss weighs clean content and noise as it does at full size. The new values
    are written to ``vae.config`` (saved with the VAE). Returns ``(mean, std)``.
    """
    if not clips:
        raise InputError("calibration needs at least one clip")
    vae = encoder.pipe.vae
    z_dim = int(vae.config.z_dim)
    vae.register_to_config(latents_mean=[0.0] * z_dim, latents_std=[1.0] * z_dim)
    raw = [encoder.pipe.encode_video(encoder._pad(c.target))[0] for c in clips]
    flat = torch.cat([r.flatten(1) for r in raw], dim=1)
    mean = flat.mean(1).tolist()
    std = flat.std(1).clamp(min=1e-6).tolist()
    vae.register_to_config(latents_mean=mean, latents_std=std)
    return mean, std
