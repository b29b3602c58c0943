"""``spatia train``: train the Spatia diffusion model (stage 1 control blocks, stage 2 LoRA).

    spatia train --checkpoint ckpt/ --stage 1 --data re10k:/data/re10k --out runs/s1
    spatia train --checkpoint runs/s1/final --stage 2 --data rgbd:/data/seq1 --out runs/s2
    spatia train --tiny --stage 0 --steps 50 --data procedural:16 --width 64 --height 64 --out /tmp/t
    accelerate launch -m spatia_core.cli train ...        # many GPUs / nodes, unchanged

Options may also come from a YAML file (``--config``) whose keys are the long option names with
underscores (``steps: 100``, ``data: [procedural:32]``); flags given on the command line win.
Resume with ``--resume auto`` (latest state under ``OUT/state``) or ``--resume OUT/state/step-N``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("spatia.train")

#: Defaults of every option (None in the parser so a YAML value can fill what the flags omit).
DEFAULTS = {
    "config": "", "checkpoint": "", "tiny": False, "stage": 1, "steps": None, "lr": None, "batch_size": 1,
    "grad_accum": 1, "lora_rank": 64, "lora_alpha": None, "seed": 0, "data": ["procedural:64"],
    "val_data": [], "val_clips": 8, "history": 9, "frames": 81, "references": 7, "width": 1248, "height": 704,
    "voxel_size": 0.01, "stride": 1, "prompt": "", "depth_source": "", "out": "", "resume": "",
    "no_control": False, "mixed_precision": "no", "no_gradient_checkpointing": False, "save_every": 1000,
    "val_every": 100, "log_every": 10, "text_dropout": 0.1, "max_sequence_length": None,
    "calibrate_latents": None, "device": "cpu", "no_progress": False,
}
_STAGE_STEPS = {0: 1000, 1: 8000, 2: 5000}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``spatia train``."""
    p.add_argument("--config", default=None, help="YAML file of options (keys = long option names)")
    p.add_argument("--checkpoint", default=None, help="initial weights: a checkpoint folder in our layout")
    p.add_argument("--tiny", action="store_true", default=None, help="start from a tiny random model (tests, CPU)")
    p.add_argument("--stage", type=int, choices=(0, 1, 2), default=None,
                   help="1: control blocks only (default); 2: LoRA on the main blocks; 0: everything (tiny models)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 8000 / 5000 for stage 1 / 2)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-5 / 1e-4 for stage 1 / 2)")
    p.add_argument("--batch-size", type=int, default=None, help="clips per micro-batch and process")
    p.add_argument("--grad-accum", type=int, default=None, help="micro-batches per optimizer step")
    p.add_argument("--lora-rank", type=int, default=None, help="stage 2 LoRA rank (default 64)")
    p.add_argument("--lora-alpha", type=float, default=None, help="stage 2 LoRA alpha (default = rank)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--data", action="append", default=None, metavar="SPEC",
                   help="training data, repeatable: procedural[:N], rgbd:FOLDER, re10k:FOLDER (clip folder or root)")
    p.add_argument("--val-data", action="append", default=None, metavar="SPEC",
                   help="validation data (default: procedural rooms not used for training)")
    p.add_argument("--val-clips", type=int, default=None, help="clips of the default validation set")
    p.add_argument("--history", type=int, default=None, help="history frames per clip (default 9)")
    p.add_argument("--frames", type=int, default=None, help="target frames per clip (1 + 4k; default 81)")
    p.add_argument("--references", type=int, default=None, help="reference frames per clip (default 7)")
    p.add_argument("--width", type=int, default=None, help="frame width (multiple of 32; default 1248)")
    p.add_argument("--height", type=int, default=None, help="frame height (multiple of 32; default 704)")
    p.add_argument("--voxel-size", type=float, default=None, help="voxel size of each clip's memory (default 0.01)")
    p.add_argument("--stride", type=int, default=None, help="frame step inside a clip of a folder source")
    p.add_argument("--prompt", default=None, help="prompt of clips without prompt.txt")
    p.add_argument("--depth-source", default=None,
                   help="depth for RE10K folders without depth/: a geometry_update depth source name (e.g. multiview)")
    p.add_argument("--out", default=None, help="output folder (states, checkpoints, log.jsonl)")
    p.add_argument("--resume", default=None, help="a state folder, or 'auto' for the latest under OUT/state")
    p.add_argument("--no-control", action="store_true", default=None, help="zero the scene-projection control (ablation)")
    p.add_argument("--mixed-precision", choices=("no", "fp16", "bf16"), default=None)
    p.add_argument("--no-gradient-checkpointing", action="store_true", default=None)
    p.add_argument("--save-every", type=int, default=None, help="steps between states and checkpoints")
    p.add_argument("--val-every", type=int, default=None, help="steps between validations")
    p.add_argument("--log-every", type=int, default=None, help="steps between log lines")
    p.add_argument("--text-dropout", type=float, default=None, help="chance of training on the empty prompt")
    p.add_argument("--max-sequence-length", type=int, default=None, help="prompt tokens (default: the checkpoint's)")
    p.add_argument("--calibrate-latents", action=argparse.BooleanOptionalAction, default=None,
                   help="set the VAE's latent statistics from the data (default: on with --tiny only)")
    p.add_argument("--device", default=None, help="where clips are encoded (training uses accelerate's device)")
    p.add_argument("--no-progress", action="store_true", default=None)


