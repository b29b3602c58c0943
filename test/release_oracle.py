"""The official Spatia release as a test oracle: its own code, loaded by path, on tiny random models.

The release (``../shared/reference/spatia_release``, read-only, never copied into the project) is
imported from its folder as the private package ``spatia_release_wan`` (its ``wan/`` folder), on top
of the installed ``diffsynth==1.1.9`` it builds on. What is stubbed, and why:

* ``diffsynth``, ``diffsynth.models``, ``diffsynth.prompters``: bare packages (as
  ``bench/diffsynth_reference.py`` does), because their ``__init__`` imports every model family
  (torchvision, modelscope, ...); the submodules the release imports (``diffsynth.utils``,
  ``.vram_management``, ``.schedulers.flow_match``, ``.lora``, ``.models.utils``,
  ``.prompters.base_prompter``) are the real installed files. ``diffsynth.models.load_state_dict``
  is the real ``diffsynth.models.utils.load_state_dict``.
* while importing only: ``modelscope`` (``diffsynth.utils`` imports ``snapshot_download``, used only
  to download) and ``diffsynth.models.model_manager`` (``BasePrompter`` names ``ModelManager`` in an
  annotation); both are removed from ``sys.modules`` afterwards.
* the release's own ``wan.model_manager`` (loads checkpoint files, imports DiffSynth's downloader)
  and ``wan.wan_video_image_encoder`` (CLIP image encoder, imports torchvision; Wan2.2-TI2V has no
  image input): placeholders that raise if used.
* ``logging.basicConfig`` is a no-op while ``wan_video_dit`` is imported (it configures the root
  logger at import time).

Nothing else is replaced: the pipeline, its units, ``model_fn_wan_video``, the models, the VAE,
the text encoder, the prompter and the UniPC scheduler are the release's own code.

Functions:

* :func:`release_root` / :func:`require_release` / :func:`load_release`;
* :func:`release_negative_prompt`, :func:`release_set_pipe_units`: ``NEGATIVE_PROMPT`` and
  ``set_pipe_units`` of the release's ``inference.py`` (read with :mod:`ast`: that script imports
  Open3D, Triton and MapAnything at top level);
* :func:`tiny_pair`: tiny random release models and ours with the same weights, through our
  converters (``convert/``);
* :func:`release_pipeline` / :func:`our_pipeline`: the release's ``WanVideoPipeline`` and our
  ``SpatiaPipeline`` on those models, CPU, float32.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import logging
import os
import sys
import tempfile
import types
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from unittest import mock

import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)
import torch

__all__ = [
    "RELEASE_ENV",
    "TinyPair",
    "load_release",
    "our_pipeline",
    "release_negative_prompt",
    "release_pipeline",
    "release_root",
    "release_set_pipe_units",
    "require_release",
    "tiny_pair",
]

REPO = Path(__file__).resolve().parents[1]
RELEASE_ENV = "SPATIA_RELEASE_DIR"  # overrides the default ../shared/reference/spatia_release
DEFAULT_RELEASE = REPO.parent / "shared" / "reference" / "spatia_release"
PACKAGE = "spatia_release_wan"  # the name the release's wan/ folder is imported under
RELEASE_MODULES = (
    "wan_video_dit", "wan_video_vace", "wan_video_vae", "wan_video_text_encoder", "wan_prompter",
    "flow_match", "wan_video_new",
)


# ----------------------------------------------------------------------------- locating
def release_root() -> Path | None:
    """The release folder (``$SPATIA_RELEASE_DIR`` or ``../shared/reference/spatia_release``), or
    ``None`` when it is absent (it must hold ``wan/wan_video_new.py``)."""
    root = Path(os.environ.get(RELEASE_ENV) or DEFAULT_RELEASE)
    return root if (root / "wan" / "wan_video_new.py").is_file() else None


def require_release() -> Path:
    """The release folder; skips the test (fails it under ``CI=true``) when the folder or what
    loading it needs (``diffsynth``, ``ftfy``) is missing."""
    root = release_root()
    where = os.environ.get(RELEASE_ENV) or DEFAULT_RELEASE
    missing = [] if root is not None else [f"the official Spatia release at {where}"]
    for package, hint in (("diffsynth", "pip install --no-deps diffsynth==1.1.9"), ("ftfy", "requirements.txt")):
        if importlib.util.find_spec(package) is None:
            missing.append(f"{package} ({hint})")
    if missing:
        reason = "release oracle unavailable: missing " + "; ".join(missing)
        _prereq.missing(reason)
    return root


# ----------------------------------------------------------------------------- importing
class _Placeholder:
    """Stands in for a release / DiffSynth class the oracle does not load."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError(f"{type(self).__name__} is a placeholder in test/release_oracle.py (not loaded)")


