"""The training loop on accelerate: Spatia's two stages, validation, checkpoints and exact resume.

* Stage 1 trains only the control branch (``vace_blocks.*`` and ``vace_patch_embedding.*``) with
  the backbone frozen (paper: lr 1e-5, 8k iterations).
* Stage 2 adds a peft LoRA (rank 64 by default) to the main blocks' attention and FFN layers
  (:func:`~spatia_core.generators.spatia.lora.add_lora`) and trains only it; the control branch and
  the backbone stay frozen (paper: lr 1e-4, 5k iterations).
* Stage 0 (not in the paper, which starts from the pretrained Wan2.2) trains every parameter: for
  tiny models trained from scratch, e.g. the CPU learning check (``bench/learning_check.py``).

Every step's randomness (which samples, noise, sigma, history ``t_aug``, text dropout) comes from
a generator seeded with ``(seed, step, micro-batch, process)``; the optimizer, learning-rate
schedule and RNG states go through ``accelerator.save_state`` / ``load_state`` (trainable weights
only, through save/load hooks). A resumed run therefore continues the same loss curve as an
uninterrupted one. The same code runs on one CPU/GPU, many GPUs or many nodes (``accelerate
launch``): each process draws its own samples and gradients are averaged by accelerate.

Outputs under ``output_dir``: ``state/step-N/`` (resumable states), ``checkpoint-N/`` and
``final/`` (our checkpoint layout; stage 2 writes the adapter to ``lora/``), ``log.jsonl`` (one
line per logged step: train loss, val loss, lr).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Literal, Sequence

import torch
from pydantic import Field

from ..config import Flag, Int, Real, Text, schema_dataclass
from ..errors import InputError
from .flow import FlowConfig, flow_loss, make_flow_batch
from .latents import LatentSample, collate

log = logging.getLogger(__name__)

#: Parameter-name prefixes of the control branch (stage 1's trainable set).
CONTROL_PREFIXES = ("vace_blocks.", "vace_patch_embedding.")
#: Paper learning rates per stage.
DEFAULT_LR = {0: 1e-4, 1: 1e-5, 2: 1e-4}
_STATE_WEIGHTS = "trainable.safetensors"


_Unit = Annotated[Real, Field(ge=0, lt=1)]


@schema_dataclass(docstrings=True)  # typed and validated like spatia_core.config (InputError)
class TrainConfig:
    """Settings of one training run (one stage)."""

    stage: Literal[0, 1, 2] = 1
    """1: control blocks only; 2: LoRA on the main blocks; 0: everything (tiny models from scratch)."""
    steps: Int = Field(8000, ge=1)
    """Optimizer steps of this stage (the run stops at this global step)."""
    lr: Annotated[Real, Field(gt=0)] | None = None
    """Learning rate (default: 1e-5 for stage 1, 1e-4 for stage 2)."""
    batch_size: Int = Field(1, ge=1)
    """Clips per micro-batch and process."""
    grad_accum: Int = Field(1, ge=1)
    """Micro-batches per optimizer step."""
    weight_decay: Real = Field(0.0, ge=0)
    """AdamW weight decay."""
    adam_betas: tuple[_Unit, _Unit] = (0.9, 0.999)
    """AdamW betas."""
    warmup_steps: Int = Field(0, ge=0)
    """Linear learning-rate warm-up steps (then constant)."""
    max_grad_norm: Real = Field(1.0, ge=0)
    """Gradient clipping norm (0 = off)."""
    lora_rank: Int = Field(64, ge=1)
    """Stage 2 LoRA rank."""
    lora_alpha: Annotated[Real, Field(gt=0)] | None = None
    """Stage 2 LoRA alpha (default = rank: scale 1)."""
    gradient_checkpointing: Flag = True
    """Recompute block activations in the backward pass (saves memory)."""
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    """accelerate mixed precision: no, fp16 or bf16."""
    seed: Int = Field(0, ge=0)
    """Seed of every random draw of the run."""
    use_control: Flag = True
    """Feed the scene-projection control (False: zeros, the no-control ablation)."""
    text_dropout: Real = Field(0.1, ge=0, le=1)
    """Chance that a sample's prompt is replaced by the empty prompt (for guidance)."""
    flow: FlowConfig = Field(default_factory=FlowConfig)
    """Flow-matching objective."""
    log_every: Int = Field(10, ge=1)
    """Steps between train-loss log lines."""
    val_every: Int = Field(100, ge=0)
    """Steps between validations (0 = only at the end)."""
    save_every: Int = Field(1000, ge=0)
    """Steps between resumable states and checkpoints (0 = only at the end)."""
    val_sigmas: tuple[Annotated[Real, Field(gt=0, lt=1)], ...] = (0.15, 0.35, 0.5, 0.65, 0.85)
    """Fixed noise levels the validation loss averages over."""
    output_dir: Text = "out/train"
    """Where states, checkpoints and the log go."""

    def __post_init__(self):
        if self.stage not in (0, 1, 2):
            raise InputError(f"stage must be 0, 1 or 2, got {self.stage}")
        if self.steps < 1 or self.batch_size < 1 or self.grad_accum < 1:
            raise InputError("steps, batch_size and grad_accum must be >= 1")
        if self.lr is not None and not self.lr > 0:
            raise InputError(f"lr must be positive, got {self.lr}")
        if self.lora_rank < 1:
            raise InputError(f"lora_rank must be >= 1, got {self.lora_rank}")
        if not 0 <= self.text_dropout <= 1:
            raise InputError(f"text_dropout must be in [0, 1], got {self.text_dropout}")
        if self.mixed_precision not in ("no", "fp16", "bf16"):
            raise InputError(f"mixed_precision must be no, fp16 or bf16, got {self.mixed_precision!r}")
        if isinstance(self.flow, dict):
            self.flow = FlowConfig(**self.flow)

    @property
    def learning_rate(self) -> float:
        """The effective learning rate."""
        return float(self.lr if self.lr is not None else DEFAULT_LR[self.stage])


