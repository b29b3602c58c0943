"""Speed of one Spatia sampling round, ours vs the official release's own code, on the same weights.

What is timed (per round, wall clock with CUDA synchronised, peak ``torch.cuda.max_memory_allocated``):

* ``ours``: :class:`SpatiaPipeline` ``pipe(...)`` end to end: prompt + negative prompt through the
  text encoder, VAE encodes (control video, mask video, known frames, references), the FlowUniPC
  loop with classifier-free guidance, the VAE decode of the whole clip, uint8 frames out;
* ``release``: the release's ``WanVideoPipeline.call_latent_inference`` (``wan/wan_video_new.py``,
  loaded from ``../shared/reference/spatia_release`` by ``test/release_oracle.py``) with the units
  its ``inference.py`` sets per round (``set_pipe_units``), called with the arguments
  ``inference.py`` passes (``tiled=False``, ``sampler="uni_pc"``, PIL frames, the score video as
  ``255 - score``), same end-to-end work. The release's ``enable_vram_management`` (CPU offload
  of idle models between phases) is NOT enabled: every model stays resident on the GPU, so the
  comparison measures the two implementations' compute, not PCIe traffic.

Two rounds, the release's structure: ``first`` (121 frames, the input image as frame 0, no
references) and ``later`` (81 frames whose first 9 are known, 7 reference frames), 704x1248, CFG
3.5, shift 5, seed 20917, the release's negative prompt. ``loop s`` is the denoising loop alone
(first DiT pass start to last DiT pass end, timed by forward hooks), ``s/step`` = loop / steps;
everything else (text, VAE encodes, decode) is "fixed" cost. The default is 10 steps, not the
release's 40, so that the whole GPU run fits in about 5 minutes (an estimate); the table adds a
40-step estimate per run (fixed + 40 x s/step). ``s/frame`` divides by the clip's frame count
(known frames included). On CUDA a short round of each kind runs first, untimed (warm-up). Each
round also reports release/ours (end to end and loop) and the max abs difference of the final
latents (and of the uint8 frames) between the two: bf16 noise on the GPU, <= 1e-4 in float32.

Models: random weights (speed does not depend on their values). Ours (``SpatiaTransformer3DModel``
in the Wan2.2-TI2V-5B + 8 control blocks configuration, diffusers ``AutoencoderKLWan`` (Wan2.2
VAE), transformers ``UMT5EncoderModel`` (umT5-XXL)) are built on the meta device, materialised with
``to_empty``, randomly initialised and cast to the run dtype except the few modules diffusers keeps
in float32 (``_keep_in_fp32_modules``, as our checkpoint loader's ``from_pretrained`` does). The
release's ``WanModel`` / ``VaceWanModel`` / ``WanVideoVAE38`` / ``WanTextEncoder`` are built
without weights (DiffSynth's ``init_weights_on_device``, as its model manager builds them) and
given OUR tensors under the release's names (our converters' key maps,
``load_state_dict(assign=True)``): the weights are held once, shared by both implementations;
only our float32-kept tensors (~20 MiB: time embedder, modulation tables, norms) get run-dtype
copies, as DiffSynth loads everything in bf16. The run prints how many release parameters share
our storage. A word-level tokenizer stands in for the umT5 tokenizer (prompts are padded to 512
tokens either way).

    python bench/bench_spatia_gpu.py                         # CUDA, full size, bf16 (26 GB weights, ~5 min, H200)
    python bench/bench_spatia_gpu.py --steps 40 --runs later # the release's step count, one round
    python bench/bench_spatia_gpu.py --tiny --device cpu     # the same code on tiny models, fp32 (~15 s idle)

``--tiny`` uses tiny models (``test/release_oracle.py`` ``TINY`` sizes), 17- and 21-frame rounds at
64x96 and 2 steps, and fails unless ours and the release agree to 1e-4 (float32). Results: a
table on stdout and JSON (``--out``).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "test"))  # release_oracle: the release's own code, loaded by path

from spatia_core.generators.spatia import convert  # noqa: E402
from spatia_core.generators.spatia.pipeline import RELEASE_NEGATIVE_PROMPT, SpatiaPipeline, resolve_dtype  # noqa: E402

PROMPT = "a bright modern living room with a wooden table 4K, realistic, high quality, HDR."  # suffix as inference.py
SEED = 20917  # inference.py's default seed
TINY_TOL = 1e-4  # ours vs release, final latents, float32 (--tiny)
HISTORY = 9  # known frames of a later round (-> 3 latent frames)


@dataclass(frozen=True)
class Sizes:
    """Model sizes (the field names of ``release_oracle.TINY``)."""

    z_dim: int = 48  # VAE latent channels
    vae_dim: int = 160  # VAE encoder base width
    vae_dec_dim: int = 256  # VAE decoder base width
    vae_dim_mult: tuple = (1, 2, 4, 4)
    vae_res_blocks: int = 2
    dit_heads: int = 24
    dit_head_dim: int = 128
    dit_ffn: int = 14336
    dit_layers: int = 30
    vace_layers: tuple = (0, 4, 8, 12, 16, 20, 24, 28)  # control blocks at these main blocks
    freq_dim: int = 256
    t5_vocab: int = 256384
    t5_dim: int = 4096
    t5_heads: int = 64
    t5_ffn: int = 10240
    t5_layers: int = 24
    t5_buckets: int = 32

    def transformer_config(self) -> dict:
        from spatia_core.generators.spatia.transformer import SPATIA_5B_CONFIG

        return dict(SPATIA_5B_CONFIG, num_attention_heads=self.dit_heads, attention_head_dim=self.dit_head_dim,
                    in_channels=self.z_dim, out_channels=self.z_dim, text_dim=self.t5_dim, freq_dim=self.freq_dim,
                    ffn_dim=self.dit_ffn, num_layers=self.dit_layers, vace_layers=list(self.vace_layers),
                    vace_in_channels=2 * self.z_dim)


FULL = Sizes()  # Wan2.2-TI2V-5B + 8 control blocks, Wan2.2 VAE, umT5-XXL


# ----------------------------------------------------------------------------- our models
def _random_init_(model: torch.nn.Module, seed: int) -> None:
    """Random parameters that keep activations at unit scale at any width: matrices / kernels
    N(0, 1/fan_in), norm gains 1 + 0.1·N(0, 1), biases and other vectors 0.02·N(0, 1)."""
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.02, generator=g)
            elif "norm" in name or name.endswith("gamma"):
                p.normal_(1.0, 0.1, generator=g)
            elif p.ndim >= 2:
                p.normal_(0.0, p[0].numel() ** -0.5, generator=g)
            else:
                p.normal_(0.0, 0.02, generator=g)


def _materialise(build, device, dtype, seed, small_build=None):
    """``build()`` on meta -> run dtype, except the modules a diffusers model keeps in float32
    (``_keep_in_fp32_modules``, as ``from_pretrained(torch_dtype=...)`` in our checkpoint loader
    keeps them) -> ``to_empty(device)`` -> random init; buffers (rotary tables, float32) from
    ``small_build()`` (the same module tree with fewer blocks, built for real)."""
    from diffusers import ModelMixin

    with torch.device("meta"):
        model = build()
    keep = (getattr(model, "_keep_in_fp32_modules", None) or []) if isinstance(model, ModelMixin) else []
    for name, p in model.named_parameters():
        fp32 = any(m in name.split(".") for m in keep)  # diffusers' rule (model_loading_utils)
        p.data = p.data.to(torch.float32 if fp32 else dtype)  # still on meta: no memory
    model = model.to_empty(device=device)
    _random_init_(model, seed)
    buffers = dict(model.named_buffers())
    if buffers:
        small = dict(small_build().named_buffers())
        missing = sorted(set(buffers) - set(small))
        if missing:
            raise RuntimeError(f"cannot initialise buffers {missing}")
        for name, buf in buffers.items():
            buf.data = small[name].to(device=device)
    return model.eval().requires_grad_(False)


def build_ours(s: Sizes, device, dtype, tokenizer, seed: int = 0) -> dict:
    """Our random components (the keyword arguments of :class:`SpatiaPipeline`) on ``device``."""
    from spatia_core.generators.spatia.scheduler import release_scheduler
    from spatia_core.generators.spatia.transformer import SpatiaTransformer3DModel

    cfg = s.transformer_config()
    small_cfg = dict(cfg, num_layers=1, vace_layers=[0], ffn_dim=16, text_dim=16, freq_dim=16)
    transformer = _materialise(lambda: SpatiaTransformer3DModel(**cfg), device, dtype, seed,
                               lambda: SpatiaTransformer3DModel(**small_cfg))
    if s == FULL:
        vae_cfg = convert.wan22_vae_config()  # the released latent statistics
    else:
        g = torch.Generator().manual_seed(seed + 7)  # random statistics exercise the normalisation
        vae_cfg = convert.wan22_vae_config(
            base_dim=s.vae_dim, decoder_base_dim=s.vae_dec_dim, z_dim=s.z_dim, dim_mult=list(s.vae_dim_mult),
            num_res_blocks=s.vae_res_blocks, latents_mean=(0.1 * torch.randn(s.z_dim, generator=g)).tolist(),
            latents_std=(0.8 + 0.4 * torch.rand(s.z_dim, generator=g)).tolist())
    vae = _materialise(lambda: convert.build_wan22_vae(vae_cfg), device, dtype, seed + 1)
    t5_cfg = convert.umt5_xxl_config(
        vocab_size=s.t5_vocab, d_model=s.t5_dim, d_kv=s.t5_dim // s.t5_heads, d_ff=s.t5_ffn, num_layers=s.t5_layers,
        num_heads=s.t5_heads, relative_attention_num_buckets=s.t5_buckets)
    text = _materialise(lambda: convert.build_umt5_encoder(t5_cfg), device, dtype, seed + 2)
    return {"transformer": transformer, "vae": vae, "text_encoder": text, "tokenizer": tokenizer,
            "scheduler": release_scheduler()}


# ----------------------------------------------------------------------------- the release, on our tensors
def _by_release_names(release_model: torch.nn.Module, ours: dict, key, dtype, what: str) -> dict:
    """``release_model``'s state dict filled with our tensors: its name -> ``key(name)`` -> ours,
    the tensor itself, or a ``dtype`` copy where ours is kept in another dtype (float32 modules)."""
    out, bad = {}, []
    for name, slot in release_model.state_dict().items():
        mine = key(name)
        mine = mine[0] if isinstance(mine, list) else mine
        if mine not in ours or tuple(ours[mine].shape) != tuple(slot.shape):
            bad.append(f"{name} -> {mine}")
        else:
            out[name] = ours[mine] if ours[mine].dtype == dtype else ours[mine].to(dtype)
    if bad:
        raise RuntimeError(f"{what}: no matching tensor of ours for {bad[:5]} ({len(bad)} in all)")
    return out


def build_release(R, s: Sizes, ours: dict, dtype) -> SimpleNamespace:
    """The release's models holding our tensors (no copy; ``dtype`` copies of our float32-kept
    ones: DiffSynth loads every tensor in the run dtype)."""
    init_weights_on_device = importlib.import_module("diffsynth.models.utils").init_weights_on_device
    dim = s.dit_heads * s.dit_head_dim
    with init_weights_on_device(torch.device("meta")):  # parameters on meta; rotary tables, VAE stats real
        # the Wan2.2-TI2V-5B configuration of the release's WanModel, and build_pipe's VaceWanModel
        dit = R.WanModel(dim=dim, in_dim=s.z_dim, ffn_dim=s.dit_ffn, out_dim=s.z_dim, text_dim=s.t5_dim,
                         freq_dim=s.freq_dim, eps=1e-6, patch_size=(1, 2, 2), num_heads=s.dit_heads,
                         num_layers=s.dit_layers, has_image_input=False, seperated_timestep=True,
                         require_clip_embedding=False, require_vae_embedding=False, fuse_vae_embedding_in_latents=True)
        vace = R.VaceWanModel(vace_layers=tuple(s.vace_layers), vace_in_dim=2 * s.z_dim, patch_size=(1, 2, 2),
                              has_image_input=False, dim=dim, num_heads=s.dit_heads, ffn_dim=s.dit_ffn, eps=1e-6)
        vae = R.WanVideoVAE38(z_dim=s.z_dim, dim=s.vae_dim)
        vae.model = R.VideoVAE38_(dim=s.vae_dim, z_dim=s.z_dim, dec_dim=s.vae_dec_dim, dim_mult=list(s.vae_dim_mult),
                                  num_res_blocks=s.vae_res_blocks, attn_scales=[],
                                  temperal_downsample=[False, True, True], dropout=0.0).eval().requires_grad_(False)
        text_encoder = R.WanTextEncoder(vocab=s.t5_vocab, dim=s.t5_dim, dim_attn=s.t5_dim, dim_ffn=s.t5_ffn,
                                        num_heads=s.t5_heads, num_layers=s.t5_layers, num_buckets=s.t5_buckets,
                                        shared_pos=False, dropout=0.1)
    dit_sd = {k: v for k, v in ours["transformer"].state_dict().items() if not k.startswith("rope.")}
    for model, state, key, what in (
        (dit, dit_sd, convert.diffsynth_to_diffusers_key, "WanModel"),
        (vace, dit_sd, convert.diffsynth_to_diffusers_key, "VaceWanModel"),
        (vae, ours["vae"].state_dict(), lambda n: convert.wan22_vae_key(n.removeprefix("model.")), "WanVideoVAE38"),
        (text_encoder, ours["text_encoder"].state_dict(), convert.umt5_key, "WanTextEncoder"),
    ):
        model.load_state_dict(_by_release_names(model, state, key, dtype, what), strict=True, assign=True)
    cfg = ours["vae"].config  # the same latent statistics as ours (full size: the released ones)
    vae.mean = torch.tensor(cfg.latents_mean, dtype=torch.float32)
    vae.std = torch.tensor(cfg.latents_std, dtype=torch.float32)
    vae.scale = [vae.mean, 1.0 / vae.std]  # as WanVideoVAE38.__init__ derives it
    models = SimpleNamespace(dit=dit, vace=vace, vae=vae, text_encoder=text_encoder)
    for m in vars(models).values():
        m.eval().requires_grad_(False)
    return models


def shared_storage(ours: dict, release: SimpleNamespace) -> tuple[int, int, int]:
    """(release parameters, those whose storage is one of ours, bytes not shared)."""
    mine = {p.data_ptr() for k in ("transformer", "vae", "text_encoder") for p in ours[k].parameters()}
    total = shared = extra = 0
    for m in vars(release).values():
        for p in m.parameters():
            total += 1
            if p.data_ptr() in mine:
                shared += 1
            else:
                extra += p.numel() * p.element_size()
    return total, shared, extra


def release_pipeline(R, models: SimpleNamespace, tokenizer_dir: Path, device, dtype):
    """The release's ``WanVideoPipeline`` on ``models``, assembled as ``from_pretrained`` does
    (division factors from the VAE, prompter given the text encoder and tokenizer), no VRAM management."""
    pipe = R.WanVideoPipeline(device=str(device), torch_dtype=dtype)
    pipe.text_encoder, pipe.dit, pipe.vae, pipe.vace = models.text_encoder, models.dit, models.vae, models.vace
    pipe.height_division_factor = pipe.vae.upsampling_factor * 2
    pipe.width_division_factor = pipe.vae.upsampling_factor * 2
    pipe.prompter.fetch_models(pipe.text_encoder)
    pipe.prompter.fetch_tokenizer(str(tokenizer_dir))
    return pipe.eval()


# ----------------------------------------------------------------------------- timing
def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


class LoopClock:
    """Times the denoising loop: from the first DiT pass's start to the last one's end (forward hooks)."""

    def __init__(self, device, first: torch.nn.Module, last: torch.nn.Module):
        self.device, self.start, self.end, self.passes = device, None, None, 0
        self._handles = [first.register_forward_pre_hook(self._pre), last.register_forward_hook(self._post)]

    def reset(self):
        self.start, self.end, self.passes = None, None, 0

    def _pre(self, module, args):
        if self.start is None:
            _sync(self.device)
            self.start = time.perf_counter()

    def _post(self, module, args, output):
        _sync(self.device)
        self.end = time.perf_counter()
        self.passes += 1

    @property
    def seconds(self) -> float:
        return self.end - self.start


def _timed(fn, device, clock: LoopClock):
    cuda = torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    clock.reset()
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    sec = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    return out, sec, peak


# ----------------------------------------------------------------------------- one round
def round_inputs(frames: int, height: int, width: int, n_known: int, n_refs: int, seed: int = 0) -> dict:
    """Random uint8 inputs of one round: scene projection (N, H, W, 3), render score (N, H, W)
    (0 / 128 / 255: holes, soft, covered), known frames (h, H, W, 3), references (K, H, W, 3)."""
    rng = np.random.default_rng(seed)
    return {
        "scene": rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8),
        "score": rng.choice(np.array([0, 128, 255], np.uint8), (frames, height, width), p=[0.3, 0.1, 0.6]),
        "known": rng.integers(0, 256, (n_known, height, width, 3), dtype=np.uint8),
        "refs": rng.integers(0, 256, (n_refs, height, width, 3), dtype=np.uint8) if n_refs else None,
    }


def run_ours(pipe, clock, device, inp, steps, guidance):
    pipe._prompt_cache.clear()  # time the text encoder too
    frames = len(inp["scene"])
    out, sec, peak = _timed(lambda: pipe(
        PROMPT, control_video=inp["scene"], control_score=inp["score"], known_frames=inp["known"],
        reference_frames=inp["refs"], num_frames=frames, num_inference_steps=steps, guidance_scale=guidance,
        negative_prompt=RELEASE_NEGATIVE_PROMPT, shift=5.0, control_scale=1.0, seed=SEED, progress=False,
        output_type="np"), device, clock)
    return out.latents.float(), out.frames, sec, peak


def run_release(rpipe, clock, device, inp, steps, guidance):
    """``call_latent_inference`` as ``inference.py`` calls it for this round."""
    from PIL import Image
    from release_oracle import release_set_pipe_units

    later = len(inp["known"]) > 1
    release_set_pipe_units(rpipe, hist_frames=HISTORY, use_history=later)
    frames = len(inp["scene"])
    pil = lambda arr: [Image.fromarray(a) for a in arr]  # noqa: E731
    kwargs = dict(
        prompt=PROMPT, negative_prompt=RELEASE_NEGATIVE_PROMPT, seed=SEED, tiled=False,
        height=inp["scene"].shape[1], width=inp["scene"].shape[2],
        input_video=pil(inp["known"]) if later else None, input_image=None if later else pil(inp["known"])[0],
        control_video=pil(inp["scene"]),
        control_score=[255 - np.repeat(s[..., None], 3, axis=-1) for s in inp["score"]],  # inference.py: 255 - score
        ref_images=pil(inp["refs"]) if inp["refs"] is not None else None,
        ar_hist_latents_num=(len(inp["known"]) - 1) // 4 + 1 if later else 0, vace_scale=1.0, num_frames=frames,
        num_inference_steps=steps, cfg_scale=guidance, sigma_shift=5.0, sampler="uni_pc", return_latents=True,
        verbose=False)
    (video, latents), sec, peak = _timed(lambda: rpipe.call_latent_inference(**kwargs), device, clock)
    return latents.float(), np.stack([np.asarray(f) for f in video]), sec, peak


def _row(run, impl, frames, steps, guidance, sec, peak, clock, refs):
    loop = clock.seconds
    return {"run": run, "impl": impl, "frames": frames, "steps": steps, "guidance": guidance, "references": refs,
            "seconds": sec, "s_per_frame": sec / frames, "loop_seconds": loop, "s_per_step": loop / steps,
            "fixed_seconds": sec - loop, "est_40_steps_seconds": sec - loop + 40 * loop / steps, "peak_gib": peak,
            "dit_passes": clock.passes}


def bench_round(name, inp, steps, guidance, device, ours, release):
    """Ours, then the release (if given), on one round's inputs; returns rows and a comparison."""
    pipe, oclock = ours
    frames, refs = len(inp["scene"]), 0 if inp["refs"] is None else len(inp["refs"])
    print(f"[{name}] {frames} frames, {len(inp['known'])} known, {refs} references, {steps} steps: ours ...",
          flush=True)
    passes = steps * (2 if guidance != 1.0 else 1)
    lat_o, frames_o, sec, peak = run_ours(pipe, oclock, device, inp, steps, guidance)
    rows = [_row(name, "ours", frames, steps, guidance, sec, peak, oclock, refs)]
    assert oclock.passes == passes, f"ours ran {oclock.passes} transformer passes, expected {passes}"
    if release is None:
        return rows, None
    rpipe, rclock = release
    print(f"[{name}] release ...", flush=True)
    lat_r, frames_r, sec, peak = run_release(rpipe, rclock, device, inp, steps, guidance)
    rows.append(_row(name, "release", frames, steps, guidance, sec, peak, rclock, refs))
    assert rclock.passes == passes, f"the release ran {rclock.passes} DiT passes, expected {passes}"
    if lat_o.shape != lat_r.shape or frames_o.shape != frames_r.shape:
        raise AssertionError(f"{name}: shapes differ: latents {tuple(lat_o.shape)} vs {tuple(lat_r.shape)}, "
                             f"frames {frames_o.shape} vs {frames_r.shape}")
    diff = (lat_o - lat_r.to(lat_o.device)).abs().max().item()
    cmp = {"run": name, "speedup_end_to_end": rows[1]["seconds"] / rows[0]["seconds"],
           "speedup_loop": rows[1]["loop_seconds"] / rows[0]["loop_seconds"], "latents_max_abs_diff": diff,
           "latents_max_abs": lat_r.abs().max().item(),
           "frames_max_abs_diff": int(np.abs(frames_o.astype(int) - frames_r.astype(int)).max())}
    return rows, cmp