def resolve_options(args: argparse.Namespace) -> dict:
    """Merge flags over the YAML file over :data:`DEFAULTS`."""
    import yaml

    from ..errors import InputError

    opts = dict(DEFAULTS)
    if getattr(args, "config", None):
        try:
            data = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InputError(f"cannot read {args.config}: {exc}") from None
        if not isinstance(data, dict):
            raise InputError(f"{args.config} must hold a mapping of options")
        unknown = sorted(set(k.replace("-", "_") for k in data) - set(DEFAULTS))
        if unknown:
            raise InputError(f"{args.config}: unknown options {unknown}")
        opts.update({k.replace("-", "_"): v for k, v in data.items()})
    for key in DEFAULTS:
        value = getattr(args, key, None)
        if value is not None:
            opts[key] = value
    for key in ("data", "val_data"):
        if isinstance(opts[key], str):
            opts[key] = [opts[key]]
    if opts["steps"] is None:
        opts["steps"] = _STAGE_STEPS[int(opts["stage"])]
    if not opts["out"]:
        raise InputError("--out is required")
    if bool(opts["checkpoint"]) == bool(opts["tiny"]):
        raise InputError("give exactly one of --checkpoint CKPT or --tiny")
    return opts


def _dataset(spec_text: str, clip_spec, opts: dict, seed: int, depth_source):
    from ..errors import InputError
    from .data import ProceduralClips, Re10kClips, RGBDFolderClips

    kind, _, arg = str(spec_text).partition(":")
    if kind == "procedural":
        n = int(arg) if arg else 64
        return ProceduralClips(n, clip_spec, seed=seed, spacing=max(0.01, min(0.05, clip_spec.voxel_size)),
                               prompt=opts["prompt"] or "a cozy indoor room with a table and a sofa")
    if kind == "rgbd" and arg:
        return RGBDFolderClips(arg, clip_spec, stride=opts["stride"], prompt=opts["prompt"], seed=seed)
    if kind == "re10k" and arg:
        return Re10kClips(arg, clip_spec, depth_source=depth_source, stride=opts["stride"], prompt=opts["prompt"], seed=seed)
    raise InputError(f"unknown data spec {spec_text!r}; use procedural[:N], rgbd:FOLDER or re10k:FOLDER")


def _latest_state(out: Path) -> str | None:
    states = [p for p in (out / "state").glob("step-*") if p.name[5:].isdigit() and (p / "trainer.json").is_file()]
    return str(max(states, key=lambda p: int(p.name[5:]))) if states else None