def _stub(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


def _placeholder_class(name: str) -> type:
    return type(name, (_Placeholder,), {})


def _diffsynth_reference() -> types.ModuleType:
    """``bench/diffsynth_reference.py`` (shared by the DiffSynth-based tests)."""
    module = sys.modules.get("diffsynth_reference")
    if module is None:
        spec = importlib.util.spec_from_file_location("diffsynth_reference", REPO / "bench" / "diffsynth_reference.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["diffsynth_reference"] = module
        spec.loader.exec_module(module)
    return module


@contextmanager
def _temporary_modules(modules: dict[str, types.ModuleType]):
    """Put ``modules`` in ``sys.modules`` (where absent) and remove exactly those afterwards."""
    added = {name: m for name, m in modules.items() if name not in sys.modules}
    sys.modules.update(added)
    try:
        yield
    finally:
        for name, module in added.items():
            if sys.modules.get(name) is module:
                del sys.modules[name]


def _prepare_diffsynth() -> None:
    """The DiffSynth submodules the release imports, past DiffSynth's package ``__init__`` files."""
    ref = _diffsynth_reference()
    root = ref.diffsynth_root()
    for name, sub in (("diffsynth", ""), ("diffsynth.models", "models"), ("diffsynth.prompters", "prompters")):
        ref._bare_package(name, root / sub if sub else root)
    models = sys.modules["diffsynth.models"]
    if not hasattr(models, "load_state_dict"):
        models.load_state_dict = importlib.import_module("diffsynth.models.utils").load_state_dict

    def no_download(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("modelscope is stubbed in test/release_oracle.py: nothing is downloaded")

    with _temporary_modules({
        "modelscope": _stub("modelscope", snapshot_download=no_download),
        "diffsynth.models.model_manager": _stub("diffsynth.models.model_manager",
                                                ModelManager=_placeholder_class("ModelManager")),
    }):
        for name in ("diffsynth.utils", "diffsynth.vram_management", "diffsynth.schedulers.flow_match",
                     "diffsynth.lora", "diffsynth.prompters.base_prompter"):
            importlib.import_module(name)


_loaded: types.SimpleNamespace | None = None


def load_release() -> types.SimpleNamespace:
    """Import the release's ``wan`` package (see the module docstring for the stubs).

    Returns a namespace with the modules ``wan_video_dit``, ``wan_video_vace``, ``wan_video_vae``,
    ``wan_video_text_encoder``, ``wan_prompter``, ``flow_match``, ``wan_video_new``, the folder
    ``root``, and shortcuts ``WanModel``, ``VaceWanModel``, ``VideoVAE38_``, ``WanVideoVAE38``,
    ``WanTextEncoder``, ``WanPrompter``, ``WanVideoPipeline``, ``model_fn_wan_video``,
    ``FlowUniPCMultistepScheduler``. Cached: later calls return the same namespace.
    """
    global _loaded
    if _loaded is not None:
        return _loaded
    root = require_release()
    _prepare_diffsynth()
    if PACKAGE not in sys.modules:
        folder = root / "wan"
        spec = importlib.util.spec_from_file_location(
            PACKAGE, folder / "__init__.py", submodule_search_locations=[str(folder)])
        package = importlib.util.module_from_spec(spec)
        sys.modules[PACKAGE] = package
        spec.loader.exec_module(package)
        # release modules the oracle does not load (checkpoint loading; the CLIP image encoder)
        sys.modules[f"{PACKAGE}.model_manager"] = _stub(
            f"{PACKAGE}.model_manager", ModelManager=_placeholder_class("ModelManager"))
        sys.modules[f"{PACKAGE}.wan_video_image_encoder"] = _stub(
            f"{PACKAGE}.wan_video_image_encoder", WanImageEncoder=_placeholder_class("WanImageEncoder"))
    with mock.patch.object(logging, "basicConfig", lambda *a, **k: None):
        modules = {name: importlib.import_module(f"{PACKAGE}.{name}") for name in RELEASE_MODULES}
    ns = types.SimpleNamespace(root=root, **modules)
    ns.WanModel = ns.wan_video_dit.WanModel
    ns.VaceWanModel = ns.wan_video_vace.VaceWanModel
    ns.VideoVAE38_ = ns.wan_video_vae.VideoVAE38_
    ns.WanVideoVAE38 = ns.wan_video_vae.WanVideoVAE38
    ns.WanTextEncoder = ns.wan_video_text_encoder.WanTextEncoder
    ns.WanPrompter = ns.wan_prompter.WanPrompter
    ns.WanVideoPipeline = ns.wan_video_new.WanVideoPipeline
    ns.model_fn_wan_video = ns.wan_video_new.model_fn_wan_video
    ns.FlowUniPCMultistepScheduler = ns.flow_match.FlowUniPCMultistepScheduler
    _loaded = ns
    return ns


# ----------------------------------------------------------------------------- inference.py
def _inference_tree() -> ast.Module:
    path = load_release().root / "inference.py"
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def release_negative_prompt() -> str:
    """``NEGATIVE_PROMPT`` of the release's ``inference.py`` (the negative prompt of every round)."""
    for node in _inference_tree().body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NEGATIVE_PROMPT" for t in node.targets):
            return ast.literal_eval(node.value)
    raise LookupError("NEGATIVE_PROMPT not found in the release's inference.py")


_set_pipe_units: Callable | None = None


def release_set_pipe_units(pipe, hist_frames: int = 9, use_history: bool = False) -> None:
    """The release's ``inference.set_pipe_units``: the first round's units (``use_history=False``:
    input image fused at latent frame 0) or the later rounds' (history clip + reference images)."""
    global _set_pipe_units
    if _set_pipe_units is None:
        defs = [n for n in _inference_tree().body if isinstance(n, ast.FunctionDef) and n.name == "set_pipe_units"]
        if not defs:
            raise LookupError("set_pipe_units not found in the release's inference.py")
        new = load_release().wan_video_new
        namespace = {name: getattr(new, name) for name in dir(new) if name.startswith("WanVideoUnit_")}
        exec(compile(ast.Module(body=defs, type_ignores=[]), "inference.py", "exec"), namespace)  # noqa: S102
        _set_pipe_units = namespace["set_pipe_units"]
    _set_pipe_units(pipe, hist_frames=hist_frames, use_history=use_history)


# ----------------------------------------------------------------------------- tiny models
#: Sizes of the tiny pair: the 5B model's structure scaled down (head dim 32: rotary split 12/10/10
#: in both implementations), latents of 64x96 px videos are 4x6 (2x3 tokens per latent frame).
TINY = dict(
    z_dim=8, vae_dim=8, vae_dec_dim=8, vae_dim_mult=(1, 2, 2, 2), vae_res_blocks=1,
    dit_heads=2, dit_head_dim=32, dit_ffn=96, dit_layers=4, vace_layers=(0, 2), freq_dim=32,
    t5_vocab=256, t5_dim=32, t5_heads=4, t5_ffn=64, t5_layers=2, t5_buckets=8,
)


@dataclass
class TinyPair:
    """Tiny random release models and ours with the same weights (through ``convert/``).

    ``release``: ``dit`` (``WanModel``), ``vace`` (``VaceWanModel``), ``vae`` (``WanVideoVAE38``),
    ``text_encoder`` (``WanTextEncoder``), ``tokenizer_dir`` (our tiny tokenizer, saved),
    ``prompter`` (``WanPrompter`` on that tokenizer and text encoder).
    ``ours``: ``transformer``, ``vae``, ``text_encoder``, ``tokenizer``, ``scheduler`` (the keyword
    arguments of ``SpatiaPipeline``). ``transformer_config``: our transformer's config.
    The models are shared by every pipeline built from the pair: do not change their weights.
    """

    release: types.SimpleNamespace
    ours: types.SimpleNamespace
    transformer_config: dict
    sizes: dict


def _randomize_norms(module: torch.nn.Module, g: torch.Generator) -> None:
    """Norm gains 1 + 0.2·N(0, 1) (default inits leave them at 1, which would hide a missing one)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))


def _randomize_all(module: torch.nn.Module, g: torch.Generator, scale: float = 0.2) -> None:
    """Every tensor random (norm gains around 1), as ``test_spatia_convert_base.py`` does."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name or "gamma" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))


def _release_models(R: types.SimpleNamespace, seed: int, s: dict) -> types.SimpleNamespace:
    g = torch.Generator().manual_seed(seed)
    dim = s["dit_heads"] * s["dit_head_dim"]
    # the Wan2.2-TI2V-5B configuration of the release's WanModel (hash 1f5ab770... in
    # wan_video_dit.py), scaled down
    dit = R.WanModel(
        dim=dim, in_dim=s["z_dim"], ffn_dim=s["dit_ffn"], out_dim=s["z_dim"], text_dim=s["t5_dim"],
        freq_dim=s["freq_dim"], eps=1e-6, patch_size=(1, 2, 2), num_heads=s["dit_heads"],
        num_layers=s["dit_layers"], has_image_input=False, seperated_timestep=True,
        require_clip_embedding=False, require_vae_embedding=False, fuse_vae_embedding_in_latents=True,
    )
    vace = R.VaceWanModel(
        vace_layers=tuple(s["vace_layers"]), vace_in_dim=2 * s["z_dim"], patch_size=(1, 2, 2),
        has_image_input=False, dim=dim, num_heads=s["dit_heads"], ffn_dim=s["dit_ffn"], eps=1e-6,
    )
    _randomize_norms(dit, g)
    _randomize_norms(vace, g)

    # WanVideoVAE38 (what Wan2.2_VAE.pth loads into) always builds the full-size VideoVAE38_: build
    # it on the meta device, then give it a tiny VideoVAE38_ and random latent statistics.
    with torch.device("meta"):
        vae = R.WanVideoVAE38(z_dim=s["z_dim"], dim=s["vae_dim"])
    vae.model = R.VideoVAE38_(
        dim=s["vae_dim"], z_dim=s["z_dim"], dec_dim=s["vae_dec_dim"], dim_mult=list(s["vae_dim_mult"]),
        num_res_blocks=s["vae_res_blocks"], attn_scales=[], temperal_downsample=[False, True, True], dropout=0.0,
    ).eval().requires_grad_(False)
    _randomize_all(vae.model, g)
    with torch.no_grad():  # decoded pixels mostly inside [-1, 1], so the final clamp hides little
        for p in vae.model.decoder.head[2].parameters():
            p.mul_(0.05)
    vae.mean = 0.1 * torch.randn(s["z_dim"], generator=g)
    vae.std = 0.8 + 0.4 * torch.rand(s["z_dim"], generator=g)
    vae.scale = [vae.mean, 1.0 / vae.std]

    text_encoder = R.WanTextEncoder(
        vocab=s["t5_vocab"], dim=s["t5_dim"], dim_attn=s["t5_dim"], dim_ffn=s["t5_ffn"], num_heads=s["t5_heads"],
        num_layers=s["t5_layers"], num_buckets=s["t5_buckets"], shared_pos=False, dropout=0.1,
    )
    _randomize_all(text_encoder, g)
    return types.SimpleNamespace(dit=dit.eval(), vace=vace.eval(), vae=vae.eval(), text_encoder=text_encoder.eval())


def _our_models(release: types.SimpleNamespace, tokenizer_dir: Path, s: dict) -> tuple[types.SimpleNamespace, dict]:
    from transformers import AutoTokenizer

    from spatia_core.generators.spatia import convert
    from spatia_core.generators.spatia.tiny import tiny_scheduler
    from spatia_core.generators.spatia.transformer import SpatiaTransformer3DModel, tiny_config

    cfg = tiny_config(
        num_attention_heads=s["dit_heads"], attention_head_dim=s["dit_head_dim"], in_channels=s["z_dim"],
        out_channels=s["z_dim"], text_dim=s["t5_dim"], freq_dim=s["freq_dim"], ffn_dim=s["dit_ffn"],
        num_layers=s["dit_layers"], vace_layers=list(s["vace_layers"]), vace_in_channels=2 * s["z_dim"],
    )
    transformer = SpatiaTransformer3DModel(**cfg)
    state = {**release.dit.state_dict(), **release.vace.state_dict()}
    transformer.load_state_dict(convert.convert_diffsynth_state_dict(state, convert.expected_shapes(cfg)), strict=True)

    vae_cfg = convert.wan22_vae_config(
        base_dim=s["vae_dim"], decoder_base_dim=s["vae_dec_dim"], z_dim=s["z_dim"], dim_mult=list(s["vae_dim_mult"]),
        num_res_blocks=s["vae_res_blocks"], latents_mean=release.vae.mean.tolist(),
        latents_std=release.vae.std.tolist(),
    )
    vae = convert.build_wan22_vae(vae_cfg)
    # WanVideoVAE38's state dict is the .pth's names under "model.", as DiffSynth loads the file
    vae.load_state_dict(convert.convert_wan22_vae_state_dict(
        release.vae.state_dict(), convert.wan22_vae_expected_shapes(vae_cfg)), strict=True)

    t5_cfg = convert.umt5_xxl_config(
        vocab_size=s["t5_vocab"], d_model=s["t5_dim"], d_kv=s["t5_dim"] // s["t5_heads"], d_ff=s["t5_ffn"],
        num_layers=s["t5_layers"], num_heads=s["t5_heads"], relative_attention_num_buckets=s["t5_buckets"],
    )
    text_encoder = convert.build_umt5_encoder(t5_cfg)
    text_encoder.load_state_dict(convert.convert_umt5_state_dict(
        release.text_encoder.state_dict(), convert.umt5_expected_shapes(t5_cfg)), strict=True)

    ours = types.SimpleNamespace(
        transformer=transformer.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(),
        tokenizer=AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True),
        scheduler=tiny_scheduler(),
    )
    return ours, cfg


_tmp_dirs: list[tempfile.TemporaryDirectory] = []  # tokenizer folders, removed at interpreter exit


def tiny_pair(seed: int = 0, workdir: Path | str | None = None) -> TinyPair:
    """Tiny random release components and ours with the same weights.

    Release: ``WanModel`` in the Wan2.2-TI2V-5B configuration (``seperated_timestep``,
    ``fuse_vae_embedding_in_latents``, no image input, no VAE / CLIP embedding), ``VaceWanModel``
    (control blocks at main blocks 0 and 2, ``vace_in_dim`` = 2 x latent channels), a tiny
    ``WanVideoVAE38`` (random weights and latent statistics), a ``WanTextEncoder``, and our tiny
    word-level tokenizer saved with ``save_pretrained`` in ``workdir`` (a temporary folder when
    ``None``), read by a ``WanPrompter`` (``fetch_tokenizer`` loads it with ``AutoTokenizer``). Ours: the same weights through
    ``convert_diffsynth_state_dict`` / ``convert_wan22_vae_state_dict`` / ``convert_umt5_state_dict``
    into ``SpatiaTransformer3DModel`` / ``AutoencoderKLWan`` / ``UMT5EncoderModel``, the tokenizer
    read back from that folder, and ``tiny_scheduler()``. Same seed, same weights; the global RNG
    is left as it was.
    """
    from spatia_core.generators.spatia.tiny import tiny_tokenizer

    R = load_release()
    if workdir is None:
        _tmp_dirs.append(tempfile.TemporaryDirectory(prefix="release_oracle_"))
        workdir = _tmp_dirs[-1].name
    tokenizer_dir = Path(workdir) / "tokenizer"
    tiny_tokenizer().save_pretrained(str(tokenizer_dir))
    sizes = dict(TINY)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        release = _release_models(R, seed, sizes)
    release.tokenizer_dir = tokenizer_dir
    release.prompter = R.WanPrompter(tokenizer_path=str(tokenizer_dir))  # text_len 512, clean="whitespace"
    release.prompter.fetch_models(release.text_encoder)
    ours, cfg = _our_models(release, tokenizer_dir, sizes)
    return TinyPair(release=release, ours=ours, transformer_config=cfg, sizes=sizes)


# ----------------------------------------------------------------------------- pipelines
def release_pipeline(pair: TinyPair, use_history: bool = False, hist_frames: int = 9):
    """The release's ``WanVideoPipeline(device="cpu", torch_dtype=torch.float32)`` on the pair's
    release models, as ``WanVideoPipeline.from_pretrained`` assembles it (division factors from the
    VAE, prompter given the text encoder and the tokenizer folder), with the units of
    :func:`release_set_pipe_units`. VRAM management is not enabled (it needs CUDA); without it
    ``load_models_to_device`` does nothing, so everything runs where it is: on the CPU, in fp32.
    ``call_latent_inference`` needs ``seed`` (it seeds a generator with it)."""
    R = load_release()
    pipe = R.WanVideoPipeline(device="cpu", torch_dtype=torch.float32)
    pipe.text_encoder = pair.release.text_encoder
    pipe.dit = pair.release.dit
    pipe.vae = pair.release.vae
    pipe.vace = pair.release.vace
    pipe.height_division_factor = pipe.vae.upsampling_factor * 2
    pipe.width_division_factor = pipe.vae.upsampling_factor * 2
    pipe.prompter.fetch_models(pipe.text_encoder)
    pipe.prompter.fetch_tokenizer(str(pair.release.tokenizer_dir))
    release_set_pipe_units(pipe, hist_frames=hist_frames, use_history=use_history)
    return pipe.eval()


def our_pipeline(pair: TinyPair):
    """Our ``SpatiaPipeline`` on the pair's converted models (release sampling defaults)."""
    from spatia_core.generators.spatia.pipeline import SpatiaPipeline

    o = pair.ours
    return SpatiaPipeline(transformer=o.transformer, vae=o.vae, text_encoder=o.text_encoder,
                          tokenizer=o.tokenizer, scheduler=o.scheduler)