# ----------------------------------------------------------------------------- main
def _environment(device, dtype, R) -> dict:
    env = {"torch": torch.__version__, "cuda": torch.version.cuda, "device": str(device), "dtype": str(dtype),
           "python": platform.python_version()}
    if torch.device(device).type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        env["cudnn"] = torch.backends.cudnn.version()
    else:
        env["cpu"] = platform.processor() or platform.machine()
        env["threads"] = torch.get_num_threads()
    if R is not None:
        d = R.wan_video_dit
        env["release_attention"] = ("flash_attn_3" if d.FLASH_ATTN_3_AVAILABLE else "flash_attn_2"
                                    if d.FLASH_ATTN_2_AVAILABLE else "sageattention" if d.SAGE_ATTN_AVAILABLE
                                    else "torch sdpa")
    return env


def _print_table(rows, comparisons, steps):
    print(f"\n{'run':<8}{'impl':<9}{'frames':>7}{'refs':>5}{'steps':>6}{'cfg':>5}{'seconds':>10}{'s/frame':>9}"
          f"{'loop s':>9}{'s/step':>8}{'fixed s':>9}{'40-step s':>10}{'peak GiB':>9}")
    for r in rows:
        peak = "-" if r["peak_gib"] is None else f"{r['peak_gib']:.1f}"
        print(f"{r['run']:<8}{r['impl']:<9}{r['frames']:>7}{r['references']:>5}{r['steps']:>6}{r['guidance']:>5}"
              f"{r['seconds']:>10.2f}{r['s_per_frame']:>9.3f}{r['loop_seconds']:>9.2f}{r['s_per_step']:>8.3f}"
              f"{r['fixed_seconds']:>9.2f}{r['est_40_steps_seconds']:>10.1f}{peak:>9}")
    for c in comparisons:
        print(f"{c['run']}: release/ours = {c['speedup_end_to_end']:.2f}x end to end, {c['speedup_loop']:.2f}x loop; "
              f"final latents max|diff| = {c['latents_max_abs_diff']:.2e} (max|latent| {c['latents_max_abs']:.2f}), "
              f"frames max|diff| = {c['frames_max_abs_diff']}")
    if steps != 40:
        print(f"({steps} steps timed; '40-step s' = fixed s + 40 x s/step, the release's step count)")


