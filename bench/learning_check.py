"""Learning check on CPU: does the scene-projection control help a tiny Spatia model learn?

A tiny random Spatia model (``tiny_components``) is trained twice on clips of the built-in
procedural rooms with the same seed, data, steps and learning rate: (a) with the scene-projection
control, (b) with the control input zeroed. The validation loss (flow matching at fixed noise
levels and fixed noise, on rooms never seen in training) must end clearly lower with control.

All parameters are trained (``stage 0``): the paper's stages 1 and 2 start from the pretrained
Wan2.2 backbone, which a random tiny model does not have.

    .venv/bin/python bench/learning_check.py          # about 2.5 min on 2 idle CPU cores (1200 steps)
    .venv/bin/python bench/learning_check.py --steps 300 --train-clips 32 --json out/lc.json

Prints both validation curves and their final values; exits 1 when the with-control loss is not
at least ``--margin`` (default 10 %) below the without-control loss.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=1200)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--train-clips", type=int, default=128)
    p.add_argument("--val-clips", type=int, default=8)
    p.add_argument("--val-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="frame width and height (multiple of 32)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for these tiny ops)")
    p.add_argument("--margin", type=float, default=0.10, help="required relative improvement with control")
    p.add_argument("--json", default="", help="write the curves here")
    p.add_argument("--out", default="out/learning_check", help="trainer output folder (states, checkpoints)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from spatia_core.generators.spatia.tiny import tiny_components, tiny_transformer
    from spatia_core.training.data import ClipSpec, ProceduralClips
    from spatia_core.training.latents import ClipEncoder, calibrate_latent_stats, encode_dataset
    from spatia_core.training.trainer import TrainConfig, Trainer

    t0 = time.time()
    spec = ClipSpec(num_history=1, num_target=5, num_references=1, width=args.size, height=args.size, voxel_size=0.05)
    train_ds = ProceduralClips(args.train_clips, spec, seed=args.seed, spacing=0.05, path_frames=24, clips_per_path=4)
    val_ds = ProceduralClips(args.val_clips, spec, seed=args.seed + 1, spacing=0.05, path_frames=24, clips_per_path=4)
    comps = tiny_components(args.seed)
    enc = ClipEncoder(comps["transformer"], comps["vae"], comps["text_encoder"], comps["tokenizer"], max_sequence_length=32)
    calibrate_latent_stats(enc, [train_ds[i] for i in range(min(8, len(train_ds)))])
    train, val = encode_dataset(train_ds, enc), encode_dataset(val_ds, enc)
    t_data = time.time() - t0
    print(f"data: {len(train)} training clips ({len(train_ds.scene_seeds)} rooms), {len(val)} validation clips "
          f"(other rooms), {t_data:.0f} s", flush=True)

    curves: dict[str, list[tuple[int, float]]] = {}
    for name, control in (("with_control", True), ("without_control", False)):
        t1 = time.time()
        cfg = TrainConfig(stage=0, steps=args.steps, lr=args.lr, batch_size=args.batch_size, use_control=control,
                          text_dropout=0.0, gradient_checkpointing=False, seed=args.seed, val_every=0, save_every=0,
                          output_dir=str(Path(args.out) / name))
        trainer = Trainer(cfg, tiny_transformer(args.seed), train, val, empty_text=enc.text(""))
        curve = [(0, trainer.validate())]
        while trainer.step < args.steps:
            trainer.train_step()
            if trainer.step % args.val_every == 0 or trainer.step == args.steps:
                curve.append((trainer.step, trainer.validate()))
        curves[name] = curve
        print(f"{name:16s} val loss: " + "  ".join(f"{s}:{v:.4f}" for s, v in curve) + f"   ({time.time() - t1:.0f} s)",
              flush=True)

    a, b = curves["with_control"][-1][1], curves["without_control"][-1][1]
    rel = 1.0 - a / b
    total = time.time() - t0
    print(f"final val loss: with control {a:.4f}, without control {b:.4f} -> {100 * rel:.1f} % lower with control "
          f"(required {100 * args.margin:.0f} %); total {total:.0f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"curves": curves, "final": {"with_control": a, "without_control": b},
                                               "relative_improvement": rel, "seconds": total, "args": vars(args)}, indent=1))
    return 0 if rel >= args.margin else 1


if __name__ == "__main__":
    sys.exit(main())
