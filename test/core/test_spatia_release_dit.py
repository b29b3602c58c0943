"""Our Spatia components vs the official release's own code (tiny random models, CPU, fp32).

The release is loaded by path from ``../shared/reference/spatia_release`` by
``test/release_oracle.py`` (skipped when absent, failed under ``CI=true``); ``tiny_pair`` builds
tiny random release models and ours with the same weights through our converters.

* DiT: our ``SpatiaTransformer3DModel`` against the release's ``model_fn_wan_video`` with the
  per-frame timestep layouts ``call_latent_inference`` uses: later rounds (timestep of length
  K + F, its first K + history entries 0, ``num_ref_frames=K``, a CFG pair), the first round
  (timestep of length 1: latent frame 0 at t = 0), and a later round without references. A
  deliberately wrong variant (our earlier control branch: over the whole sequence, zero control
  tokens at the reference positions) must exceed the tolerance.
* VAE: the release's ``WanVideoVAE38.encode`` / ``decode`` (latent normalisation included),
  ``vae_output_to_video`` and its reference-image and control units against
  ``SpatiaPipeline.encode_video`` / ``decode_latents`` / ``decode_frames`` / ``encode_images`` /
  ``encode_control``; the release's pixel conventions (``preprocess_video``,
  ``vae_output_to_video``) pinned down.
* Prompt: ``clean_prompt`` against the release's cleaning on tricky strings, and the release's
  ``WanPrompter.encode_prompt`` against ``SpatiaPipeline.encode_prompt``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from release_oracle import (
    load_release,
    our_pipeline,
    release_negative_prompt,
    release_pipeline,
    release_set_pipe_units,
    require_release,
    tiny_pair,
)

from spatia_core.generators.spatia import convert
from spatia_core.generators.spatia.prompt import clean_prompt

TOL = 1e-4
pytestmark = pytest.mark.usefixtures("torch_one_thread")
T = 731.25  # a timestep value between the scheduler's grid points
H, W = 64, 96  # pixels -> 4 x 6 latents -> 2 x 3 tokens per latent frame


@pytest.fixture(scope="module")
def release():
    require_release()
    return load_release()


@pytest.fixture(scope="module")
def pair(release):
    return tiny_pair(seed=0)


@pytest.fixture(scope="module")
def release_pipe(pair):
    return release_pipeline(pair)


@pytest.fixture(scope="module")
def ours_pipe(pair):
    return our_pipeline(pair)


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a.float() - b.float()).abs().max().item()


# ----------------------------------------------------------------------------- DiT
def _dit_inputs(pair, frames=4, refs=2, seed=1):
    s = pair.sizes
    g = torch.Generator().manual_seed(seed)
    z, h, w = s["z_dim"], H // 16, W // 16
    clip = torch.randn(1, z, frames, h, w, generator=g)
    control = torch.randn(1, 2 * z, frames, h, w, generator=g)
    reference = torch.randn(1, z, refs, h, w, generator=g) if refs else None
    contexts = torch.randn(2, 1, 12, s["t5_dim"], generator=g)
    contexts[:, :, 9:] = 0  # padded text positions are zero, as the prompter leaves them
    return clip, control, reference, contexts[0], contexts[1]


def _release_pred(R, pair, clip, timestep, context, control, reference, scale, num_ref_frames=None):
    """``model_fn_wan_video`` as ``call_latent_inference`` calls it; reference frames dropped."""
    k = 0 if reference is None else reference.shape[2]
    latents = clip if reference is None else torch.cat([reference, clip], dim=2)
    with torch.no_grad():
        out = R.model_fn_wan_video(
            dit=pair.release.dit, vace=pair.release.vace, latents=latents, timestep=timestep, context=context,
            vace_context=control, vace_scale=scale, num_ref_frames=k if num_ref_frames is None else num_ref_frames,
            fuse_vae_embedding_in_latents=True,
        )
    return out[:, :, k:]


def _our_pred(model, clip, frame_t, context, control, reference, scale):
    with torch.no_grad():
        return model(clip, frame_t, context, control_hidden_states=control, reference_latents=reference,
                     control_scale=scale).sample


def _later_round_timesteps(frames: int, refs: int, history: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(release, ours): the release repeats t over refs + frames and zeroes refs + history."""
    t_release = torch.tensor([T]).repeat(refs + frames)
    t_release[: refs + history] = 0
    t_ours = torch.full((1, frames), T)
    t_ours[:, :history] = 0
    return t_release, t_ours


