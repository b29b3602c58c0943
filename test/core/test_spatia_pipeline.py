"""The Spatia sampler and world-loop backend on tiny random components (real tensors, CPU)."""

import json

import numpy as np
import pytest
import torch

from spatia_core.config import SpatiaConfig
from spatia_core.errors import BackendUnavailableError
from spatia_core.generators import make_generator
from spatia_core.generators.spatia.pipeline import SamplingDefaults, SpatiaPipeline, check_device
from spatia_core.generators.spatia.tiny import save_tiny_checkpoint, tiny_components, tiny_metadata
from spatia_core.world import SpatiaWorld

FAST = dict(num_inference_steps=2, progress=False)


@pytest.fixture(scope="module")
def pipe() -> SpatiaPipeline:
    return SpatiaPipeline(**tiny_components(seed=0), defaults=SamplingDefaults.from_metadata(tiny_metadata()))


def _video(n, h=40, w=70, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_release_defaults():
    d = SamplingDefaults()
    assert (d.steps, d.guidance_scale, d.shift, d.history_frames, d.first_clip_frames, d.later_clip_frames) == (
        40, 3.5, 5.0, 9, 121, 81)


def test_shapes_with_odd_frame_count_and_size(pipe):
    scene = _video(6)  # 6 is not 1 + 4k, 40 x 70 is not a multiple of 32
    vis = np.random.default_rng(1).random((6, 40, 70)) > 0.4
    out = pipe("a room", scene, vis, history_frames=_video(5, seed=2), reference_frames=_video(2, seed=3), seed=0, **FAST)
    assert out.frames.shape == (6, 40, 70, 3) and out.frames.dtype == np.uint8
    # model size 32 x 64 -> latents 2 x 4; history 5 frames -> 2 latents, 6 -> 9 target frames -> 3 latents
    assert out.latents.shape == (1, 16, 5, 2, 4)
    pt = pipe("a room", scene, vis, num_frames=5, height=24, width=36, output_type="pt", seed=0,
               guidance_scale=1.0, **FAST)
    assert pt.frames.shape == (5, 3, 24, 36) and pt.frames.dtype == torch.float32


def test_seeds(pipe):
    scene = _video(5)
    a = pipe("a room", scene, seed=7, guidance_scale=1.0, **FAST).frames
    b = pipe("a room", scene, seed=7, guidance_scale=1.0, **FAST).frames
    c = pipe("a room", scene, seed=8, guidance_scale=1.0, **FAST).frames
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_history_latents_stay_clean(pipe):
    hist = _video(9, 32, 64, seed=4)  # already at the model size: encoded as given
    out = pipe("a room", _video(5, 32, 64), history_frames=hist, output_type="latent", seed=0, **FAST)
    clean = pipe.encode_video(np.stack([hist, np.full_like(hist, 255)]))[:1]  # as the pipeline encodes it
    assert out.latents.shape[2] == 3 + 2
    torch.testing.assert_close(out.latents[:, :, :3], clean, rtol=0, atol=1e-5)
    assert not torch.allclose(out.latents[:, :, 3:], torch.zeros_like(out.latents[:, :, 3:]))


def test_guidance_one_skips_unconditional_pass_and_prompt_cache(pipe):
    calls = []
    hook = pipe.transformer.register_forward_pre_hook(lambda *a: calls.append(1))
    text_calls = []
    text_hook = pipe.text_encoder.register_forward_pre_hook(lambda *a: text_calls.append(1))
    try:
        pipe("a cozy kitchen", _video(5), guidance_scale=1.0, output_type="latent", **FAST)
        assert len(calls) == 2  # one pass per step
        calls.clear()
        hits = pipe.prompt_cache_hits
        pipe("a cozy kitchen", _video(5), guidance_scale=3.5, negative_prompt="dark", output_type="latent", **FAST)
        assert len(calls) == 4  # conditional + unconditional per step
        assert pipe.prompt_cache_hits == hits + 1  # the prompt came from the cache, only "dark" was encoded
        assert len(text_calls) == 2
    finally:
        hook.remove()
        text_hook.remove()


def test_world_loop_with_spatia_backend(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", seed=0)
    gen = make_generator("spatia", checkpoint=str(ckpt), steps=2)
    assert gen.name == "spatia" and gen.uses_references and gen.options["num_inference_steps"] == 2
    cfg = SpatiaConfig().with_overrides({
        "camera.width": 64, "camera.height": 48, "memory.voxel_size": 0.05, "render.compile": False,
        "generator.backend": "spatia", "generator.checkpoint": str(ckpt), "generator.steps": 2,
        "generator.history_frames": 5, "generator.prompt": "a room", "generator.guidance_scale": 1.0,
    })
    world = SpatiaWorld(cfg)
    assert world.generator.options["num_inference_steps"] == 2 and world.generator.history_frames == 5
    init = world.reset()
    poses = np.repeat(init.start_pose[None], 10, axis=0)
    for i in range(10):
        poses[i, :3, 3] += poses[i, :3, 2] * 0.01 * (i + 1)  # creep forward along the optical axis
    first = world.step_clip(poses[:5])
    second = world.step_clip(poses[5:])  # history = the last 5 frames; references from the bank
    for clip in (first, second):
        assert clip.frames.shape == (5, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert len(second.references) >= 1
    assert not np.array_equal(first.frames, second.frames)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(BackendUnavailableError, match="does not exist.*spatia convert.*spatia train"):
        make_generator("spatia", checkpoint=str(tmp_path / "nowhere"))
    with pytest.raises(BackendUnavailableError, match="checkpoint is empty"):
        make_generator("spatia", checkpoint="")
    (tmp_path / "half").mkdir()
    with pytest.raises(BackendUnavailableError, match="lacks transformer"):
        make_generator("spatia", checkpoint=str(tmp_path / "half"))


def test_full_size_model_on_cpu_is_refused_before_allocation(tmp_path):
    from accelerate import init_empty_weights

    from spatia_core.generators.spatia.transformer import SPATIA_5B_CONFIG, SpatiaTransformer3DModel

    with init_empty_weights():  # meta device: no memory is allocated
        big = SpatiaTransformer3DModel(**SPATIA_5B_CONFIG)
    n = sum(p.numel() for p in big.parameters())
    assert n > 5e9
    with pytest.raises(BackendUnavailableError, match="needs a CUDA GPU"):
        check_device(n, "cpu")
    ckpt = tmp_path / "big"
    for c in ("transformer", "vae", "text_encoder", "tokenizer", "scheduler"):
        (ckpt / c).mkdir(parents=True)
    big.save_config(ckpt / "transformer")  # a config without weights: loading would fail if attempted
    (ckpt / "spatia.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(BackendUnavailableError, match="B parameters and needs a CUDA GPU"):
        make_generator("spatia", checkpoint=str(ckpt), device="cpu")