def run(args: argparse.Namespace) -> int:
    """Train; returns 0 on success (input errors raise :class:`~spatia_core.errors.SpatiaError`)."""
    import torch

    from ..errors import InputError
    from .data import ClipSpec, ConcatClips
    from .flow import FlowConfig
    from .latents import ClipEncoder, calibrate_latent_stats, encode_dataset
    from .trainer import TrainConfig, Trainer

    opts = resolve_options(args)
    out = Path(opts["out"])
    seed = int(opts["seed"])
    torch.manual_seed(seed)

    # 1. components
    if opts["tiny"]:
        from ..generators.spatia.tiny import TINY_MAX_SEQUENCE_LENGTH, tiny_components, tiny_metadata

        comps = tiny_components(seed)
        metadata = tiny_metadata()
        max_len = opts["max_sequence_length"] or TINY_MAX_SEQUENCE_LENGTH
    else:
        from ..generators.spatia.checkpoint import load_checkpoint
        from ..generators.spatia.lora import merge_lora

        comps = load_checkpoint(opts["checkpoint"], components=("transformer", "vae", "text_encoder", "tokenizer",
                                                                "scheduler", "lora"))
        metadata = {k: v for k, v in comps.pop("metadata").items() if k not in ("components", "training")}
        if comps.pop("lora", False) and int(opts["stage"]) != 2:
            merge_lora(comps["transformer"])  # a finished stage 2 becomes the base of further training
        max_len = opts["max_sequence_length"] or metadata.get("sampling", {}).get("max_sequence_length", 512)

    # 2. data
    spec = ClipSpec(num_history=int(opts["history"]), num_target=int(opts["frames"]), num_references=int(opts["references"]),
                    width=int(opts["width"]), height=int(opts["height"]), voxel_size=float(opts["voxel_size"]))
    depth_source = None
    if opts["depth_source"]:
        from ..config import UpdateConfig
        from ..geometry_update import make_depth_source

        depth_source = make_depth_source(UpdateConfig(depth=opts["depth_source"]))
    train_ds = ConcatClips([_dataset(s, spec, opts, seed, depth_source) for s in opts["data"]])
    if opts["val_data"]:
        val_ds = ConcatClips([_dataset(s, spec, opts, seed + 7919, depth_source) for s in opts["val_data"]])
    else:
        val_ds = _dataset(f"procedural:{int(opts['val_clips'])}", spec, opts, seed + 7919, depth_source)
    encoder = ClipEncoder(comps["transformer"], comps["vae"], comps["text_encoder"], comps["tokenizer"],
                          max_sequence_length=int(max_len), device=opts["device"])
    encoder.check_size(spec.width, spec.height)
    calibrate = opts["calibrate_latents"] if opts["calibrate_latents"] is not None else bool(opts["tiny"])
    if calibrate:
        calibrate_latent_stats(encoder, [train_ds[i] for i in range(min(8, len(train_ds)))])
    progress = not opts["no_progress"]
    train = encode_dataset(train_ds, encoder, progress=progress)
    val = encode_dataset(val_ds, encoder, progress=progress) if len(val_ds) else []
    log.info("encoded %d training and %d validation clips", len(train), len(val))

    # 3. train
    cfg = TrainConfig(
        stage=int(opts["stage"]), steps=int(opts["steps"]), lr=opts["lr"], batch_size=int(opts["batch_size"]),
        grad_accum=int(opts["grad_accum"]), lora_rank=int(opts["lora_rank"]), lora_alpha=opts["lora_alpha"],
        gradient_checkpointing=not opts["no_gradient_checkpointing"], mixed_precision=opts["mixed_precision"],
        seed=seed, use_control=not opts["no_control"], text_dropout=float(opts["text_dropout"]), flow=FlowConfig(),
        log_every=int(opts["log_every"]), val_every=int(opts["val_every"]), save_every=int(opts["save_every"]),
        output_dir=str(out),
    )
    resume = opts["resume"] or None
    if resume == "auto":
        resume = _latest_state(out)
    elif resume and not Path(resume).is_dir():
        raise InputError(f"no training state at {resume}")
    others = {k: comps[k] for k in ("vae", "text_encoder", "tokenizer", "scheduler")}
    trainer = Trainer(cfg, comps["transformer"], train, val, empty_text=encoder.text(""), metadata=metadata, components=others)
    history = trainer.train(resume_from=resume, progress=progress)
    vals = [r["val_loss"] for r in history if "val_loss" in r]
    print(f"stage {cfg.stage}: {trainer.step} steps; val loss {vals[0]:.4f} -> {vals[-1]:.4f}; checkpoint {out / 'final'}"
          if vals else f"stage {cfg.stage}: {trainer.step} steps; checkpoint {out / 'final'}")
    return 0
