"""GPU benchmark of the Spatia sampler against the official DiffSynth 1.1.9 forward, same random weights.

Full-size architecture (Wan2.2-TI2V-5B + 8 control blocks, UMT5-XXL encoder, Wan2.2 VAE) with
random weights (speed does not depend on weight values): built on the meta device, materialised
with ``to_empty`` and randomly initialised, bf16 on CUDA. For each resolution (704x1248 and
480x832, one 81-frame clip after 9 history frames) it times

* ``ours``: :class:`SpatiaPipeline` end to end (text, VAE encodes, UniPC loop with CFG, VAE decode),
  and its denoising loop alone;
* ``diffsynth``: DiffSynth's ``WanModel`` + ``VaceWanModel`` holding the SAME tensors (renamed with
  our converter), driven like the release: ``model_fn_wan_video`` per pass, two passes per step
  for CFG, DiffSynth's ``FlowMatchScheduler(shift, sigma_min=0, extra_one_step=True)``, the clean
  history latents written back after every step (DiffSynth's TI2V path gives only the first
  latent frame t = 0 where ours gives all 3 history frames t = 0: the same work per pass);

and prints the ratios (target: ours >= 1.5x faster), peak memory, plus a fast mode (few steps,
480p, no CFG; target <= 1 s per frame). DiffSynth 1.1.9 has no reference-frame support, so the
comparison runs use no references (a separate ``ours`` row adds 7). The DiffSynth side reuses our
text embeddings and VAE latents (same models as the release's); its "end-to-end" figure is its
loop plus our measured encode/decode time.

    python bench/bench_spatia_gpu.py                      # GPU, full size (needs ~50 GB)
    python bench/bench_spatia_gpu.py --tiny --device cpu  # end-to-end check on a CPU (< 2 min)

Results: a table on stdout and JSON (``--out``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from spatia_core.generators.spatia.pipeline import SpatiaPipeline, resolve_dtype  # noqa: E402

# Wan2.2 VAE (diffusers AutoencoderKLWan config of the released Wan2.2_VAE.pth)
WAN22_VAE = dict(base_dim=160, decoder_base_dim=256, z_dim=48, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                 temperal_downsample=[False, True, True], is_residual=True, in_channels=12, out_channels=12, patch_size=2,
                 scale_factor_temporal=4, scale_factor_spatial=16, latents_mean=[0.0] * 48, latents_std=[1.0] * 48)
# umT5-XXL encoder (models_t5_umt5-xxl-enc-bf16.pth)
UMT5_XXL = dict(vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                relative_attention_num_buckets=32, relative_attention_max_distance=128, feed_forward_proj="gated-gelu",
                pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)


# ----------------------------------------------------------------------------- model building
def _random_init_(model: torch.nn.Module, seed: int) -> None:
    """Random parameters: N(0, 0.02) matrices, ones for 1-D norm scales, zero biases (all cast to the
    run dtype afterwards, as DiffSynth runs; the two implementations share these very tensors)."""
    g = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif p.ndim == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, 0.02, generator=g)


def _materialise(build, device, dtype, seed, small_build=None):
    """``build()`` on meta -> ``to_empty(device)`` -> random init; buffers (rotary tables) from
    ``small_build()`` (the same module tree with fewer blocks, built for real on the CPU)."""
    with torch.device("meta"):
        model = build()
    model = model.to_empty(device=device)
    _random_init_(model, seed)
    model = model.to(dtype)
    buffers = dict(model.named_buffers())
    if buffers:
        small = dict(small_build().named_buffers())
        missing = sorted(set(buffers) - set(small))
        if missing:
            raise RuntimeError(f"cannot initialise buffers {missing}")
        for name, buf in buffers.items():
            buf.data = small[name].to(device=device)  # rotary tables stay float32, as diffusers keeps them
    return model.eval().requires_grad_(False)


def full_components(device, dtype, seed=0) -> dict:
    """Full-size random components (transformer 5B, UMT5-XXL, Wan2.2 VAE) on ``device``."""
    from diffusers import AutoencoderKLWan
    from transformers import UMT5Config, UMT5EncoderModel

    from spatia_core.generators.spatia.tiny import tiny_scheduler, tiny_tokenizer
    from spatia_core.generators.spatia.transformer import SPATIA_5B_CONFIG, SpatiaTransformer3DModel

    cfg = dict(SPATIA_5B_CONFIG)
    small_cfg = dict(cfg, num_layers=1, vace_layers=[0], ffn_dim=16, text_dim=16, freq_dim=16)
    transformer = _materialise(lambda: SpatiaTransformer3DModel(**cfg), device, dtype, seed,
                               lambda: SpatiaTransformer3DModel(**small_cfg))
    vae = _materialise(lambda: AutoencoderKLWan(**WAN22_VAE), device, dtype, seed + 1)
    text = _materialise(lambda: UMT5EncoderModel(UMT5Config(**UMT5_XXL)), device, dtype, seed + 2)
    return {"transformer": transformer, "vae": vae, "text_encoder": text, "tokenizer": tiny_tokenizer(),
            "scheduler": tiny_scheduler()}


def tiny_set(device, dtype, seed=0) -> dict:
    from spatia_core.generators.spatia.tiny import tiny_components

    comps = tiny_components(seed)
    for k in ("transformer", "vae", "text_encoder"):
        comps[k] = comps[k].to(device=device, dtype=dtype)
    return comps


# ----------------------------------------------------------------------------- DiffSynth side
class DiffSynthRunner:
    """DiffSynth 1.1.9's DiT + VACE sharing our transformer's tensors, sampled as the release does."""

    def __init__(self, transformer, device, dtype):
        from diffsynth_reference import diffsynth_root, load_model_fn, load_modules

        from spatia_core.generators.spatia.convert import diffusers_to_diffsynth_key

        ref = load_modules()
        self.model_fn = load_model_fn()
        c = transformer.config
        dim = c.num_attention_heads * c.attention_head_dim
        with torch.device("meta"):
            self.dit = ref.WanModel(dim=dim, in_dim=c.in_channels, out_dim=c.out_channels, ffn_dim=c.ffn_dim,
                                    freq_dim=c.freq_dim, text_dim=c.text_dim, num_heads=c.num_attention_heads,
                                    num_layers=c.num_layers, eps=c.eps, patch_size=tuple(c.patch_size),
                                    has_image_input=False, seperated_timestep=True, require_clip_embedding=False,
                                    require_vae_embedding=False, fuse_vae_embedding_in_latents=True)
            self.vace = ref.VaceWanModel(vace_layers=tuple(c.vace_layers), vace_in_dim=c.vace_in_channels,
                                         patch_size=tuple(c.patch_size), has_image_input=False, dim=dim,
                                         num_heads=c.num_attention_heads, ffn_dim=c.ffn_dim, eps=c.eps)
        self.dit.freqs = ref.precompute_freqs_cis_3d(c.attention_head_dim)  # computed on the CPU, as DiffSynth does
        state = {diffusers_to_diffsynth_key(k): v for k, v in transformer.state_dict().items()
                 if not k.startswith("rope.")}
        vace_sd = {k: v for k, v in state.items() if k.startswith("vace_")}
        dit_sd = {k: v for k, v in state.items() if not k.startswith("vace_")}
        self.dit.load_state_dict(dit_sd, strict=True, assign=True)  # the same tensors, no copy
        self.vace.load_state_dict(vace_sd, strict=True, assign=True)
        self.dit.eval().requires_grad_(False)
        self.vace.eval().requires_grad_(False)
        spec = importlib.util.spec_from_file_location("diffsynth_flow_match", diffsynth_root() / "schedulers" / "flow_match.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self.FlowMatchScheduler = module.FlowMatchScheduler
        self.device, self.dtype = device, dtype

    @torch.no_grad()
    def sample(self, hist_lat, noise, control, cond, uncond, steps, guidance, shift):
        """Denoise ``noise`` after ``hist_lat`` (both (1, C, F, h, w)); returns the final latents."""
        sched = self.FlowMatchScheduler(shift=shift, sigma_min=0.0, extra_one_step=True)
        sched.set_timesteps(steps, denoising_strength=1.0, shift=shift)
        n_hist = hist_lat.shape[2]
        latents = torch.cat([hist_lat, noise], 2).to(self.dtype)
        for i, t in enumerate(sched.timesteps):
            timestep = t.unsqueeze(0).to(dtype=self.dtype, device=self.device)
            kw = dict(dit=self.dit, vace=self.vace, latents=latents, timestep=timestep, vace_context=control,
                      vace_scale=1.0, fuse_vae_embedding_in_latents=True)
            pred = self.model_fn(context=cond, **kw)
            if guidance != 1.0:
                pred_u = self.model_fn(context=uncond, **kw)
                pred = pred_u + guidance * (pred - pred_u)
            latents = sched.step(pred, sched.timesteps[i], latents)
            latents[:, :, :n_hist] = hist_lat.to(latents.dtype)
        return latents


# ----------------------------------------------------------------------------- timing
def _sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device):
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device):
    return torch.cuda.max_memory_allocated(device) / 2**30 if torch.device(device).type == "cuda" else None


def _timed(fn, device):
    _reset_peak(device)
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0, _peak_gib(device)


def _inputs(frames, height, width, n_hist, n_refs, seed=0):
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    vis = rng.random((frames, height, width)) > 0.3
    hist = rng.integers(0, 256, (n_hist, height, width, 3), dtype=np.uint8) if n_hist else None
    refs = rng.integers(0, 256, (n_refs, height, width, 3), dtype=np.uint8) if n_refs else None
    return scene, vis, hist, refs


def run_ours(pipe, device, name, frames, height, width, steps, guidance, n_hist=9, n_refs=0):
    scene, vis, hist, refs = _inputs(frames, height, width, n_hist, n_refs)
    pipe._prompt_cache.clear()
    out, sec, peak = _timed(lambda: pipe("a bright modern living room", scene, vis, hist, refs, num_inference_steps=steps,
                                         guidance_scale=guidance, seed=0, progress=False), device)
    assert out.frames.shape == (frames, height, width, 3)
    return {"run": name, "impl": "ours", "height": height, "width": width, "frames": frames, "steps": steps,
            "guidance": guidance, "references": n_refs, "seconds": sec, "s_per_frame": sec / frames, "peak_gib": peak}


def run_loops(pipe, ds, device, name, frames, height, width, steps, guidance, shift=5.0, n_hist=9):
    """Denoising loops alone, ours (UniPC) and DiffSynth's, from the same encoded inputs."""
    from diffusers import UniPCMultistepScheduler

    scene, vis, hist, _ = _inputs(frames, height, width, n_hist, 0)
    (cond, uncond, hist_lat, control), enc_sec, _ = _timed(lambda: _encode(pipe, scene, vis, hist), device)
    g = torch.Generator("cpu").manual_seed(0)
    f = pipe.vae_scale_temporal
    n_lat = (frames - 1) // f + 1
    noise = torch.randn((1, pipe.vae.config.z_dim, n_lat, height // 16, width // 16), generator=g).to(device)
    dtype = pipe.transformer.dtype

    def ours():
        sched = UniPCMultistepScheduler.from_config(pipe.scheduler.config, flow_shift=shift)
        sched.set_timesteps(steps, device=device)
        n_hist_lat = hist_lat.shape[2]
        lat = torch.cat([hist_lat, noise], 2)
        frame_t = torch.zeros(1, lat.shape[2], device=device)
        ctl = control.to(dtype)
        for t in sched.timesteps:
            frame_t[:, n_hist_lat:] = t
            x = lat.to(dtype)
            pred = pipe.transformer(x, frame_t, cond, control_hidden_states=ctl, return_dict=False)[0].float()
            if guidance > 1:
                pred_u = pipe.transformer(x, frame_t, uncond, control_hidden_states=ctl, return_dict=False)[0].float()
                pred = pred_u + guidance * (pred - pred_u)
            lat = sched.step(pred, t, lat, return_dict=False)[0]
            lat[:, :, :n_hist_lat] = hist_lat
        return lat

    _, ours_sec, ours_peak = _timed(ours, device)
    _, ds_sec, ds_peak = _timed(lambda: ds.sample(hist_lat, noise, control.to(dtype), cond, uncond, steps, guidance, shift),
                                device)
    common = {"height": height, "width": width, "frames": frames, "steps": steps, "guidance": guidance, "references": 0}
    return [
        {"run": name, "impl": "ours_loop", **common, "seconds": ours_sec, "s_per_frame": ours_sec / frames, "peak_gib": ours_peak},
        {"run": name, "impl": "diffsynth_loop", **common, "seconds": ds_sec, "s_per_frame": ds_sec / frames, "peak_gib": ds_peak},
        {"run": name, "impl": "encode(text+vae)", **common, "seconds": enc_sec, "s_per_frame": enc_sec / frames, "peak_gib": None},
    ]


def _encode(pipe, scene, vis, hist):
    cond = pipe.encode_prompt("a bright modern living room")
    uncond = pipe.encode_prompt("")
    mask = np.repeat(vis[..., None].astype(np.uint8) * 255, 3, axis=-1)
    f = pipe.vae_scale_temporal
    scene = scene[: 1 + f * ((len(scene) - 1) // f)]
    mask = mask[: len(scene)]
    ctl = pipe.encode_video(np.stack([scene, mask]))
    both = pipe.encode_video(np.stack([hist, np.full_like(hist, 255)]))
    hist_lat = both[:1]
    control = torch.cat([torch.cat([hist_lat, both[1:]], 1), torch.cat([ctl[:1], ctl[1:]], 1)], 2)
    return cond, uncond, hist_lat, control


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny random models and sizes (CPU smoke run)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--steps", type=int, default=40, help="sampling steps of the comparison runs (release: 40)")
    ap.add_argument("--guidance", type=float, default=3.5)
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--fast-steps", type=int, default=6, help="steps of the fast mode (480p, no CFG)")
    ap.add_argument("--runs", default="704,480,fast,refs", help="comma list of: 704, 480, fast, refs")
    ap.add_argument("--no-diffsynth", action="store_true", help="skip the DiffSynth comparison")
    ap.add_argument("--dtype", default="auto", help="auto (bf16 on CUDA, fp32 on CPU) | bfloat16 | float32")
    ap.add_argument("--out", default="", help="JSON file for the results")
    args = ap.parse_args(argv)

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: run with --tiny --device cpu for a smoke test", file=sys.stderr)
        return 2
    if not args.tiny and device.type != "cuda":
        print("the full-size benchmark needs a CUDA GPU; use --tiny --device cpu for a smoke test", file=sys.stderr)
        return 2
    dtype = resolve_dtype(args.dtype, device)
    torch.backends.cuda.matmul.allow_tf32 = True
    sizes = {"704": (704, 1248), "480": (480, 832)}
    frames, steps, fast_steps = args.frames, args.steps, args.fast_steps
    if args.tiny:
        sizes = {"704": (32, 64), "480": (32, 32)}
        frames, steps, fast_steps = min(frames, 9), min(steps, 2), min(fast_steps, 2)

    t0 = time.perf_counter()
    comps = tiny_set(device, dtype) if args.tiny else full_components(device, dtype)
    pipe = SpatiaPipeline(**comps)
    if args.tiny:
        pipe.defaults.max_sequence_length = 32
    build_sec = time.perf_counter() - t0
    ds = None if args.no_diffsynth else DiffSynthRunner(pipe.transformer, device, dtype)
    print(f"models built in {build_sec:.1f} s on {device} ({dtype})", flush=True)

    # warm-up (kernels, allocator) on the small size
    h, w = sizes["480"]
    run_ours(pipe, device, "warmup", 5, h, w, 1, args.guidance)
    if ds is not None:
        run_loops(pipe, ds, device, "warmup", 5, h, w, 1, args.guidance)

    rows = []
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    for key in ("704", "480"):
        if key not in runs:
            continue
        h, w = sizes[key]
        rows.append(run_ours(pipe, device, f"{h}x{w}", frames, h, w, steps, args.guidance))
        print(rows[-1], flush=True)
        if ds is not None:
            rows += run_loops(pipe, ds, device, f"{h}x{w}", frames, h, w, steps, args.guidance)
            print(rows[-3:], flush=True)
    if "refs" in runs:
        h, w = sizes["480"]
        rows.append(run_ours(pipe, device, f"{h}x{w}+7refs", frames, h, w, steps, args.guidance, n_refs=7))
    if "fast" in runs:
        h, w = sizes["480"]
        rows.append(run_ours(pipe, device, f"fast {h}x{w}", frames, h, w, fast_steps, 1.0))

    ratios = {}
    for r in {row["run"] for row in rows}:
        by = {row["impl"]: row for row in rows if row["run"] == r}
        if "ours_loop" in by and "diffsynth_loop" in by:
            ratios[r] = {
                "loop_speedup": by["diffsynth_loop"]["seconds"] / by["ours_loop"]["seconds"],
                # DiffSynth end to end = our run with our loop replaced by DiffSynth's (same encoders, decoder)
                "end_to_end_speedup": (by["ours"]["seconds"] - by["ours_loop"]["seconds"] + by["diffsynth_loop"]["seconds"])
                / by["ours"]["seconds"],
            }
    print(f"\n{'run':<22}{'impl':<18}{'steps':>6}{'cfg':>6}{'seconds':>10}{'s/frame':>9}{'peak GiB':>10}")
    for row in rows:
        peak = "-" if row["peak_gib"] is None else f"{row['peak_gib']:.1f}"
        print(f"{row['run']:<22}{row['impl']:<18}{row['steps']:>6}{row['guidance']:>6}{row['seconds']:>10.2f}"
              f"{row['s_per_frame']:>9.3f}{peak:>10}")
    for r, v in ratios.items():
        print(f"{r}: DiffSynth loop / ours loop = {v['loop_speedup']:.2f}x, end to end = {v['end_to_end_speedup']:.2f}x "
              "(target >= 1.5x)")
    fast = [row for row in rows if row["run"].startswith("fast")]
    if fast:
        print(f"fast mode: {fast[0]['s_per_frame']:.3f} s/frame (target <= 1 s/frame at 480p)")
    result = {"device": str(device), "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
              "dtype": str(dtype), "tiny": args.tiny, "torch": torch.__version__, "build_seconds": build_sec,
              "rows": rows, "ratios": ratios}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
