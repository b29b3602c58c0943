"""Flow matching (rectified flow, as Wan trains): noise levels, noisy inputs, targets and the loss.

Conventions (they match the sampler of :mod:`spatia_core.generators.spatia.pipeline`, the
release's FlowUniPC (:mod:`spatia_core.generators.spatia.scheduler`), whose timesteps are
``1000 * sigma``):

* a clean latent ``x0`` and Gaussian noise ``eps`` mix as ``x_t = (1 - sigma) * x0 + sigma * eps``;
* the model predicts the velocity ``v = eps - x0`` and is given ``timestep = 1000 * sigma``;
* training draws ``sigma`` from a logit-normal distribution, ``sigma = 1 / (1 + exp(-(m + s * n)))``
  with ``n ~ N(0, 1)`` (SD3's "logit-normal t"), optionally shifted like the sampler,
  ``sigma' = shift * sigma / (1 + (shift - 1) * sigma)`` (``shift = 1``: no shift);
* the preceding ("history") latent frames get a low noise level ``t_aug ~ U[0, t_aug_max]`` on the
  0-1000 scale (paper: ``t_aug_max = 50``), the same mixing rule with ``sigma = t_aug / 1000``, and
  that per-frame timestep is passed to the model; the loss covers only the target frames.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..config import Real, schema_dataclass
from ..errors import InputError

#: Timesteps are ``NUM_TRAIN_TIMESTEPS * sigma`` (diffusers' flow-matching schedulers).
NUM_TRAIN_TIMESTEPS = 1000


@schema_dataclass(frozen=True, docstrings=True)  # typed and validated like spatia_core.config (InputError)
class FlowConfig:
    """Settings of the flow-matching objective."""

    logit_mean: Real = 0.0
    """Mean ``m`` of the logit-normal noise-level distribution."""
    logit_std: Real = 1.0
    """Standard deviation ``s`` of the logit-normal distribution."""
    shift: Real = 1.0
    """Sampler-style shift applied to the drawn sigma (1 = none; the sampler uses 5 at inference)."""
    t_aug_max: Real = 50.0
    """History latents get noise at ``t_aug ~ U[0, t_aug_max]`` on the 0-1000 timestep scale."""

    def __post_init__(self):
        if not self.logit_std > 0:
            raise InputError(f"logit_std must be positive, got {self.logit_std}")
        if not self.shift > 0:
            raise InputError(f"shift must be positive, got {self.shift}")
        if not 0 <= self.t_aug_max <= NUM_TRAIN_TIMESTEPS:
            raise InputError(f"t_aug_max must be in [0, {NUM_TRAIN_TIMESTEPS}], got {self.t_aug_max}")


def shift_sigma(sigma: torch.Tensor, shift: float) -> torch.Tensor:
    """The sampler's time shift: ``shift * sigma / (1 + (shift - 1) * sigma)`` (identity for 1)."""
    return shift * sigma / (1.0 + (shift - 1.0) * sigma)