def _release_or_reason(no_release: bool):
    """(the release's modules or None, why it cannot be loaded or None)."""
    import release_oracle

    if no_release:
        return None, None
    where = os.environ.get(release_oracle.RELEASE_ENV) or release_oracle.DEFAULT_RELEASE
    missing = [] if release_oracle.release_root() else [f"the official release at {where} "
                                                        f"(or set {release_oracle.RELEASE_ENV})"]
    missing += [pkg for pkg in ("diffsynth", "ftfy") if importlib.util.find_spec(pkg) is None]
    if missing:
        return None, f"cannot load the release: missing {', '.join(missing)}; or run with --no-release"
    return release_oracle.load_release(), None


def build_both(sizes: Sizes, device, dtype, R, tokenizer_dir: Path):
    """(ours, release): ``(SpatiaPipeline, LoopClock)`` and ``(WanVideoPipeline, LoopClock)`` (None
    without ``R``) on one set of random weights."""
    from transformers import AutoTokenizer

    from spatia_core.generators.spatia.tiny import tiny_tokenizer

    tiny_tokenizer().save_pretrained(str(tokenizer_dir))  # ours reads it back; so does the release's prompter
    comps = build_ours(sizes, device, dtype, AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True))
    pipe = SpatiaPipeline(**comps)
    ours = (pipe, LoopClock(device, pipe.transformer, pipe.transformer))
    if R is None:
        return ours, None
    models = build_release(R, sizes, comps, dtype)
    total, shared, extra = shared_storage(comps, models)
    print(f"release models: {total} parameters, {shared} share our storage, {total - shared} are "
          f"{dtype} copies of our float32-kept ones ({extra / 2**20:.1f} MiB)")
    rpipe = release_pipeline(R, models, tokenizer_dir, device, dtype)
    return ours, (rpipe, LoopClock(device, models.dit.patch_embedding, models.dit.head))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny random models, 64x96, 2 steps (CPU check, fp32)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | bfloat16 | float32")
    ap.add_argument("--steps", type=int, default=None, help="sampling steps (default 10; --tiny 2; the release: 40)")
    ap.add_argument("--guidance", type=float, default=3.5, help="CFG scale (the release: 3.5)")
    ap.add_argument("--runs", default="first,later", help="comma list of rounds to time: first, later")
    ap.add_argument("--frames-first", type=int, default=None, help="first-round frames (default 121; --tiny 17)")
    ap.add_argument("--frames-later", type=int, default=None, help="later-round frames (default 81; --tiny 21)")
    ap.add_argument("--refs", type=int, default=7, help="reference frames of the later round (the release: up to 7)")
    ap.add_argument("--height", type=int, default=None, help="default 704 (--tiny 64)")
    ap.add_argument("--width", type=int, default=None, help="default 1248 (--tiny 96)")
    ap.add_argument("--no-release", action="store_true", help="time ours only (the release is not loaded)")
    ap.add_argument("--out", default="", help="JSON file for the results")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: run with --tiny --device cpu for a CPU check", file=sys.stderr)
        return 2
    if not args.tiny and device.type != "cuda":
        print("the full-size benchmark needs a CUDA GPU; use --tiny --device cpu for a CPU check", file=sys.stderr)
        return 2
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if not runs or set(runs) - {"first", "later"}:
        print(f"--runs takes first and/or later, got {args.runs!r}", file=sys.stderr)
        return 2
    dtype = resolve_dtype(args.dtype, device)
    steps = args.steps or (2 if args.tiny else 10)
    height, width = args.height or (64 if args.tiny else 704), args.width or (96 if args.tiny else 1248)
    plan = {"first": (args.frames_first or (17 if args.tiny else 121), 1, 0),  # frames, known frames, references
            "later": (args.frames_later or (21 if args.tiny else 81), HISTORY, args.refs)}
    import release_oracle

    sizes = Sizes(**{k: tuple(v) if isinstance(v, list) else v for k, v in release_oracle.TINY.items()}) \
        if args.tiny else FULL
    R, reason = _release_or_reason(args.no_release)
    if reason:
        print(reason, file=sys.stderr)
        return 2
    env = _environment(device, dtype, R)
    print(" | ".join(f"{k} {v}" for k, v in env.items()), flush=True)

    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_spatia_") as tmp:
        ours, release = build_both(sizes, device, dtype, R, Path(tmp) / "tokenizer")
        build_sec = time.perf_counter() - t_start
        resident = torch.cuda.memory_allocated(device) / 2**30 if device.type == "cuda" else None
        print(f"models built in {build_sec:.1f} s" + (f", {resident:.1f} GiB resident" if resident else ""), flush=True)

        if device.type == "cuda":  # warm-up (kernels, allocator) at the run size: a short round of each kind
            t0 = time.perf_counter()
            for frames, known, refs in ((5, 1, 0), (HISTORY + 8, HISTORY, 1)):
                bench_round("warmup", round_inputs(frames, height, width, known, refs, seed=99), 1, args.guidance,
                            device, ours, release)
            print(f"warm-up {time.perf_counter() - t0:.1f} s", flush=True)

        rows, comparisons = [], []
        for i, name in enumerate(runs):
            frames, known, refs = plan[name]
            r, c = bench_round(name, round_inputs(frames, height, width, known, refs, seed=i), steps, args.guidance,
                               device, ours, release)
            rows += r
            comparisons += [c] if c else []
            print(json.dumps({"rows": r, "comparison": c}), flush=True)
    total_sec = time.perf_counter() - t_start

    print(f"\nround size {height}x{width}, {steps} steps, CFG {args.guidance}, {env['dtype']}; "
          f"whole run {total_sec:.0f} s (build {build_sec:.0f} s)")
    _print_table(rows, comparisons, steps)
    if args.out:
        result = {**env, "tiny": args.tiny, "sizes": asdict(sizes), "height": height, "width": width,
                  "build_seconds": build_sec, "total_seconds": total_sec, "resident_gib": resident, "rows": rows,
                  "comparisons": comparisons}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    if args.tiny and dtype == torch.float32 and comparisons:
        worst = max(c["latents_max_abs_diff"] for c in comparisons)
        if worst > TINY_TOL:
            print(f"FAIL: ours and the release differ by {worst:.2e} > {TINY_TOL:g} (float32)", file=sys.stderr)
            return 1
        print(f"ok: ours matches the release to {worst:.1e} <= {TINY_TOL:g} (float32)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