def set_trainable(model: torch.nn.Module, stage: int, lora_rank: int = 64, lora_alpha: float | None = None) -> list[str]:
    """Select the trainable parameters of ``stage`` (adding the LoRA adapter for stage 2).

    Returns the names of the trainable parameters.
    """
    for p in model.parameters():
        p.requires_grad_(False)
    if stage == 0:
        for p in model.parameters():
            p.requires_grad_(True)
    elif stage == 1:
        for name, p in model.named_parameters():
            if name.startswith(CONTROL_PREFIXES):
                p.requires_grad_(True)
    elif stage == 2:
        from ..generators.spatia.lora import add_lora

        if not getattr(model, "peft_config", None):
            add_lora(model, rank=lora_rank, alpha=lora_alpha)
        for name, p in model.named_parameters():
            p.requires_grad_(".lora_A." in name or ".lora_B." in name)
    else:
        raise InputError(f"stage must be 0, 1 or 2, got {stage}")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    if not names:
        raise InputError(f"stage {stage}: the model has no trainable parameters (no control blocks?)")
    return names


def _step_generator(seed: int, step: int, micro: int, process: int) -> torch.Generator:
    mixed = (seed * 1_000_003 + step) * 1_009 + micro
    return torch.Generator().manual_seed((mixed * 65_537 + process) % (2**63 - 1))