def sample_sigmas(n: int, cfg: FlowConfig = FlowConfig(), generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw ``n`` noise levels from the (shifted) logit-normal distribution; float32 (n,) in (0, 1)."""
    normal = torch.randn(n, generator=generator) * cfg.logit_std + cfg.logit_mean
    return shift_sigma(torch.sigmoid(normal), cfg.shift)


def sample_t_aug(shape, t_aug_max: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """History noise timesteps ``t_aug ~ U[0, t_aug_max]`` (0-1000 scale); float32 of ``shape``."""
    return torch.rand(shape, generator=generator) * float(t_aug_max)


def add_noise(x0: torch.Tensor, noise: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``(1 - sigma) * x0 + sigma * noise``; ``sigma`` broadcasts from (B,) or (B, F) over (B, C, F, H, W)."""
    sigma = _expand(sigma, x0)
    return (1.0 - sigma) * x0 + sigma * noise


def velocity_target(x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching regression target ``v = noise - x0``."""
    return noise - x0


def _expand(sigma: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(B,) -> (B, 1, 1, 1, 1) or (B, F) -> (B, 1, F, 1, 1) for 5-D latents (B, C, F, H, W)."""
    sigma = sigma.to(like)
    if sigma.ndim == 1:
        return sigma.view(-1, 1, 1, 1, 1)
    if sigma.ndim == 2:
        return sigma[:, None, :, None, None]
    raise InputError(f"sigma must be (B,) or (B, F), got shape {tuple(sigma.shape)}")


@dataclass
class FlowBatch:
    """Model inputs and targets for one flow-matching step.

    Attributes:
        hidden_states: (B, C, Fh + Ft, h, w): noised history latents, then noisy target latents.
        timestep: float32 (B, Fh + Ft): per-latent-frame timesteps (``t_aug`` for history frames,
            ``1000 * sigma`` for target frames).
        target: (B, C, Ft, h, w) velocity target of the target frames.
        sigma: float32 (B,) noise level of the target frames.
        num_history: Fh, the number of leading history frames (excluded from the loss).
    """

    hidden_states: torch.Tensor
    timestep: torch.Tensor
    target: torch.Tensor
    sigma: torch.Tensor
    num_history: int


def make_flow_batch(
    target_latents: torch.Tensor,
    history_latents: torch.Tensor | None,
    cfg: FlowConfig = FlowConfig(),
    generator: torch.Generator | None = None,
    sigma: torch.Tensor | None = None,
) -> FlowBatch:
    """Noise a batch for one training (or validation) step.

    Args:
        target_latents: clean (B, C, Ft, h, w) latents of the frames to generate.
        history_latents: clean (B, C, Fh, h, w) latents of the preceding frames, or None.
        cfg: the objective's settings.
        generator: CPU generator for every random draw (noise, sigma, t_aug), so a step is
            reproducible from its seed.
        sigma: fixed noise levels (B,) instead of drawing them (validation).

    Returns:
        A :class:`FlowBatch`.
    """
    if target_latents.ndim != 5:
        raise InputError(f"target latents must be (B, C, F, H, W), got shape {tuple(target_latents.shape)}")
    b, _, ft = target_latents.shape[:3]
    if sigma is None:
        sigma = sample_sigmas(b, cfg, generator)
    sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(b)
    noise = torch.randn(target_latents.shape, generator=generator).to(target_latents)
    noisy = add_noise(target_latents, noise, sigma)
    timestep = (NUM_TRAIN_TIMESTEPS * sigma)[:, None].expand(b, ft)
    fh = 0
    if history_latents is not None and history_latents.shape[2] > 0:
        if history_latents.shape[:2] != target_latents.shape[:2] or history_latents.shape[3:] != target_latents.shape[3:]:
            raise InputError(
                f"history latents {tuple(history_latents.shape)} do not match target latents {tuple(target_latents.shape)}"
            )
        fh = history_latents.shape[2]
        t_aug = sample_t_aug((b, fh), cfg.t_aug_max, generator)
        hist_noise = torch.randn(history_latents.shape, generator=generator).to(history_latents)
        history = add_noise(history_latents, hist_noise, t_aug / NUM_TRAIN_TIMESTEPS)
        noisy = torch.cat([history, noisy], dim=2)
        timestep = torch.cat([t_aug, timestep], dim=1)
    return FlowBatch(
        hidden_states=noisy,
        timestep=timestep.contiguous().to(torch.float32),
        target=velocity_target(target_latents, noise),
        sigma=sigma,
        num_history=fh,
    )


def flow_loss(prediction: torch.Tensor, batch: FlowBatch, reduction: str = "mean") -> torch.Tensor:
    """Mean squared error between the predicted and target velocity on the target frames only.

    ``prediction`` is the model output (B, C, Fh + Ft, h, w); the first ``batch.num_history``
    frames are dropped. ``reduction="none"`` gives the per-sample loss (B,).
    """
    pred = prediction[:, :, batch.num_history :]
    if pred.shape != batch.target.shape:
        raise InputError(f"prediction {tuple(prediction.shape)} does not match the target frames {tuple(batch.target.shape)}")
    err = (pred.float() - batch.target.float()).pow(2).flatten(1).mean(1)
    if reduction == "none":
        return err
    if reduction == "mean":
        return err.mean()
    raise InputError(f"reduction must be 'mean' or 'none', got {reduction!r}")
