"""Our UniPC scheduler vs the Spatia release's ``FlowUniPCMultistepScheduler`` (``wan/flow_match.py``).

The release file is loaded by path and built as the release's ``call_latent_inference`` does for
``sampler == "uni_pc"``; schedules and a full denoising loop with a fixed fake model must agree.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)
import torch
from diffusers import UniPCMultistepScheduler

from spatia_core.generators.spatia.scheduler import SpatiaFlowUniPCScheduler, release_scheduler

RELEASE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "spatia_release"
SHAPE = (1, 16, 3, 4, 6)


@pytest.fixture(scope="module")
def release_cls():
    path = RELEASE / "wan" / "flow_match.py"
    if not path.is_file():
        _prereq.missing(f"the Spatia release is not at {RELEASE}: {path} is missing (only needed for this comparison)")
    spec = importlib.util.spec_from_file_location("_spatia_release_flow_match", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # flow_match.py imports diffusers only
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop(spec.name, None)
    return module.FlowUniPCMultistepScheduler


def _release(release_cls, steps: int, shift: float):
    # as in wan_video_new.py, call_latent_inference, sampler == "uni_pc"
    sched = release_cls(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)
    sched.set_timesteps(steps, device="cpu", shift=shift)
    return sched


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("steps,shift", [(40, 5.0), (10, 3.0)])
def test_schedule_matches_release(release_cls, steps, shift):
    ref = _release(release_cls, steps, shift)
    ours = release_scheduler(shift=1.0)  # the shift passed per call wins, as in the release
    ours.set_timesteps(steps, device="cpu", shift=shift)
    assert ours.timesteps.dtype == ref.timesteps.dtype == torch.int64
    assert ours.sigmas.dtype == ref.sigmas.dtype == torch.float32
    assert ours.timesteps.shape == (steps,) and ours.sigmas.shape == (steps + 1,)
    dt, ds = _max_diff(ours.timesteps, ref.timesteps), _max_diff(ours.sigmas, ref.sigmas)
    print(f"steps={steps} shift={shift}: max |dt|={dt:.3g}, max |dsigma|={ds:.3g}")
    assert dt <= 1e-6 and ds <= 1e-6
    assert ours.config.flow_shift == shift


def _denoise(sched, latents: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, **step_kwargs) -> torch.Tensor:
    """Run the whole schedule with a fixed fake flow model: v = W x (over channels) + b + t/1000."""
    x = latents.clone()
    for t in sched.timesteps:
        v = torch.einsum("oc,bcfhw->bofhw", weight, x) + bias + t.float() / 1000.0
        # the release hands the step a float32 timestep tensor
        x = sched.step(v, t.unsqueeze(0).float()[0], x, return_dict=False, **step_kwargs)[0]
    return x


def test_denoising_loop_matches_release(release_cls):
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(SHAPE, generator=g, dtype=torch.float32)
    weight = 0.1 * torch.randn(16, 16, generator=g) + 0.5 * torch.eye(16)
    bias = 0.1 * torch.randn(1, 16, 1, 1, 1, generator=g)

    ref = _denoise(_release(release_cls, 40, 5.0), latents, weight, bias, generator=torch.Generator())
    ours = release_scheduler(shift=5.0)
    ours.set_timesteps(40, device="cpu")
    out = _denoise(ours, latents, weight, bias, generator=torch.Generator())
    diff = _max_diff(out, ref)
    print(f"40-step loop: max |dx| ours vs release = {diff:.3g} (|x| max {ref.abs().max().item():.3g})")
    assert torch.isfinite(out).all()
    assert diff <= 1e-5

    # not vacuous: plain diffusers flow UniPC (sigmas from linspace(1, 1/T)) lands elsewhere
    plain = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    plain.set_timesteps(40, device="cpu")
    assert _max_diff(plain.timesteps, ours.timesteps) >= 1
    plain_diff = _max_diff(_denoise(plain, latents, weight, bias), ref)
    print(f"40-step loop: max |dx| plain diffusers vs release = {plain_diff:.3g}")
    assert plain_diff > 1e-3


def test_config_round_trip(tmp_path):
    sched = release_scheduler(shift=5.0)
    sched.save_pretrained(tmp_path)
    assert (tmp_path / "scheduler_config.json").is_file()
    loaded = SpatiaFlowUniPCScheduler.from_pretrained(tmp_path)
    assert type(loaded) is SpatiaFlowUniPCScheduler
    public = lambda c: {k: v for k, v in c.items() if not k.startswith("_")}  # noqa: E731
    assert public(loaded.config) == public(sched.config)
    copy = SpatiaFlowUniPCScheduler.from_config(sched.config)
    for s in (sched, loaded, copy):
        s.set_timesteps(40)
    assert torch.equal(loaded.timesteps, sched.timesteps) and torch.equal(loaded.sigmas, sched.sigmas)
    assert torch.equal(copy.timesteps, sched.timesteps)


def test_rejects_non_flow_config():
    with pytest.raises(ValueError, match="prediction_type"):
        SpatiaFlowUniPCScheduler()
    with pytest.raises(ValueError, match="use_dynamic_shifting"):
        SpatiaFlowUniPCScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, use_dynamic_shifting=True)
