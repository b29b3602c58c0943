"""The Spatia sampler: scene projection + visibility + history + references + text -> a video clip.

Mechanics (REFERENCE §1), per clip of T target frames:

1. inputs are resized to a model size that is a multiple of (VAE spatial factor x transformer
   patch) and the frame count is padded to 1 + 4k by repeating the last pose frame (both undone
   on the output);
2. the prompt (and the negative prompt for guidance) is encoded once and cached;
3. the VAE encodes, each as a clean normalised latent: the history frames (9 frames -> 3 latent
   frames, placed before the target latents), the scene projection and the visibility-mask video
   (3-channel images), concatenated into the 2 x z-channel control input (the history part of the
   control is the history frames themselves, fully visible), and every reference frame alone as a
   1-frame latent;
4. UniPC flow-matching sampling from Gaussian noise: per-frame timesteps (0 for the history), the
   history latents restored after every scheduler step, classifier-free guidance (skipped at
   ``guidance_scale <= 1``);
5. the target latents are decoded, trimmed to T frames and resized back.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from diffusers import DiffusionPipeline, UniPCMultistepScheduler
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from ...errors import BackendUnavailableError, InputError

logger = logging.getLogger(__name__)

COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
FULL_SIZE_PARAMS = 1_000_000_000  # transformers above this many parameters need a CUDA device
OFFLOAD_MODES = ("none", "model", "sequential")


@dataclass
class SamplingDefaults:
    """Sampling settings of the official release; a checkpoint's ``spatia.json`` ("sampling") may override them."""

    steps: int = 40  # UniPC steps
    guidance_scale: float = 3.5  # classifier-free guidance scale
    shift: float = 5.0  # flow-matching sigma shift
    control_scale: float = 1.0  # scale of the scene-projection control hints
    negative_prompt: str = ""  # prompt of the unconditional branch
    history_frames: int = 9  # preceding frames of later clips (-> 3 latent frames)
    first_clip_frames: int = 121  # frames of the first clip
    later_clip_frames: int = 81  # frames of later clips
    height: int = 704  # release resolution, px
    width: int = 1248
    fps: int = 24
    max_sequence_length: int = 512  # prompt tokens

    @classmethod
    def from_metadata(cls, metadata: dict | None) -> "SamplingDefaults":
        """Defaults updated from ``metadata["sampling"]`` (unknown keys are ignored with a warning)."""
        values = dict((metadata or {}).get("sampling", {}) or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            logger.info("ignoring unknown sampling settings in spatia.json: %s", ", ".join(unknown))
        return cls(**{k: v for k, v in values.items() if k in known})


@dataclass
class SpatiaPipelineOutput:
    """A sampled clip."""

    frames: np.ndarray | torch.Tensor | None  # uint8 (T, H, W, 3) ("np"), float [0, 1] (T, 3, H, W) ("pt"), None ("latent")
    latents: torch.Tensor  # float32 (1, C, F_hist + F, h, w) final normalised latents, history first


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device | str) -> torch.dtype:
    """``auto`` -> bfloat16 on CUDA, float32 elsewhere; names ``float32``/``bfloat16``/``float16`` as given."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    names = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in names:
        raise InputError(f"unknown dtype {dtype!r}; choose auto, float32, bfloat16 or float16")
    return names[dtype]


def check_device(num_params: int, device: torch.device | str) -> None:
    """Raise :class:`BackendUnavailableError` when a full-size transformer (> 1B parameters) would run
    without CUDA, or when CUDA is asked for but absent. Runs before any weight is allocated."""
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {str(device)!r} was requested but this PyTorch build sees no CUDA GPU")
    if num_params > FULL_SIZE_PARAMS and device.type != "cuda":
        raise BackendUnavailableError(
            f"the Spatia transformer has {num_params / 1e9:.1f}B parameters and needs a CUDA GPU "
            f"(device is {str(device)!r}, CUDA available: {torch.cuda.is_available()}); "
            "set device: cuda (with generator.offload: model if memory is short), or use the 'projection' backend"
        )


def transformer_params_from_config(config_file: str | Path) -> int:
    """Parameter count of the transformer described by a diffusers ``config.json``, built on the meta device."""
    from accelerate import init_empty_weights

    from .transformer import SpatiaTransformer3DModel

    config = json.loads(Path(config_file).read_text())
    with init_empty_weights():
        model = SpatiaTransformer3DModel.from_config(config)
    return sum(p.numel() for p in model.parameters())


def _as_frames(frames, name: str, channels: int | None = 3) -> np.ndarray:
    """A (N, H, W, 3) uint8 array (or (N, H, W) bool for ``channels=None``) from an array, tensor or list."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    if isinstance(frames, (list, tuple)):
        frames = np.stack([np.asarray(f) for f in frames]) if len(frames) else np.zeros((0, 1, 1, 3), np.uint8)
    frames = np.asarray(frames)
    if channels is None:
        if frames.ndim != 3:
            raise InputError(f"{name} must have shape (T, H, W), got {frames.shape}")
        return frames.astype(bool)
    if frames.ndim != 4 or frames.shape[-1] != channels:
        raise InputError(f"{name} must be uint8 (N, H, W, {channels}), got shape {frames.shape}")
    if frames.dtype != np.uint8:
        raise InputError(f"{name} must be uint8, got {frames.dtype}")
    return frames


