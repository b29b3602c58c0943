"""The Spatia sampler: one round of the official release's ``call_latent_inference``.

A round is one clip of ``N`` frames (the release: 121 in the first round, 81 later) whose first
``h`` frames are known (the input image, ``h = 1``, or the last 9 frames of the previous round);
the rest are generated. Per round, as ``wan/wan_video_new.py`` does it (REFERENCE §1):

1. the control input: the scene projection rendered at *all* ``N`` poses (history poses too)
   mapped to [-1, 1], and the mask video ``255 - render score`` (hole = 1, covered = 0, soft
   where the score is) mapped to [0, 1], each VAE-encoded; their latents are concatenated on the
   channel axis (2 x z channels);
2. noise for the whole clip (``(1, z, 1 + (N-1)/4, H/16, W/16)``, float32 on the CPU from one
   ``torch.Generator`` seeded with ``seed``); the known frames are VAE-encoded as one video and
   written over the first latents (9 frames -> 3 latents, 1 frame -> 1 latent);
3. each reference frame is encoded alone (one latent frame each) and rides along as clean tokens;
4. the prompt is cleaned (ftfy, HTML unescape, whitespace) and encoded to 512 tokens, zero past
   its end; the negative prompt likewise for classifier-free guidance (skipped at scale 1);
5. Wan's FlowUniPC sampler (:mod:`.scheduler`): per-latent-frame timesteps (0 for the known
   frames), ``uncond + scale * (cond - uncond)``, the known latents restored after every step;
6. the whole clip (known frames included) is decoded and returned with its final latents.

Inputs at another size or frame count are resized / padded (last frame repeated) to the model's
grid; that step is ours (the release renders and reads its inputs at the model size).
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
from diffusers import DiffusionPipeline
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm

from ...errors import BackendUnavailableError, InputError
from .checkpoint import PIPELINE_COMPONENTS as COMPONENTS

logger = logging.getLogger(__name__)

FULL_SIZE_PARAMS = 1_000_000_000  # transformers above this many parameters need a CUDA device
OFFLOAD_MODES = ("none", "model", "sequential")


#: The release's negative prompt (``inference.py``), the default of the unconditional branch.
RELEASE_NEGATIVE_PROMPT = (
    "画面切换，画面切出，镜头切换，镜头渐黑，镜头渐亮，最差质量, 节目横幅, 低质量, 正常质量, "
    "JPEG压缩残留, 噪点, 模糊, 细节缺失, 马赛克, 水印, 文字, 签名, 商标, 丑陋的, 畸形的, 毁容的, "
    "解剖学错误, 形态糟糕, 多余的肢体, 残缺的肢体, 融合的手指, 画得不好的手, 画得不好的脸, "
    "僵硬的表情, 杂乱的构图, 不协调的元素, 空旷的画面, 透视错误, 比例失调, 变形的物体, "
    "融合的物体, 物体穿模, 漂浮的物体, 平淡的光线, 不自然的光源, 单调的色彩, 奇怪的颜色, "
    "刺眼的颜色, 画面发灰"
)
#: What the release appends to every round's prompt.
RELEASE_PROMPT_SUFFIX = " 4K, realistic, high quality, HDR."


@dataclass
class SamplingDefaults:
    """Sampling settings of the official release; a checkpoint's ``spatia.json`` ("sampling") may override them."""

    steps: int = 40  # FlowUniPC steps
    guidance_scale: float = 3.5  # classifier-free guidance scale
    shift: float = 5.0  # flow-matching sigma shift
    control_scale: float = 1.0  # scale of the scene-projection control hints ("vace_scale")
    negative_prompt: str = RELEASE_NEGATIVE_PROMPT  # prompt of the unconditional branch
    prompt_suffix: str = RELEASE_PROMPT_SUFFIX  # appended to every prompt by the world-loop backend
    history_frames: int = 9  # known frames at the start of later rounds (-> 3 latent frames)
    first_clip_frames: int = 121  # frames of the first round (the input image is frame 0)
    later_clip_frames: int = 81  # frames of later rounds (history included)
    height: int = 704  # release resolution, px
    width: int = 1248
    fps: int = 24
    seed: int = 20917  # the release's seed, the same every round
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

    frames: np.ndarray | torch.Tensor | None  # uint8 (N, H, W, 3) ("np"), float [0, 1] (N, 3, H, W) ("pt"), None ("latent")
    latents: torch.Tensor  # float32 (1, C, 1 + (N-1)/4, h, w) final normalised latents of the clip (known frames first)


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
    (:class:`.scheduler.SpatiaFlowUniPCScheduler`; the shift is set per call).
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

    # -- loading and saving -----------------------------------------------------------------
    @classmethod
    def from_checkpoint(cls, folder: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype = "auto",
                        offload: str = "none") -> "SpatiaPipeline":
        """Load a checkpoint folder (:mod:`.checkpoint`) ready to sample on ``device``.

        Before any weight is read, the transformer's size from its config is checked against the
        device (:func:`check_device`); ``dtype`` ``auto`` is bfloat16 on CUDA, float32 elsewhere;
        ``offload`` as in :meth:`place`. Loading itself is :meth:`from_pretrained`.

        Raises:
            InputError: an unknown offload mode or dtype.
            BackendUnavailableError: a component folder is missing, the device cannot run the
                model, or a library is not installed.
            FileFormatError: a corrupt or incomplete folder.
        """
        from ...errors import FileFormatError, SpatiaError

        path = Path(folder)
        if offload not in OFFLOAD_MODES:
            raise InputError(f"unknown offload mode {offload!r}; choose one of {', '.join(OFFLOAD_MODES)}")
        missing = [c for c in COMPONENTS if not (path / c).is_dir()]
        if missing:
            raise BackendUnavailableError(f"checkpoint {str(path)!r} lacks {', '.join(missing)}")
        device = torch.device(device)
        check_device(transformer_params_from_config(path / "transformer" / "config.json"), device)
        torch_dtype = resolve_dtype(dtype, device)
        try:
            pipe = cls.from_pretrained(path, dtype=torch_dtype)
        except SpatiaError:
            raise
        except ImportError as exc:
            raise BackendUnavailableError(f"loading {path} needs {exc.name or exc}") from exc
        except Exception as exc:  # corrupt / incomplete files surface as many error types
            raise FileFormatError(f"cannot load {path}: {type(exc).__name__}: {exc}") from exc
        return pipe.place(device, offload)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> "SpatiaPipeline":
        """diffusers' ``DiffusionPipeline.from_pretrained`` for a local checkpoint folder, plus what our
        layout adds: ``spatia.json`` -> :attr:`defaults` (unless ``defaults=`` is given), ``lora/`` -> a
        peft adapter on the transformer (diffusers' ``load_lora_adapter``, after the strict checks of
        :func:`.lora.load_lora`).

        A folder written before checkpoints had a ``model_index.json`` is loaded component by
        component (:func:`.checkpoint.load_checkpoint`); of the keyword arguments only ``dtype``
        (or the older ``torch_dtype``) and ``defaults`` apply to it. Nothing is downloaded.

        Raises:
            FileFormatError: not a checkpoint folder (no folder, no ``spatia.json``).
            InputError: diffusers options for an old folder without ``model_index.json``.
        """
        from .checkpoint import MODEL_INDEX, load_checkpoint, read_metadata
        from .lora import load_lora

        path = Path(pretrained_model_name_or_path)
        kwargs.setdefault("defaults", SamplingDefaults.from_metadata(read_metadata(path)))
        if not (path / MODEL_INDEX).is_file():
            defaults, dtype, torch_dtype = kwargs.pop("defaults"), kwargs.pop("dtype", None), kwargs.pop("torch_dtype", None)
            if kwargs:
                raise InputError(f"{path} has no {MODEL_INDEX} (an older checkpoint); only dtype applies "
                                 f"to it, not {', '.join(sorted(kwargs))}")
            parts = load_checkpoint(path, components=COMPONENTS + ("lora",), dtype=dtype or torch_dtype)
            return cls(**{c: parts[c] for c in COMPONENTS}, defaults=defaults)
        pipe = super().from_pretrained(path, **kwargs)
        if (path / "lora").is_dir():
            load_lora(pipe.transformer, path / "lora")
        return pipe

    def save_pretrained(self, save_directory: str | Path, safe_serialization: bool = True, variant: str | None = None,
                        max_shard_size: int | str | None = None, push_to_hub: bool = False,
                        metadata: dict | None = None, **kwargs) -> None:
        """diffusers' ``DiffusionPipeline.save_pretrained`` (``model_index.json`` + one folder per
        component), plus what our layout adds: ``spatia.json`` (:attr:`defaults` as its "sampling",
        ``metadata`` merged over) and, for a transformer carrying an unmerged peft adapter, its base
        weights in ``transformer/`` and the adapter in ``lora/``.

        Writes in place; :func:`.checkpoint.save_checkpoint` wraps this in an atomic rename.
        """
        import shutil

        from .checkpoint import write_metadata
        from .lora import base_layers_only, has_lora, save_lora

        with base_layers_only(self.transformer):
            super().save_pretrained(save_directory, safe_serialization=safe_serialization, variant=variant,
                                    max_shard_size=max_shard_size, push_to_hub=push_to_hub, **kwargs)
        path = Path(save_directory)
        if has_lora(self.transformer):
            save_lora(self.transformer, path / "lora")
        elif (path / "lora").is_dir():
            shutil.rmtree(path / "lora")  # an adapter of what was saved here before
        write_metadata(path, metadata, sampling=dataclasses.asdict(self.defaults))

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
    def encode_prompt(self, prompt: str, max_sequence_length: int | None = None, clean: bool = True) -> torch.Tensor:
        """Text embeddings (1, L, text_dim) in the transformer's dtype, zero beyond the prompt's tokens.

        ``clean`` applies the release's prompt cleaning first (:func:`.prompt.clean_prompt`: ftfy,
        HTML unescape, whitespace). Cached (LRU) by (prompt, L, dtype): repeated prompts skip the
        text encoder.
        """
        if clean:
            from .prompt import clean_prompt

            prompt = clean_prompt(prompt)
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
    def encode_video(self, frames: np.ndarray, value_range: tuple[float, float] = (-1.0, 1.0)) -> torch.Tensor:
        """Normalised float32 latents of uint8 videos: (N, H, W, 3) -> (1, z, 1 + (N-1)/4, H/16, W/16), or a batch
        (B, N, H, W, 3) -> (B, z, ...) in one VAE call. N must be 1 + 4k.

        Pixels map linearly from [0, 255] to ``value_range`` (images [-1, 1]; the release's mask
        video [0, 1]), computed as the release does (``x * (hi - lo) / 255 + lo``); latents are
        ``(mu - mean) * (1 / std)``.
        """
        device = self._execution_device
        lo, hi = value_range
        x = torch.from_numpy(np.ascontiguousarray(frames)).to(device)
        x = x[None] if x.ndim == 4 else x
        x = (x.permute(0, 4, 1, 2, 3).to(self.vae.dtype) * ((hi - lo) / 255) + lo)
        z = self.vae.encode(x).latent_dist.mode().float()
        mean, std = self._latent_stats(device)
        return (z - mean) * (1.0 / std)

    @torch.no_grad()
    def encode_images(self, frames: np.ndarray) -> torch.Tensor:
        """Each frame (N, H, W, 3) encoded alone as a 1-frame latent -> (1, z, N, h, w) float32."""
        lat = self.encode_video(frames[:, None])  # a batch of N one-frame videos
        return lat.permute(2, 1, 0, 3, 4)

    @torch.no_grad()
    def encode_control(self, scene: np.ndarray, score: np.ndarray | None) -> torch.Tensor:
        """The control input of a clip: VAE(scene projection) ⊕ VAE(mask), (1, 2z, F, h, w) float32.

        ``scene``: uint8 (N, H, W, 3) rendered memory at the clip's poses; ``score``: the render
        score, uint8 (N, H, W) (255 = the memory covers the pixel) or bool visibility (True ->
        255), None = no score (a hole everywhere, as the release). The mask video is ``255 - score`` on all 3 channels, read
        in [0, 1] (hole = 1), exactly the release's ``control_score`` (``inference.py``:
        ``255 - render-score``; ``WanVideoUnit_ControlNetAsVACEEmbedder``: ``min_value=0``).
        """
        mask = mask_video(score, scene.shape[:3])
        return torch.cat([self.encode_video(scene), self.encode_video(mask, value_range=(0.0, 1.0))], dim=1)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents (1, z, F, h, w) -> frames float [-1, 1] (N, 3, H, W) (the VAE output, clamped)."""
        mean, std = self._latent_stats(latents.device)
        z = (latents.float() / (1.0 / std) + mean).to(self.vae.dtype)
        video = self.vae.decode(z).sample[0].float()  # (3, N, H, W)
        return video.clamp(-1, 1).permute(1, 0, 2, 3)

    @torch.no_grad()
    def decode_frames(self, latents: torch.Tensor) -> np.ndarray:
        """Normalised latents -> uint8 frames (N, H, W, 3), converted as the release does
        (``((x + 1) * 127.5).clip(0, 255)`` truncated to uint8)."""
        video = self.decode_latents(latents)
        return to_uint8(video.permute(0, 2, 3, 1))

    def model_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) the models run at: the nearest multiple of VAE factor x patch (at least one)."""
        m = self.size_multiple
        return max(m, int(round(height / m)) * m), max(m, int(round(width / m)) * m)

    def set_lora(self, enabled: bool) -> bool:
        """Switch the transformer's LoRA adapter on or off; returns whether it has one.

        The release runs round 1 without its LoRA and later rounds with it.
        """
        if not getattr(self.transformer, "_hf_peft_config_loaded", False):
            return False
        if enabled:
            self.transformer.enable_adapters()
        else:
            self.transformer.disable_adapters()
        return True

    # -- sampling --------------------------------------------------------------------------
    @torch.no_grad()
    def __call__(
        self,
        prompt: str = "",
        control_video=None,  # uint8 (N, H, W, 3) scene projection at every pose of the clip
        control_score=None,  # render score uint8 (N, H, W) (255 = covered) or bool visibility; None = holes
        known_frames=None,  # uint8 (h, H, W, 3) the clip's first h frames (input image or history), h = 1 + 4k
        reference_frames=None,  # uint8 (K, H, W, 3) retrieved reference frames
        num_frames: int | None = None,  # N (default: the control video's length); the control is padded to it
        height: int | None = None,  # output size; default the control video's
        width: int | None = None,
        num_inference_steps: int | None = None,  # default 40 (release)
        guidance_scale: float | None = None,  # default 3.5; 1 skips the unconditional pass
        negative_prompt: str | None = None,  # default the release's
        shift: float | None = None,  # default 5
        control_scale: float | None = None,  # default 1
        seed: int | None = None,  # default the release's 20917
        use_lora: bool | None = None,  # None: leave the adapter as it is
        progress: bool = True,
        output_type: str = "np",  # np | pt | latent
        max_sequence_length: int | None = None,
    ) -> SpatiaPipelineOutput:
        """Sample one round (see the module docstring). Returns all ``N`` frames, known ones included."""
        d = self.defaults
        steps = int(num_inference_steps if num_inference_steps is not None else d.steps)
        guidance = float(guidance_scale if guidance_scale is not None else d.guidance_scale)
        shift = float(shift if shift is not None else d.shift)
        control_scale = float(control_scale if control_scale is not None else d.control_scale)
        negative_prompt = d.negative_prompt if negative_prompt is None else negative_prompt
        seed = int(d.seed if seed is None else seed)
        if steps < 1:
            raise InputError(f"num_inference_steps must be >= 1, got {steps}")
        if output_type not in ("np", "pt", "latent"):
            raise InputError(f"output_type must be np, pt or latent, got {output_type!r}")
        device = self._execution_device
        check_device(sum(p.numel() for p in self.transformer.parameters()), device)

        # 1. inputs -> model size, N = 1 + 4k frames (the last pose's render repeats, as the release pads poses)
        if control_video is None:
            raise InputError("control_video (the scene projection) is required")
        scene = _as_frames(control_video, "control_video")
        if len(scene) == 0:
            raise InputError("control_video has no frames")
        score = None if control_score is None else _as_score(control_score, scene.shape[:3])
        out_h, out_w = int(height or scene.shape[1]), int(width or scene.shape[2])
        mh, mw = self.model_size(out_h, out_w)
        f = self.vae_scale_temporal
        n_out = int(num_frames or len(scene))
        n_model = 1 + f * math.ceil(max(n_out - 1, 0) / f)
        scene = _pad_frames(_resize(scene, mh, mw), n_model)
        if score is not None:
            score = _pad_frames(_resize(score, mh, mw), n_model)
        known = _as_frames(known_frames, "known_frames") if known_frames is not None else None
        if known is not None and len(known):
            if (len(known) - 1) % f:
                raise InputError(f"known_frames must number 1 + {f}k (the release: 1 or 9), got {len(known)}")
            if len(known) > n_model:
                raise InputError(f"{len(known)} known frames do not fit a clip of {n_model} frames")
            known = _resize(known, mh, mw)
        refs = _as_frames(reference_frames, "reference_frames") if reference_frames is not None else None

        # 2. text
        cond = self.encode_prompt(prompt, max_sequence_length)
        uncond = self.encode_prompt(negative_prompt, max_sequence_length) if guidance != 1.0 else None

        # 3. clean latents: control, known frames, references
        dtype = self.transformer.dtype
        control = self.encode_control(scene, score).to(dtype)
        z = self.vae.config.z_dim
        n_lat = (n_model - 1) // f + 1
        shape = (1, z, n_lat, mh // self.vae_scale_spatial, mw // self.vae_scale_spatial)
        noise = randn_tensor(shape, generator=torch.Generator("cpu").manual_seed(seed), device=torch.device("cpu"),
                             dtype=torch.float32).to(device)
        latents = noise.clone()
        n_known = 0
        if known is not None and len(known):
            known_lat = self.encode_video(known)
            n_known = known_lat.shape[2]
            latents[:, :, :n_known] = known_lat
        ref_lat = None
        if refs is not None and len(refs):
            ref_lat = self.encode_images(_resize(refs, mh, mw)).to(dtype)

        # 4. FlowUniPC loop: per-frame timesteps (0 for the known frames), CFG, known latents restored
        from .scheduler import SpatiaFlowUniPCScheduler

        scheduler = SpatiaFlowUniPCScheduler.from_config(self.scheduler.config)
        scheduler.set_timesteps(steps, device=device, shift=shift)
        had_lora = self.set_lora(bool(use_lora)) if use_lora is not None else False
        frame_t = torch.zeros(1, n_lat, device=device)
        try:
            for t in tqdm(scheduler.timesteps, desc="spatia", disable=not progress, leave=False):
                frame_t[:, n_known:] = t
                x = latents.to(dtype)
                pred = self.transformer(x, frame_t, cond, control_hidden_states=control, reference_latents=ref_lat,
                                        control_scale=control_scale, return_dict=False)[0].float()
                if uncond is not None:
                    pred_u = self.transformer(x, frame_t, uncond, control_hidden_states=control,
                                              reference_latents=ref_lat, control_scale=control_scale,
                                              return_dict=False)[0].float()
                    pred = pred_u + guidance * (pred - pred_u)
                latents = scheduler.step(pred, t, latents, return_dict=False)[0]
                if n_known:
                    latents[:, :, :n_known] = known_lat  # the known frames stay clean
        finally:
            if had_lora:
                self.set_lora(True)

        # 5. decode the whole clip, trim the padding, resize back
        self.maybe_free_model_hooks()
        if output_type == "latent":
            return SpatiaPipelineOutput(frames=None, latents=latents)
        video = self.decode_latents(latents)[:n_out]  # (N, 3, mh, mw) in [-1, 1]
        if output_type == "pt":
            video = (video + 1) / 2
            if (mh, mw) != (out_h, out_w):
                video = torch.nn.functional.interpolate(video, size=(out_h, out_w), mode="bilinear", antialias=True,
                                                        align_corners=False).clamp(0, 1)
            return SpatiaPipelineOutput(frames=video.cpu(), latents=latents)
        frames = to_uint8(video.permute(0, 2, 3, 1))
        return SpatiaPipelineOutput(frames=_resize(frames, out_h, out_w), latents=latents)


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """VAE output in [-1, 1] (..., 3) -> uint8 as the release converts it: ``((x + 1) * 127.5).clip(0, 255)``, truncated."""
    return ((video.float() + 1) * 127.5).clip(0, 255).to(torch.uint8).cpu().numpy()


def mask_video(score: np.ndarray | None, shape: tuple[int, int, int]) -> np.ndarray:
    """The release's mask video from a render score: uint8 (N, H, W, 3) = ``255 - score`` (hole = 255).

    ``score`` uint8 (N, H, W) or bool visibility (True -> 255); None = no score, a hole everywhere
    (mask 255: the release's ``control_score=None`` is a mask of ones).
    """
    if score is None:
        return np.full((*shape, 3), 255, np.uint8)
    score = _as_score(score, shape)
    return np.repeat((255 - score)[..., None], 3, axis=-1)


def _as_score(score, shape: tuple[int, int, int]) -> np.ndarray:
    """Render score as uint8 (N, H, W): bool -> 0/255, uint8 as is, (N, H, W, 3) -> first channel."""
    if isinstance(score, torch.Tensor):
        score = score.detach().cpu().numpy()
    score = np.asarray(score)
    if score.ndim == 4 and score.shape[-1] == 3:
        score = score[..., 0]
    if score.dtype == bool:
        score = score.astype(np.uint8) * 255
    if score.ndim != 3 or score.dtype != np.uint8:
        raise InputError(f"control_score must be uint8 or bool (N, H, W), got {score.shape} {score.dtype}")
    if score.shape[0] != shape[0] or score.shape[1:] != shape[1:]:
        raise InputError(f"control_score {score.shape} does not match control_video {shape}")
    return score


def _pad_frames(frames: np.ndarray, n: int) -> np.ndarray:
    """Trim to, or repeat the last frame up to, ``n`` frames."""
    if len(frames) >= n:
        return frames[:n]
    return np.concatenate([frames, np.repeat(frames[-1:], n - len(frames), axis=0)])