def test_release_dit_parameters_are_diffsynths_and_convert_strictly(pair):
    """The release's WanModel / VaceWanModel hold exactly DiffSynth 1.1.9's tensors: ``freqs`` and
    ``ref_freqs`` are tuples computed in ``__init__`` (not parameters, not buffers), so the
    converter has nothing extra to map and rejects nothing."""
    import diffsynth_reference  # registered by release_oracle

    mods = diffsynth_reference.load_modules()
    dit, vace = pair.release.dit, pair.release.vace
    with torch.device("meta"):
        ds = mods.WanModel(
            dim=dit.dim, in_dim=pair.sizes["z_dim"], ffn_dim=pair.sizes["dit_ffn"], out_dim=pair.sizes["z_dim"],
            text_dim=pair.sizes["t5_dim"], freq_dim=dit.freq_dim, eps=1e-6, patch_size=(1, 2, 2),
            num_heads=pair.sizes["dit_heads"], num_layers=len(dit.blocks), has_image_input=False,
            seperated_timestep=True, require_vae_embedding=False, require_clip_embedding=False,
            fuse_vae_embedding_in_latents=True,
        )
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    assert shapes(dit) == shapes(ds)
    assert not list(dit.named_buffers()) and not list(vace.named_buffers())
    assert isinstance(dit.ref_freqs, tuple) and not any("freqs" in k for k in dit.state_dict())
    state = {**dit.state_dict(), **vace.state_dict()}
    converted = convert.convert_diffsynth_state_dict(state, convert.expected_shapes(pair.transformer_config))
    assert len(converted) == len(state)


def test_later_round_references_history_control_and_cfg_match_release(release, pair):
    model = pair.ours.transformer
    frames, refs, history, scale, cfg = 4, 2, 3, 0.7, 3.5
    clip, control, reference, posi, nega = _dit_inputs(pair, frames=frames, refs=refs)
    t_release, t_ours = _later_round_timesteps(frames, refs, history)
    want_p = _release_pred(release, pair, clip, t_release, posi, control, reference, scale)
    want_n = _release_pred(release, pair, clip, t_release, nega, control, reference, scale)
    got_p = _our_pred(model, clip, t_ours, posi, control, reference, scale)
    got_n = _our_pred(model, clip, t_ours, nega, control, reference, scale)
    want = want_n + cfg * (want_p - want_n)
    got = got_n + cfg * (got_p - got_n)
    diffs = {"posi": _max_diff(got_p, want_p), "nega": _max_diff(got_n, want_n), "cfg": _max_diff(got, want)}
    print("later round, K=2 refs + 3 history + 1 target latent frames, max abs diff:",
          {k: f"{v:.2e}" for k, v in diffs.items()})
    assert max(diffs.values()) <= TOL
    # not vacuous: references, control and text all change the prediction
    assert _max_diff(_our_pred(model, clip, t_ours, posi, control, None, scale), got_p) > 1e-3
    assert _max_diff(_our_pred(model, clip, t_ours, posi, None, reference, scale), got_p) > 1e-3
    assert _max_diff(got_p, got_n) > 1e-3


def test_first_round_layout_matches_release(release, pair):
    """First round: a timestep of length 1; ``model_fn_wan_video`` puts latent frame 0 (the fused
    input image) at t = 0 and every other frame at t."""
    clip, control, _, posi, _ = _dit_inputs(pair, frames=3, refs=0, seed=2)
    want = _release_pred(release, pair, clip, torch.tensor([T]), posi, control, None, 1.0)
    t_ours = torch.tensor([[0.0, T, T]])
    got = _our_pred(pair.ours.transformer, clip, t_ours, posi, control, None, 1.0)
    diff = _max_diff(got, want)
    print(f"first round (frame 0 at t=0), max abs diff {diff:.2e}")
    assert diff <= TOL


def test_later_round_without_references_matches_release(release, pair):
    frames, history = 4, 3
    clip, control, _, posi, _ = _dit_inputs(pair, frames=frames, refs=0, seed=3)
    t_release, t_ours = _later_round_timesteps(frames, 0, history)
    want = _release_pred(release, pair, clip, t_release, posi, control, None, 1.0)
    got = _our_pred(pair.ours.transformer, clip, t_ours, posi, control, None, 1.0)
    diff = _max_diff(got, want)
    print(f"later round without references, max abs diff {diff:.2e}")
    assert diff <= TOL