def _resize(frames: np.ndarray, height: int, width: int, nearest: bool = False) -> np.ndarray:
    if frames.shape[1:3] == (height, width):
        return frames
    shrink = frames.shape[1] * frames.shape[2] > height * width
    interp = cv2.INTER_NEAREST if nearest else (cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.stack([cv2.resize(f, (width, height), interpolation=interp) for f in frames])


def _pad_to_4k1(frames: np.ndarray, factor: int, at_end: bool = True) -> np.ndarray:
    """Repeat the last (``at_end``) or first frame until the count is 1 + factor * k."""
    n = len(frames)
    target = 1 + factor * math.ceil((n - 1) / factor)
    if target == n:
        return frames
    pad = np.repeat(frames[-1:] if at_end else frames[:1], target - n, axis=0)
    return np.concatenate([frames, pad] if at_end else [pad, frames])


class SpatiaPipeline(DiffusionPipeline):
    """Sampler of the Spatia backend (Wan2.2-TI2V-5B + scene-projection control blocks).

    Components: ``transformer`` (:class:`SpatiaTransformer3DModel`), ``vae`` (``AutoencoderKLWan``),
    ``text_encoder`` (``UMT5EncoderModel``), ``tokenizer``, ``scheduler``
    (``UniPCMultistepScheduler`` with flow sigmas; its ``flow_shift`` is replaced per call).
    """

    model_cpu_offload_seq = "text_encoder->transformer->vae"

    def __init__(self, transformer, vae, text_encoder, tokenizer, scheduler, defaults: SamplingDefaults | None = None):
        super().__init__()
        self.register_modules(transformer=transformer, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                              scheduler=scheduler)
        self.defaults = defaults or SamplingDefaults()
        self.prompt_cache_size = 16
        self.prompt_cache_hits = 0
        self._prompt_cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        cfg = vae.config
        self.vae_scale_temporal = int(cfg.get("scale_factor_temporal") or 2 ** sum(cfg.temperal_downsample))
        self.vae_scale_spatial = int(cfg.get("scale_factor_spatial") or 2 ** len(cfg.temperal_downsample))
        self.size_multiple = self.vae_scale_spatial * int(transformer.config.patch_size[1])

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, ckpt_dir: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "auto",
                        offload: str = "none") -> "SpatiaPipeline":
        """Load a checkpoint folder in our layout (``transformer/ vae/ text_encoder/ tokenizer/ scheduler/ spatia.json``).

        The transformer's size is checked against the device from its config before any weight is read.
        """
        from .checkpoint import load_checkpoint, read_metadata

        path = Path(ckpt_dir)
        if offload not in OFFLOAD_MODES:
            raise InputError(f"unknown offload mode {offload!r}; choose one of {', '.join(OFFLOAD_MODES)}")
        missing = [c for c in COMPONENTS if not (path / c).is_dir()]
        if missing:
            raise BackendUnavailableError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}")
        device = torch.device(device)
        check_device(transformer_params_from_config(path / "transformer" / "config.json"), device)
        torch_dtype = resolve_dtype(dtype, device)
        load_device = "cpu" if offload != "none" else device
        comps = load_checkpoint(path, components=COMPONENTS + ("lora",), device=load_device, dtype=torch_dtype)
        pipe = cls(**{c: comps[c] for c in COMPONENTS}, defaults=SamplingDefaults.from_metadata(read_metadata(path)))
        pipe.place(device, offload)
        return pipe

    def place(self, device: str | torch.device, offload: str = "none") -> "SpatiaPipeline":
        """Put the models on ``device``; ``offload`` = ``model`` keeps one sub-model at a time on the GPU,
        ``sequential`` streams layer by layer (slowest, least memory). Offload is ignored off CUDA."""
        device = torch.device(device)
        if offload not in OFFLOAD_MODES:
            raise InputError(f"unknown offload mode {offload!r}; choose one of {', '.join(OFFLOAD_MODES)}")
        if offload != "none" and device.type != "cuda":
            logger.warning("offload %r has no effect on device %s; ignoring it", offload, device)
            offload = "none"
        if offload == "model":
            self.enable_model_cpu_offload(device=device)
        elif offload == "sequential":
            self.enable_sequential_cpu_offload(device=device)
        else:
            self.to(device)
        return self

    # -- encoders --------------------------------------------------------------------------
    @torch.no_grad()
    def encode_prompt(self, prompt: str, max_sequence_length: int | None = None) -> torch.Tensor:
        """Text embeddings (1, L, text_dim) in the transformer's dtype, zero beyond the prompt's tokens.

        Cached (LRU) by (prompt, L, dtype): repeated prompts skip the text encoder.
        """
        length = int(max_sequence_length or self.defaults.max_sequence_length)
        dtype = self.transformer.dtype
        key = (prompt, length, str(dtype))
        if key in self._prompt_cache:
            self._prompt_cache.move_to_end(key)
            self.prompt_cache_hits += 1
            return self._prompt_cache[key]
        device = self._execution_device
        tokens = self.tokenizer([prompt], padding="max_length", max_length=length, truncation=True,
                                add_special_tokens=True, return_attention_mask=True, return_tensors="pt")
        mask = tokens.attention_mask.to(device)
        emb = self.text_encoder(tokens.input_ids.to(device), attention_mask=mask).last_hidden_state
        emb = (emb * mask[..., None].to(emb.dtype)).to(dtype)
        self._prompt_cache[key] = emb
        while len(self._prompt_cache) > self.prompt_cache_size:
            self._prompt_cache.popitem(last=False)
        return emb

    def _latent_stats(self, device) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.vae.config
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32, device=device).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32, device=device).view(1, -1, 1, 1, 1)
        return mean, std

    @torch.no_grad()
    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        """Normalised float32 latents of uint8 videos: (N, H, W, 3) -> (1, z, 1 + (N-1)/4, H/16, W/16), or a batch
        (B, N, H, W, 3) -> (B, z, ...) in one VAE call. N must be 1 + 4k."""
        device = self._execution_device
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
        x = x[None] if x.ndim == 4 else x
        x = x.permute(0, 4, 1, 2, 3).to(self.vae.dtype) / 127.5 - 1.0
        z = self.vae.encode(x).latent_dist.mode().float()
        mean, std = self._latent_stats(device)
        return (z - mean) / std

    @torch.no_grad()
    def encode_images(self, frames: np.ndarray) -> torch.Tensor:
        """Each frame (N, H, W, 3) encoded alone as a 1-frame latent -> (1, z, N, h, w) float32."""
        lat = self.encode_video(frames[:, None])  # a batch of N one-frame videos
        return lat.permute(2, 1, 0, 3, 4)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (1, z, F, h, w) -> frames float [0, 1] (N, 3, H, W)."""
        mean, std = self._latent_stats(latents.device)
        z = (latents.float() * std + mean).to(self.vae.dtype)
        video = self.vae.decode(z).sample[0].float()  # (3, N, H, W) in [-1, 1]
        return ((video.clamp(-1, 1) + 1) / 2).permute(1, 0, 2, 3)

    def model_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the models run at: the nearest multiple of VAE factor x patch (at least one)."""
        m = self.size_multiple
        return max(m, int(round(height / m)) * m), max(m, int(round(width / m)) * m)

    # -- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str = "",
        scene_video=None,  # uint8 (T, H, W, 3) scene projection
        visibility=None,  # bool (T, H, W) pixels the memory covers; None = all
        history_frames=None,  # uint8 (N, H, W, 3) preceding frames, oldest first (any N; 9 -> 3 latents)
        reference_frames=None,  # uint8 (K, H, W, 3) retrieved reference frames
        num_frames: int | None = None,  # default T; the scene video is trimmed or padded (last frame) to it
        height: int | None = None,  # output size; default the scene video's
        width: int | None = None,
        num_inference_steps: int | None = None,  # default 40 (release)
        guidance_scale: float | None = None,  # default 3.5; <= 1 skips the unconditional pass
        negative_prompt: str | None = None,
        shift: float | None = None,  # default 5
        control_scale: float | None = None,  # default 1
        generator: torch.Generator | None = None,
        seed: int | None = None,  # used when no generator is given
        progress: bool = True,
        output_type: str = "np",  # np | pt | latent
        max_sequence_length: int | None = None,
    ) -> SpatiaPipelineOutput:
        """Sample one clip (see the module docstring for the steps)."""
        d = self.defaults
        steps = int(num_inference_steps if num_inference_steps is not None else d.steps)
        guidance = float(guidance_scale if guidance_scale is not None else d.guidance_scale)
        shift = float(shift if shift is not None else d.shift)
        control_scale = float(control_scale if control_scale is not None else d.control_scale)
        negative_prompt = d.negative_prompt if negative_prompt is None else negative_prompt
        if steps < 1:
            raise InputError(f"num_inference_steps must be >= 1, got {steps}")
        if output_type not in ("np", "pt", "latent"):
            raise InputError(f"output_type must be np, pt or latent, got {output_type!r}")
        device = self._execution_device
        check_device(sum(p.numel() for p in self.transformer.parameters()), device)

        # 1. inputs -> model size, 1 + 4k frames
        if scene_video is None:
            raise InputError("scene_video is required")
        scene = _as_frames(scene_video, "scene_video")
        if len(scene) == 0:
            raise InputError("scene_video has no frames")
        vis = np.ones(scene.shape[:3], bool) if visibility is None else _as_frames(visibility, "visibility", None)
        if vis.shape != scene.shape[:3]:
            raise InputError(f"visibility {vis.shape} does not match scene_video {scene.shape[:3]}")
        n_out = int(num_frames or len(scene))
        if n_out < len(scene):
            scene, vis = scene[:n_out], vis[:n_out]
        elif n_out > len(scene):
            scene = np.concatenate([scene, np.repeat(scene[-1:], n_out - len(scene), 0)])
            vis = np.concatenate([vis, np.repeat(vis[-1:], n_out - len(vis), 0)])
        out_h, out_w = int(height or scene.shape[1]), int(width or scene.shape[2])
        mh, mw = self.model_size(out_h, out_w)
        f = self.vae_scale_temporal
        scene = _pad_to_4k1(_resize(scene, mh, mw), f)
        vis = _pad_to_4k1(_resize(vis.astype(np.uint8), mh, mw, nearest=True), f)
        hist = _as_frames(history_frames, "history_frames") if history_frames is not None else None
        refs = _as_frames(reference_frames, "reference_frames") if reference_frames is not None else None

        # 2. text
        cond = self.encode_prompt(prompt, max_sequence_length)
        uncond = self.encode_prompt(negative_prompt, max_sequence_length) if guidance > 1.0 else None

        # 3. clean latents: history, control, references
        mask_video = np.repeat(vis[..., None] * 255, 3, axis=-1).astype(np.uint8)
        control = self.encode_video(np.stack([scene, mask_video]))  # one VAE call for both videos
        control = torch.cat([control[:1], control[1:]], dim=1)
        hist_lat = None
        if hist is not None and len(hist):
            hist = _pad_to_4k1(_resize(hist, mh, mw), f, at_end=False)
            both = self.encode_video(np.stack([hist, np.full_like(hist, 255)]))
            hist_lat = both[:1]
            control = torch.cat([torch.cat([hist_lat, both[1:]], dim=1), control], dim=2)
        ref_lat = None
        if refs is not None and len(refs):
            ref_lat = self.encode_images(_resize(refs, mh, mw)).to(self.transformer.dtype)
        control = control.to(self.transformer.dtype)
        n_hist = 0 if hist_lat is None else hist_lat.shape[2]

        # 4. noise, timesteps, denoising loop
        if generator is None:
            generator = torch.Generator("cpu").manual_seed(int(seed if seed is not None else 0))
        z = self.vae.config.z_dim
        n_lat = (len(scene) - 1) // f + 1
        shape = (1, z, n_lat, mh // self.vae_scale_spatial, mw // self.vae_scale_spatial)
        noise = randn_tensor(shape, generator=generator, device=torch.device("cpu"), dtype=torch.float32).to(device)
        scheduler = UniPCMultistepScheduler.from_config(self.scheduler.config, flow_shift=shift)
        scheduler.set_timesteps(steps, device=device)
        latents = noise * scheduler.init_noise_sigma
        if hist_lat is not None:
            latents = torch.cat([hist_lat, latents], dim=2)
        dtype = self.transformer.dtype
        frame_t = torch.zeros(1, latents.shape[2], device=device)
        for t in tqdm(scheduler.timesteps, desc="spatia", disable=not progress, leave=False):
            frame_t[:, n_hist:] = t
            x = latents.to(dtype)
            pred = self.transformer(x, frame_t, cond, control_hidden_states=control, reference_latents=ref_lat,
                                    control_scale=control_scale, return_dict=False)[0].float()
            if uncond is not None:
                pred_u = self.transformer(x, frame_t, uncond, control_hidden_states=control, reference_latents=ref_lat,
                                          control_scale=control_scale, return_dict=False)[0].float()
                pred = pred_u + guidance * (pred - pred_u)
            latents = scheduler.step(pred, t, latents, return_dict=False)[0]
            if hist_lat is not None:
                latents[:, :, :n_hist] = hist_lat  # the history stays clean

        # 5. decode, trim, resize back
        self.maybe_free_model_hooks()
        if output_type == "latent":
            return SpatiaPipelineOutput(frames=None, latents=latents)
        video = self.decode_latents(latents[:, :, n_hist:])[:n_out]  # (T, 3, mh, mw) in [0, 1]
        if output_type == "pt":
            if (mh, mw) != (out_h, out_w):
                video = torch.nn.functional.interpolate(video, size=(out_h, out_w), mode="bilinear", antialias=True,
                                                        align_corners=False).clamp(0, 1)
            return SpatiaPipelineOutput(frames=video.cpu(), latents=latents)
        frames = (video.permute(0, 2, 3, 1) * 255).round().to(torch.uint8).cpu().numpy()
        return SpatiaPipelineOutput(frames=_resize(frames, out_h, out_w), latents=latents)

