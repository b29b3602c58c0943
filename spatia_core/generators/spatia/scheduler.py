"""The Spatia release's UniPC sampler, as a diffusers scheduler.

The release samples with ``FlowUniPCMultistepScheduler`` (Wan's ``wan/flow_match.py``), built as
``FlowUniPCMultistepScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)``
and set per call with ``set_timesteps(steps, device=..., shift=sigma_shift)``. Its UniPC update
(order 2, ``bh2``, predict-x0, lower-order final step, corrector on every step after the first)
is the one in diffusers' ``UniPCMultistepScheduler`` with ``prediction_type="flow_prediction"``
and ``use_flow_sigmas=True``; only the noise schedule differs:

* release: unshifted sigmas ``linspace(float32(1 - 1/T), 0, N + 1)[:-1]``, i.e. 0.99900001..
  down to 0.999/N;
* diffusers 0.42: ``linspace(1, 1/T, N + 1)[:-1]``, i.e. 1 down to 1/N + 0.001 (N - 1)/N.

Both then shift ``s' = k s / (1 + (k - 1) s)`` in float64, take ``timesteps = int64(s' T)``
(truncated, not rounded) and append a final sigma 0. With 40 steps and shift 5 the two schedules'
timesteps differ by up to 4. :class:`SpatiaFlowUniPCScheduler` feeds the release's unshifted
sigmas into diffusers' own ``set_timesteps(sigmas=...)``, which does the rest exactly as the
release does, so both ``sigmas`` and ``timesteps`` are bit-identical to the release's
(``test/core/test_spatia_scheduler.py`` checks this against the release file, and a 40-step
denoising loop).
"""

from __future__ import annotations

import functools

import numpy as np
import torch
from diffusers import UniPCMultistepScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin, SchedulerOutput  # noqa: F401 - SchedulerMixin: diffusers' pipeline loader looks it up here

__all__ = ["SpatiaFlowUniPCScheduler", "release_scheduler"]


class SpatiaFlowUniPCScheduler(UniPCMultistepScheduler):
    """diffusers' UniPC with the noise schedule of the Spatia release's ``FlowUniPCMultistepScheduler``.

    What matches the release, and how:

    * ``set_timesteps(N, shift=k)``: ``sigmas`` (float32, shape ``(N + 1,)``, on the CPU, last
      entry 0) and ``timesteps`` (int64, shape ``(N,)``, on ``device``) equal the release's
      bit for bit. Overridden: the release's unshifted sigmas are passed to diffusers'
      ``set_timesteps(sigmas=...)``; the shift, the int64 truncation, the final zero sigma and
      the reset of the multistep state are diffusers' own code.
    * ``step``: diffusers' UniPC update unchanged; with the release's settings (solver order 2,
      ``bh2``, ``predict_x0``, ``lower_order_final``, no disabled corrector, flow prediction
      ``x0 = x - sigma * v``, ``alpha = 1 - sigma``) it is the release's update. The override only
      accepts the release's ``generator`` argument (which the release also ignores).

    Construct with :func:`release_scheduler`, or ``from_config`` / ``from_pretrained`` a
    ``scheduler_config.json`` written by ``save_pretrained``. The config must describe flow
    matching (``prediction_type="flow_prediction"``, ``use_flow_sigmas=True``, no dynamic
    shifting, no Karras/exponential/beta sigmas, final sigma ``"zero"``); anything else raises
    ``ValueError`` at construction. One difference in the corner: diffusers nudges a first sigma
    within 1e-6 of 1 down by 1e-6, which the release schedule reaches only for shifts above ~1000.
    """

    # The constructor keeps diffusers' signature (``wraps`` exposes it to ``from_config``, which
    # reads the init keys from ``inspect.signature``), so the config round-trips unchanged; the
    # override only checks that the config is the flow-matching one this class is written for.
    @functools.wraps(UniPCMultistepScheduler.__init__)
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        c = self.config
        wrong = {
            "prediction_type": (c.prediction_type, "flow_prediction"),
            "use_flow_sigmas": (c.use_flow_sigmas, True),
            "use_dynamic_shifting": (c.use_dynamic_shifting, False),
            "use_karras_sigmas": (c.use_karras_sigmas, False),
            "use_exponential_sigmas": (c.use_exponential_sigmas, False),
            "use_beta_sigmas": (c.use_beta_sigmas, False),
            "final_sigmas_type": (c.final_sigmas_type, "zero"),
            "shift_terminal": (c.shift_terminal, None),
        }
        wrong = {k: v for k, v in wrong.items() if v[0] != v[1]}
        if wrong:
            detail = ", ".join(f"{k}={got!r} (needs {need!r})" for k, (got, need) in wrong.items())
            raise ValueError(f"SpatiaFlowUniPCScheduler is a flow-matching scheduler: {detail}")

    def set_timesteps(
        self,
        num_inference_steps: int,
        device: str | torch.device | None = None,
        shift: float | None = None,
    ) -> None:
        """Set the release's schedule for ``num_inference_steps`` steps.

        ``shift`` (the release's ``sigma_shift``) defaults to ``config.flow_shift``. diffusers
        reads the shift from the config while the release passes it per call, so a given
        ``shift`` is written into ``config.flow_shift`` (and is what ``save_pretrained`` records).

        Result: ``self.sigmas`` float32 ``(N + 1,)`` = ``k s / (1 + (k - 1) s)`` for
        ``s = linspace(float32(1 - 1/T), 0, N + 1)[:-1]``, then 0; ``self.timesteps`` int64
        ``(N,)`` = ``int64(sigmas[:-1] * T)`` computed in float64, truncated.
        """
        if shift is not None and float(shift) != self.config.flow_shift:
            self.register_to_config(flow_shift=float(shift))
        train_steps = self.config.num_train_timesteps
        # The release's training sigmas are 1 - linspace(1/T, 1, T) stored in float32, and its
        # set_timesteps spans [sigma_max, sigma_min] = [float32(1 - 1/T), 0] (diffusers: [1, 1/T]).
        sigma_max = float(np.float32(1.0 - 1.0 / train_steps))
        sigmas = np.linspace(sigma_max, 0.0, num_inference_steps + 1)[:-1]
        super().set_timesteps(device=device, sigmas=sigmas)

    def step(
        self,
        model_output: torch.Tensor,
        timestep: int | torch.Tensor,
        sample: torch.Tensor,
        return_dict: bool = True,
        generator: torch.Generator | None = None,
    ) -> SchedulerOutput | tuple:
        """diffusers' UniPC step. ``generator`` is accepted for the release's call
        ``step(v, t, x, return_dict=False, generator=g)`` and ignored, as there: UniPC adds no noise."""
        return super().step(model_output, timestep, sample, return_dict=return_dict)


def release_scheduler(shift: float = 5.0) -> SpatiaFlowUniPCScheduler:
    """The release's sampler settings: 1000 training steps, UniPC order 2 ``bh2`` with flow
    sigmas and sigma shift ``shift`` (the release's default ``sigma_shift`` is 5)."""
    return SpatiaFlowUniPCScheduler(
        num_train_timesteps=1000,
        solver_order=2,
        prediction_type="flow_prediction",
        solver_type="bh2",
        predict_x0=True,
        lower_order_final=True,
        use_flow_sigmas=True,
        flow_shift=float(shift),
        final_sigmas_type="zero",
    )