def test_wrong_variants_exceed_tolerance(release, pair, monkeypatch):
    """Two deliberately wrong variants must fail the comparison: (1) our earlier control branch
    (over the whole sequence, zero control tokens at the reference positions, hints cut to the
    clip), emulated by wrapping our control blocks; (2) the release told ``num_ref_frames=0``."""
    model = pair.ours.transformer
    frames, refs, history = 4, 2, 3
    clip, control, reference, posi, _ = _dit_inputs(pair, frames=frames, refs=refs, seed=4)
    t_release, t_ours = _later_round_timesteps(frames, refs, history)
    want = _release_pred(release, pair, clip, t_release, posi, control, reference, 1.0)

    captured = {}
    hook = model.blocks[0].register_forward_pre_hook(lambda _m, args: captured.update(args=args))
    right = _our_pred(model, clip, t_ours, posi, control, reference, 1.0)
    hook.remove()
    x_full, _, temb_full, rotary_full = captured["args"]  # main block 0's inputs: all tokens
    n_ref = refs * (H // 32) * (W // 32)
    for block in model.vace_blocks:
        def old_forward(_x, context, c, _temb, _rotary, _block_forward=block.forward, _first=block.proj_in is not None):
            if _first:  # zero control tokens at the reference positions
                c = torch.cat([c.new_zeros(c.shape[0], n_ref, c.shape[2]), c], dim=1)
            hint, c = _block_forward(x_full, context, c, temb_full, rotary_full)
            return hint[:, n_ref:], c

        monkeypatch.setattr(block, "forward", old_forward)
    old = _our_pred(model, clip, t_ours, posi, control, reference, 1.0)
    monkeypatch.undo()
    mismatched = _release_pred(release, pair, clip, t_release, posi, control, reference, 1.0, num_ref_frames=0)
    diffs = {"right": _max_diff(right, want), "old control branch": _max_diff(old, want),
             "num_ref_frames=0": _max_diff(mismatched, want)}
    print("wrong variants vs release, max abs diff:", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert diffs["right"] <= TOL
    assert diffs["old control branch"] > 100 * TOL
    assert diffs["num_ref_frames=0"] > 100 * TOL


# ----------------------------------------------------------------------------- VAE
def _video(n: int, seed: int) -> np.ndarray:
    """Smooth-ish random uint8 frames (N, H, W, 3): noise on a per-frame colour gradient."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, W)[None, None, :, None] * rng.uniform(60, 200, (n, 1, 1, 3))
    return np.clip(ramp + rng.normal(0, 25, (n, H, W, 3)) + 30, 0, 255).astype(np.uint8)


def test_vae_encode_decode_match_release(release_pipe, ours_pipe):
    """``WanVideoVAE38.encode`` / ``decode`` (normalisation ``(mu - mean) * (1 / std)`` inside,
    decode clamped to [-1, 1]) and ``vae_output_to_video`` against ``encode_video`` /
    ``decode_latents`` / ``decode_frames``."""
    frames = _video(9, seed=5)
    video = release_pipe.preprocess_video(list(frames))  # (1, 3, 9, H, W) in [-1, 1]
    with torch.no_grad():
        want_z = release_pipe.vae.encode(video, device="cpu", tiled=False)
        want_x = release_pipe.vae.decode(want_z, device="cpu", tiled=False)
    want_u8 = np.stack([np.asarray(im) for im in release_pipe.vae_output_to_video(want_x)])
    got_z = ours_pipe.encode_video(frames)
    got_x = ours_pipe.decode_latents(want_z).permute(1, 0, 2, 3)[None]  # (N, 3, H, W) -> (1, 3, N, H, W)
    got_u8 = ours_pipe.decode_frames(want_z)
    assert want_z.shape == (1, 8, 3, H // 16, W // 16) and want_x.shape == video.shape
    assert (want_x.abs() < 1).float().mean() > 0.9  # the clamp hides little of the comparison
    enc, dec = _max_diff(got_z, want_z), _max_diff(got_x, want_x)
    u8 = np.abs(got_u8.astype(int) - want_u8).max()
    print(f"VAE 9x{H}x{W}: max abs diff encode {enc:.2e} decode {dec:.2e} uint8 {u8} "
          f"(uint8 differing: {(got_u8 != want_u8).mean():.1e})")
    assert enc <= TOL and dec <= TOL
    assert u8 <= 1 and (got_u8 != want_u8).mean() < 1e-3  # truncation flips only at float ties


def test_reference_and_control_latents_match_release(release, release_pipe, ours_pipe):
    """The release's ``WanVideoUnit_RefImageEmbedderFused`` (each image its own 1-frame latent)
    and ``WanVideoUnit_ControlNetAsVACEEmbedder`` (scene in [-1, 1] ⊕ mask in [0, 1], the mask
    being ``255 - render score``) against ``encode_images`` / ``encode_control``."""
    new = release.wan_video_new
    refs = _video(3, seed=6)
    scene = _video(9, seed=7)
    score = np.random.default_rng(8).integers(0, 256, (9, H, W), dtype=np.uint8)
    mask = [np.repeat(255 - s[..., None], 3, axis=-1) for s in score]  # what inference.py passes
    with torch.no_grad():
        ref = new.WanVideoUnit_RefImageEmbedderFused().process(
            release_pipe, latents=torch.zeros(1, 8, 1, H // 16, W // 16), height=H, width=W, tiled=False,
            tile_size=None, tile_stride=None, ref_images=[Image.fromarray(f) for f in refs])
        control = new.WanVideoUnit_ControlNetAsVACEEmbedder().process(
            release_pipe, control_video=list(scene), control_score=mask, vace_scale=None, num_frames=9,
            height=H, width=W, tiled=False, tile_size=None, tile_stride=None)
    diffs = {"references": _max_diff(ours_pipe.encode_images(refs), ref["ref_frame_latents"]),
             "control": _max_diff(ours_pipe.encode_control(scene, score), control["vace_context"])}
    print("reference / control latents, max abs diff:", {k: f"{v:.2e}" for k, v in diffs.items()})
    assert max(diffs.values()) <= TOL


def test_release_pixel_conventions(release_pipe):
    """``preprocess_video``: x * 2/255 - 1 (``min_value=0, max_value=1``: x / 255, the release's
    control-score convention); ``vae_output_to_video``: uint8 by truncation of (v + 1) * 127.5
    clipped to [0, 255], not rounding."""
    frames = _video(5, seed=7)
    video = release_pipe.preprocess_video(list(frames))[0].permute(1, 2, 3, 0).numpy()
    np.testing.assert_allclose(video, frames / 127.5 - 1, rtol=0, atol=1e-6)
    score = release_pipe.preprocess_video(list(frames), min_value=0, max_value=1)[0].permute(1, 2, 3, 0).numpy()
    np.testing.assert_allclose(score, frames / 255, rtol=0, atol=1e-6)
    v = torch.linspace(-1.1, 1.1, 5 * 4 * 6 * 3).reshape(1, 3, 5, 4, 6)
    out = np.stack([np.asarray(im) for im in release_pipe.vae_output_to_video(v)])
    scaled = np.clip((v[0].permute(1, 2, 3, 0).numpy() + 1) * 127.5, 0, 255)
    assert np.array_equal(out, scaled.astype(np.uint8))  # truncation
    assert (np.round(scaled).astype(np.uint8) != out).any()  # which rounding would not reproduce


# ----------------------------------------------------------------------------- prompt
def _tricky_prompts() -> list[str]:
    return [
        "  A  bright\tkitchen\n\nwith  a   table  ",
        "Tom &amp; Jerry &lt;3 &amp;amp; friends &quot;quoted&quot;",
        "<b>bold</b> &amp; tags",
        "caf\u00c3\u00a9 au lait, the Mona Lisa doesn\u00c3\u00a2\u00e2\u201a\u00ac\u00e2\u201e\u00a2t smile",
        "\u201csmart quotes\u201d \u2014 dashes\u2026",
        "中文提示：一个明亮的厨房，  阳光  照进来。",
        "&#28;sep&#x85;nel\u3000ideographic\u00a0nbsp\u2028line\u202fnarrow\x1cfs",
        "\x00\x07control\x1bchars\x7f and \r\n windows",
        "ＦＵＬＬＷＩＤＴＨ 🙂 emoji",
        "",
        "   \n\t ",
        "a room 4K, realistic, high quality, HDR.",
        release_negative_prompt(),
    ]


def test_clean_prompt_matches_release(release_pipe):
    release_clean = release_pipe.prompter.tokenizer._clean  # HuggingfaceTokenizer(clean="whitespace")
    for text in _tricky_prompts():
        assert clean_prompt(text) == release_clean(text), repr(text)


def test_default_negative_prompt_is_the_releases(release):
    from spatia_core.generators.spatia.pipeline import SamplingDefaults

    assert SamplingDefaults().negative_prompt == release_negative_prompt()


def test_prompt_embeddings_match_release(release_pipe, ours_pipe):
    """``WanPrompter.encode_prompt``: clean, pad / truncate to 512 tokens (``</s>`` kept), umT5
    with the attention mask, zero every position past the prompt's tokens. ``encode_prompt``
    cleans with :func:`clean_prompt` (without cleaning, an HTML-entity prompt differs)."""
    long_prompt = " ".join(["the camera moves slowly through a bright modern kitchen"] * 80)  # > 512 tokens
    entities = "a  bright&nbsp;kitchen &amp;amp; living room"
    prompts = [entities, "a room 4K, realistic, high quality, HDR.", release_negative_prompt(), "", long_prompt]
    for text in prompts:
        with torch.no_grad():
            want = release_pipe.prompter.encode_prompt(text, positive=True, device="cpu")
        got = ours_pipe.encode_prompt(text)
        assert want.shape == got.shape == (1, 512, 32)
        n = len(ours_pipe.tokenizer(clean_prompt(text), truncation=True, max_length=512).input_ids)
        assert not want[:, n:].any() and not got[:, n:].any() and want[:, n - 1].abs().sum() > 0
        diff = _max_diff(got, want)
        print(f"prompt {text[:24]!r}... ({n} tokens): max abs diff {diff:.2e}")
        assert diff <= TOL
    with torch.no_grad():
        want = release_pipe.prompter.encode_prompt(entities, positive=True, device="cpu")
    assert _max_diff(ours_pipe.encode_prompt(entities, clean=False), want) > 1e-2


# ----------------------------------------------------------------------------- the oracle itself
@pytest.mark.filterwarnings("ignore:Accessing config attribute:FutureWarning")  # the release's scheduler
def test_release_pipeline_runs_both_round_layouts(pair):
    """``release_pipeline`` runs the release's ``call_latent_inference`` on the CPU: the first round
    (input image fused at latent frame 0) and a later round (9 history frames -> 3 clean latent
    frames, 2 reference images, 13 frames)."""
    pipe = release_pipeline(pair)
    frames = _video(13, seed=8)
    control, score = list(_video(13, seed=9)), [np.full((H, W, 3), 255, np.uint8)] * 13
    common = dict(prompt="a room", negative_prompt="", seed=0, tiled=False, height=H, width=W, num_inference_steps=2,
                  cfg_scale=3.5, return_latents=True, verbose=False)
    video, latents = pipe.call_latent_inference(input_image=Image.fromarray(frames[0]), control_video=control[:9],
                                                control_score=score[:9], num_frames=9, **common)
    assert len(video) == 9 and video[0].size == (W, H) and latents.shape == (1, 8, 3, H // 16, W // 16)
    first = pipe.vae.encode(pipe.preprocess_video([frames[0]]), device="cpu")
    torch.testing.assert_close(latents[:, :, :1], first, rtol=0, atol=1e-6)  # frame 0 stays the image

    release_set_pipe_units(pipe, hist_frames=9, use_history=True)
    history = [Image.fromarray(f) for f in frames[:9]]
    video, latents = pipe.call_latent_inference(
        input_video=history, ref_images=[Image.fromarray(f) for f in frames[10:12]], ar_hist_latents_num=3,
        control_video=control, control_score=score, num_frames=13, **common)
    assert len(video) == 13 and latents.shape == (1, 8, 4, H // 16, W // 16)  # references removed
    hist = pipe.vae.encode(pipe.preprocess_video(history), device="cpu")
    torch.testing.assert_close(latents[:, :, :3], hist, rtol=0, atol=1e-6)  # history stays clean
