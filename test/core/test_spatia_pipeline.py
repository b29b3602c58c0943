"""The Spatia sampler and world-loop backend on tiny random components (real tensors, CPU)."""

import json

import numpy as np
import pytest
import torch

from spatia_core.config import SpatiaConfig
from spatia_core.errors import BackendUnavailableError, InputError
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
    assert (d.seed, d.prompt_suffix) == (20917, " 4K, realistic, high quality, HDR.")
    assert d.negative_prompt.startswith("画面切换")


def test_shapes_with_odd_frame_count_and_size(pipe):
    scene = _video(10)  # 10 is not 1 + 4k, 40 x 70 is not a multiple of 32
    vis = np.random.default_rng(1).random((10, 40, 70)) > 0.4
    out = pipe("a room", scene, vis, known_frames=_video(5, seed=2), reference_frames=_video(2, seed=3), seed=0, **FAST)
    assert out.frames.shape == (10, 40, 70, 3) and out.frames.dtype == np.uint8
    # model size 32 x 64 -> latents 2 x 4; 10 frames padded to 13 -> 4 latents (the first 2 are the known frames)
    assert out.latents.shape == (1, 16, 4, 2, 4)
    pt = pipe("a room", scene[:5], vis[:5], num_frames=5, height=24, width=36, output_type="pt", seed=0,
              guidance_scale=1.0, **FAST)
    assert pt.frames.shape == (5, 3, 24, 36) and pt.frames.dtype == torch.float32
    with pytest.raises(InputError, match="1 \\+ 4k"):
        pipe("a room", scene, vis, known_frames=_video(4, seed=2), **FAST)


def test_seeds(pipe):
    scene = _video(5)
    a = pipe("a room", scene, seed=7, guidance_scale=1.0, **FAST).frames
    b = pipe("a room", scene, seed=7, guidance_scale=1.0, **FAST).frames
    c = pipe("a room", scene, seed=8, guidance_scale=1.0, **FAST).frames
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_known_frames_stay_clean_inside_the_clip(pipe):
    hist = _video(9, 32, 64, seed=4)  # already at the model size: encoded as given
    scene = _video(13, 32, 64)
    out = pipe("a room", scene, known_frames=hist, output_type="latent", seed=0, **FAST)
    clean = pipe.encode_video(hist)
    assert out.latents.shape[2] == 4  # 13 frames -> 4 latents, the first 3 are the 9 known frames
    torch.testing.assert_close(out.latents[:, :, :3], clean, rtol=0, atol=1e-5)
    assert not torch.allclose(out.latents[:, :, 3:], torch.zeros_like(out.latents[:, :, 3:]))


def test_mask_video_is_the_release_polarity(pipe):
    """Mask = 255 - render score, read in [0, 1]: a hole is 1, a covered pixel 0."""
    from spatia_core.generators.spatia.pipeline import mask_video

    vis = np.zeros((1, 32, 64), bool)
    vis[:, :, :32] = True
    m = mask_video(vis, vis.shape)
    assert m.shape == (1, 32, 64, 3) and m.dtype == np.uint8
    assert (m[:, :, :32] == 0).all() and (m[:, :, 32:] == 255).all()
    soft = np.full((1, 32, 64), 200, np.uint8)
    assert (mask_video(soft, soft.shape) == 55).all()
    scene = _video(1, 32, 64)
    control = pipe.encode_control(scene, vis)
    expected = torch.cat([pipe.encode_video(scene), pipe.encode_video(m, value_range=(0.0, 1.0))], dim=1)
    torch.testing.assert_close(control, expected, rtol=0, atol=0)
    flipped = torch.cat([pipe.encode_video(scene), pipe.encode_video(255 - m)], dim=1)  # the old polarity and range
    assert (control - flipped).abs().max() > 1e-3


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