class Trainer:
    """Trains a :class:`~spatia_core.generators.spatia.transformer.SpatiaTransformer3DModel`.

    Args:
        cfg: the run's settings.
        transformer: the model (trainable parameters are selected here).
        train: encoded training samples (:func:`~spatia_core.training.latents.encode_dataset`).
        val: encoded validation samples (may be empty).
        empty_text: (L, D) embedding of the empty prompt (for text dropout); zeros if None.
        metadata: extra ``spatia.json`` content for the checkpoints (e.g. the sampling defaults).
        components: other checkpoint components to save beside the transformer (``vae``,
            ``text_encoder``, ``tokenizer``, ``scheduler``), so checkpoints are complete.
    """

    def __init__(self, cfg: TrainConfig, transformer: torch.nn.Module, train: Sequence[LatentSample],
                 val: Sequence[LatentSample] = (), empty_text: torch.Tensor | None = None,
                 metadata: dict | None = None, components: dict | None = None):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        if not train:
            raise InputError("no training samples")
        self.cfg = cfg
        self.train_samples, self.val_samples = list(train), list(val)
        self.empty_text = torch.zeros_like(self.train_samples[0].text) if empty_text is None else empty_text.float().cpu()
        self.metadata = dict(metadata or {})
        self.components = dict(components or {})
        self.output_dir = Path(cfg.output_dir)
        self.accelerator = Accelerator(
            mixed_precision=cfg.mixed_precision,
            project_config=ProjectConfiguration(project_dir=str(self.output_dir)),
        )
        self.trainable_names = set_trainable(transformer, cfg.stage, cfg.lora_rank, cfg.lora_alpha)
        if cfg.gradient_checkpointing:
            transformer.enable_gradient_checkpointing()
        params = [p for p in transformer.parameters() if p.requires_grad]
        for p in params:  # train in float32 master weights; autocast handles mixed precision
            p.data = p.data.float()
        optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, betas=cfg.adam_betas, weight_decay=cfg.weight_decay)
        warm = max(0, int(cfg.warmup_steps))
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0)
        self.model, self.optimizer, self.lr_scheduler = self.accelerator.prepare(transformer, optimizer, schedule)
        self.accelerator.register_save_state_pre_hook(self._save_hook)
        self.accelerator.register_load_state_pre_hook(self._load_hook)
        self.step = 0
        self.history: list[dict] = []

    # -- state -----------------------------------------------------------------------------
    @property
    def unwrapped(self) -> torch.nn.Module:
        """The bare transformer (outside accelerate's wrappers)."""
        return self.accelerator.unwrap_model(self.model)

    def _trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().contiguous() for n, p in self.unwrapped.named_parameters() if p.requires_grad}

    def _save_hook(self, models, weights, output_dir) -> None:
        """Save only the trainable weights (a 5B backbone is not copied into every state)."""
        from safetensors.torch import save_file

        if self.accelerator.is_main_process:
            save_file(self._trainable_state(), str(Path(output_dir) / _STATE_WEIGHTS))
        while weights:
            weights.pop()

    def _load_hook(self, models, input_dir) -> None:
        from safetensors.torch import load_file

        state = load_file(str(Path(input_dir) / _STATE_WEIGHTS))
        params = dict(self.unwrapped.named_parameters())
        missing = sorted(set(self.trainable_names) - set(state))
        unknown = sorted(set(state) - set(params))
        if missing or unknown:
            raise InputError(f"state {input_dir} does not fit this run: missing {missing[:3]}, unknown {unknown[:3]}")
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)
        while models:
            models.pop()

    def save_state(self, path: str | Path | None = None) -> Path:
        """Write a resumable state (trainable weights, optimizer, lr schedule, RNG, step, log)."""
        path = Path(path) if path else self.output_dir / "state" / f"step-{self.step}"
        self.accelerator.save_state(str(path))
        if self.accelerator.is_main_process:
            (path / "trainer.json").write_text(json.dumps({"step": self.step, "history": self.history,
                                                           "config": _jsonable(asdict(self.cfg))}, indent=1))
        self.accelerator.wait_for_everyone()
        return path

    def load_state(self, path: str | Path) -> None:
        """Resume from a state written by :meth:`save_state` (same stage and model)."""
        path = Path(path)
        info_file = path / "trainer.json"
        if not info_file.is_file():
            raise InputError(f"{path} is not a training state (no trainer.json)")
        info = json.loads(info_file.read_text())
        if info.get("config", {}).get("stage", self.cfg.stage) != self.cfg.stage:
            raise InputError(f"state {path} is from stage {info['config']['stage']}, this run is stage {self.cfg.stage}")
        self.accelerator.load_state(str(path))
        self.step = int(info["step"])
        self.history = list(info.get("history", []))

    def save_checkpoint(self, path: str | Path | None = None) -> Path:
        """Write the model in our checkpoint layout (stage 2: base weights + ``lora/`` adapter)."""
        from ..generators.spatia.checkpoint import save_checkpoint

        path = Path(path) if path else self.output_dir / f"checkpoint-{self.step}"
        if self.accelerator.is_main_process:
            meta = dict(self.metadata)
            meta["training"] = {"stage": self.cfg.stage, "step": self.step, "lr": self.cfg.learning_rate,
                                "lora_rank": self.cfg.lora_rank if self.cfg.stage == 2 else None}
            save_checkpoint(path, transformer=self.unwrapped, metadata=meta, overwrite=True, **self.components)
        self.accelerator.wait_for_everyone()
        return path

    # -- steps -----------------------------------------------------------------------------
    def _inputs(self, samples: Sequence[LatentSample], text_drop: torch.Tensor | None = None) -> dict:
        batch = collate(samples)
        if text_drop is not None and text_drop.any():
            batch["text"][text_drop] = self.empty_text
        if not self.cfg.use_control:
            batch["control"] = torch.zeros_like(batch["control"])
        return batch

    def _loss(self, batch: dict, generator: torch.Generator, sigma: torch.Tensor | None = None, reduction="mean"):
        device = self.accelerator.device
        flow = make_flow_batch(batch["target"], batch["history"], self.cfg.flow, generator, sigma=sigma)
        refs = batch["references"] if batch["references"].shape[2] else None
        with self.accelerator.autocast():
            pred = self.model(
                flow.hidden_states.to(device), flow.timestep.to(device), batch["text"].to(device),
                control_hidden_states=batch["control"].to(device),
                reference_latents=None if refs is None else refs.to(device),
                return_dict=False,
            )[0]
        flow.target = flow.target.to(device)
        return flow_loss(pred, flow, reduction=reduction)

    def train_step(self) -> float:
        """One optimizer step (``grad_accum`` micro-batches); returns the mean micro-batch loss."""
        cfg, acc = self.cfg, self.accelerator
        self.model.train()
        total = 0.0
        for micro in range(cfg.grad_accum):
            g = _step_generator(cfg.seed, self.step, micro, acc.process_index)
            idx = torch.randint(len(self.train_samples), (cfg.batch_size,), generator=g)
            drop = torch.rand(cfg.batch_size, generator=g) < cfg.text_dropout
            batch = self._inputs([self.train_samples[i] for i in idx.tolist()], drop)
            last = micro == cfg.grad_accum - 1
            with (acc.no_sync(self.model) if not last else _null()):
                loss = self._loss(batch, g)
                acc.backward(loss / cfg.grad_accum)
            total += float(loss.detach())
        if cfg.max_grad_norm > 0:
            acc.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        mean = torch.tensor(total / cfg.grad_accum, device=acc.device)
        return float(acc.reduce(mean, reduction="mean"))

    @torch.no_grad()
    def validate(self) -> float:
        """Mean flow loss over the validation samples at the fixed ``val_sigmas`` and fixed noise
        (the same numbers for every call on the same weights); NaN without validation samples."""
        if not self.val_samples:
            return float("nan")
        acc = self.accelerator
        self.model.eval()
        total = torch.zeros(2, device=acc.device)
        for i in range(acc.process_index, len(self.val_samples), acc.num_processes):
            batch = self._inputs([self.val_samples[i]])
            for j, s in enumerate(self.cfg.val_sigmas):
                g = torch.Generator().manual_seed(1_000_003 * (i + 1) + j)
                loss = self._loss(batch, g, sigma=torch.tensor([float(s)]))
                total += torch.stack([loss.float(), torch.ones((), device=acc.device)])
        total = acc.reduce(total, reduction="sum")
        return float(total[0] / total[1].clamp(min=1))

    def train(self, resume_from: str | Path | None = None, progress: bool = False) -> list[dict]:
        """Run to ``cfg.steps`` (resuming from a state folder if given); returns the log records.

        Validation runs every ``val_every`` steps and at the end; states and checkpoints every
        ``save_every`` steps and at the end (``final/``).
        """
        from tqdm.auto import tqdm

        cfg, acc = self.cfg, self.accelerator
        if resume_from:
            self.load_state(resume_from)
            log.info("resumed from %s at step %d", resume_from, self.step)
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        bar = tqdm(total=cfg.steps, initial=self.step, desc=f"stage {cfg.stage}", disable=not progress or not acc.is_main_process)
        if self.step == 0 and cfg.val_every:
            self._record({"step": 0, "val_loss": self.validate()})
        t0 = time.time()
        while self.step < cfg.steps:
            loss = self.train_step()
            if not math.isfinite(loss):
                self.save_state(self.output_dir / "state" / f"step-{self.step}-nonfinite")
                raise InputError(f"training loss became {loss} at step {self.step}; state saved, lower the lr")
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.4f}")
            rec: dict = {"step": self.step, "loss": loss, "lr": self.lr_scheduler.get_last_lr()[0]}
            end = self.step == cfg.steps
            if cfg.val_every and self.step % cfg.val_every == 0 or end:
                rec["val_loss"] = self.validate()
            if self.step % max(1, cfg.log_every) == 0 or "val_loss" in rec or end:
                rec["elapsed_s"] = round(time.time() - t0, 2)
                self._record(rec)
            if cfg.save_every and self.step % cfg.save_every == 0 and not end:
                self.save_state()
                self.save_checkpoint()
        bar.close()
        self.save_state()
        self.save_checkpoint(self.output_dir / "final")
        return self.history

    def _record(self, rec: dict) -> None:
        self.history.append(rec)
        if self.accelerator.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            with open(self.output_dir / "log.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
        if "val_loss" in rec:
            log.info("step %d val loss %.5f", rec["step"], rec["val_loss"])


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