def _creeping_poses(start, n, step=0.01):
    poses = np.repeat(start[None], n, axis=0)
    for i in range(n):
        poses[i, :3, 3] += poses[i, :3, 2] * step * (i + 1)  # creep forward along the optical axis
    return poses


def test_world_loop_with_spatia_backend_stream_layout(tmp_path):
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", seed=0)
    gen = make_generator("spatia", checkpoint=str(ckpt), steps=2)
    assert gen.name == "spatia" and gen.uses_references and gen.options["num_inference_steps"] == 2
    cfg = SpatiaConfig().with_overrides({
        "camera.width": 64, "camera.height": 48, "memory.voxel_size": 0.05, "render.compile": False,
        "generator.backend": "spatia", "generator.checkpoint": str(ckpt), "generator.steps": 2,
        "generator.layout": "stream", "retrieval.method": "iou",
        "generator.history_frames": 5, "generator.prompt": "a room", "generator.guidance_scale": 1.0,
    })
    world = SpatiaWorld(cfg)
    assert world.generator.options["num_inference_steps"] == 2 and world.generator.history_frames == 5
    assert world.layout == "stream" and world.retrieval_method == "iou"
    init = world.reset()
    poses = _creeping_poses(init.start_pose, 10)
    first = world.step_clip(poses[:5])
    second = world.step_clip(poses[5:])  # history = the last 5 frames; references from the bank
    for clip in (first, second):
        assert clip.frames.shape == (5, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert len(second.references) >= 1
    assert not np.array_equal(first.frames, second.frames)


def test_world_loop_release_layout_rounds(tmp_path, monkeypatch):
    """Release layout: the start pose is frame 0, then 120 new frames, then 72 per round (81 with the
    9 known ones), LoRA off in round 1 and on later, one seed for every round, the release's
    retrieval from round 2, and the final video decoded from all rounds' latents."""
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", seed=0)
    cfg = SpatiaConfig().with_overrides({
        "camera.width": 32, "camera.height": 32, "memory.voxel_size": 0.05, "render.compile": False,
        "generator.backend": "spatia", "generator.checkpoint": str(ckpt), "generator.steps": 1,
        "generator.prompt": "a room", "generator.guidance_scale": 1.0,
    })
    world = SpatiaWorld(cfg)
    assert world.layout == "release" and world.retrieval_method == "release" and world.bank.lossless
    calls = []
    real = world.generator.pipe.__class__.__call__

    def spy(pipe, *args, **kwargs):
        calls.append({k: kwargs[k] for k in ("num_frames", "seed", "use_lora", "prompt")} |
                     {"known": len(kwargs["known_frames"]), "refs": 0 if kwargs["reference_frames"] is None
                      else len(kwargs["reference_frames"]), "control": len(kwargs["control_video"])})
        return real(pipe, *args, **kwargs)

    monkeypatch.setattr(world.generator.pipe.__class__, "__call__", spy)
    init = world.reset()
    poses = _creeping_poses(init.start_pose, 200, step=0.002)
    poses[0] = init.start_pose  # a test case's first pose is the input image's
    clips = list(world.run(poses))
    assert [len(c.frames) for c in clips] == [120, 72, 7]  # 199 new frames
    assert [c["num_frames"] for c in calls] == [121, 81, 81]
    assert [c["known"] for c in calls] == [1, 9, 9]
    assert [c["control"] for c in calls] == [121, 81, 16]  # padded to 81 inside the pipeline
    assert [c["use_lora"] for c in calls] == [False, True, True]
    assert {c["seed"] for c in calls} == {20917}
    assert calls[0]["prompt"] == "a room 4K, realistic, high quality, HDR."
    assert calls[0]["refs"] == 0 and 1 <= calls[1]["refs"] <= 7
    video = world.final_video()
    assert video.shape == (1 + 199, 32, 32, 3) and video.dtype == np.uint8
    assert len(world.final_video(trim=False)) == 121 + 72 + 72  # the release keeps the last round's padding


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
