"""Spatia's video diffusion transformer: Wan2.2-TI2V-5B plus 8 scene-projection control blocks.

:class:`SpatiaTransformer3DModel` is a thin subclass of diffusers' ``WanVACETransformer3DModel``
(same parameter names, ``save_pretrained`` / ``from_pretrained``, peft and gradient
checkpointing); it keeps diffusers' blocks and only replaces the forward so that it reproduces
the official Spatia forward (DiffSynth 1.1.9's ``model_fn_wan_video`` with the release's
extensions):

* per-frame timesteps ``(B, F)``: clean history latent frames carry ``t = 0``; every token gets the
  time modulation of its frame (Wan2.2-TI2V's per-token modulation, also inside the control
  blocks, which diffusers' VACE blocks do not support);
* the timestep sinusoid is computed in float64 and cast, as the official code does;
* reference latents ``(B, C, K, H, W)`` (one latent frame per retrieved reference image) are
  prepended on the time axis with ``t = 0``, rotary temporal positions ``-K .. -1`` and rotary
  row positions ``h .. 2h-1`` (``h`` = patch rows), and are removed from the output;
* the control branch (8 VACE blocks at main blocks 0, 4, ..., 28) reads 96 channels (scene
  projection latent ⊕ mask latent) for the same ``F`` frames; as in the release
  (``wan/wan_video_new.py`` ``model_fn_wan_video``) it runs on the clip tokens only (the
  reference tokens are sliced off its input, time modulation and rotary positions), and its
  hints are added, times ``control_scale``, to the history/target tokens only.

Token layout: ``[reference frames (K) | history + target frames (F)]``, frame-major, then rows,
then columns, as in Wan.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from diffusers.configuration_utils import register_to_config
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin  # noqa: F401 - diffusers' pipeline loader looks it up here
from diffusers.models.transformers.transformer_wan_vace import (
    WanVACETransformer3DModel,
    WanVACETransformerBlock,
)

__all__ = ["SPATIA_5B_CONFIG", "SpatiaControlBlock", "SpatiaTransformer3DModel", "tiny_config"]

#: Wan2.2-TI2V-5B (dim 3072 = 24 heads x 128, 30 blocks, 48-channel latents) + 8 control blocks.
SPATIA_5B_CONFIG: dict[str, Any] = dict(
    patch_size=(1, 2, 2),
    num_attention_heads=24,
    attention_head_dim=128,
    in_channels=48,
    out_channels=48,
    text_dim=4096,
    freq_dim=256,
    ffn_dim=14336,
    num_layers=30,
    cross_attn_norm=True,
    qk_norm="rms_norm_across_heads",
    eps=1e-6,
    image_dim=None,
    added_kv_proj_dim=None,
    rope_max_seq_len=1024,
    pos_embed_seq_len=None,
    vace_layers=[0, 4, 8, 12, 16, 20, 24, 28],
    vace_in_channels=96,
)


def tiny_config(**overrides: Any) -> dict[str, Any]:
    """A small config with the 5B model's structure, for tests (≈0.3 M parameters).

    Head dim 32 (rotary split 12/10/10 as in the 5B model's 128 -> 44/42/42 pattern); keep head
    dims at 32, 96 or 128 when comparing with DiffSynth (its rotary split differs at 64).
    ``overrides`` replace any key, e.g. ``tiny_config(num_layers=2, vace_layers=[0])``.
    """
    cfg = dict(SPATIA_5B_CONFIG)
    cfg.update(
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=8,
        out_channels=8,
        text_dim=24,
        freq_dim=32,
        ffn_dim=96,
        num_layers=4,
        vace_layers=[0, 2],
        vace_in_channels=16,
        rope_max_seq_len=64,
    )
    cfg.update(overrides)
    return cfg


def timestep_sinusoid(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan's timestep embedding ``[cos(t·ω_i), sin(t·ω_i)]``, ``ω_i = 10000^(-i/(dim/2))``.

    Computed in float64 (as the official code does) and returned as float32, shape ``(N, dim)``.
    """
    half = dim // 2
    omega = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timestep.device) / half)
    angles = timestep.to(torch.float64).reshape(-1, 1) * omega.reshape(1, -1)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).float()


class SpatiaControlBlock(WanVACETransformerBlock):
    """diffusers' VACE block with per-token time modulation (``temb`` of shape ``(B, L, 6, D)``).

    Same parameters (``proj_in`` on block 0, ``proj_out`` on every block) and the same
    computation as :class:`WanVACETransformerBlock`, which only accepts ``(B, 6, D)``.
    """

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        control_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        rotary_emb: tuple[torch.Tensor, torch.Tensor],
    ) -> tuple[torch.Tensor | None, torch.Tensor]:
        if temb.ndim == 3:  # (B, 6, D): one modulation for all tokens
            temb = temb.unsqueeze(1)
        if self.proj_in is not None:
            control_hidden_states = self.proj_in(control_hidden_states) + hidden_states
        x = control_hidden_states
        modulation = self.scale_shift_table.unsqueeze(0).to(temb.device) + temb.float()  # (B, L, 6, D)
        shift_msa, scale_msa, gate_msa, c_shift, c_scale, c_gate = modulation.unbind(dim=2)

        normed = (self.norm1(x.float()) * (1 + scale_msa) + shift_msa).type_as(x)
        x = (x.float() + self.attn1(normed, None, None, rotary_emb) * gate_msa).type_as(x)

        normed = self.norm2(x.float()).type_as(x)
        x = x + self.attn2(normed, encoder_hidden_states, None, None)

        normed = (self.norm3(x.float()) * (1 + c_scale) + c_shift).type_as(x)
        x = (x.float() + self.ffn(normed).float() * c_gate).type_as(x)

        hint = self.proj_out(x) if self.proj_out is not None else None
        return hint, x


class SpatiaTransformer3DModel(WanVACETransformer3DModel):
    """Wan2.2-TI2V-5B + scene-projection control blocks, with history and reference latents.

    The constructor arguments are diffusers' ``WanVACETransformer3DModel`` config (defaults: the
    full Spatia 5B model, :data:`SPATIA_5B_CONFIG`). Parameter names are diffusers' (see
    ``convert/dit.py`` for the mapping from the official DiffSynth-named files).
    """

    _no_split_modules = ["WanTransformerBlock", "WanVACETransformerBlock", "SpatiaControlBlock"]
    _repeated_blocks = ["WanTransformerBlock", "SpatiaControlBlock"]

    @register_to_config
    def __init__(
        self,
        patch_size: tuple[int, ...] = (1, 2, 2),
        num_attention_heads: int = 24,
        attention_head_dim: int = 128,
        in_channels: int = 48,
        out_channels: int = 48,
        text_dim: int = 4096,
        freq_dim: int = 256,
        ffn_dim: int = 14336,
        num_layers: int = 30,
        cross_attn_norm: bool = True,
        qk_norm: str | None = "rms_norm_across_heads",
        eps: float = 1e-6,
        image_dim: int | None = None,
        added_kv_proj_dim: int | None = None,
        rope_max_seq_len: int = 1024,
        pos_embed_seq_len: int | None = None,
        vace_layers: Sequence[int] = (0, 4, 8, 12, 16, 20, 24, 28),
        vace_in_channels: int = 96,
    ) -> None:
        vace_layers = [int(i) for i in vace_layers]
        if sorted(set(vace_layers)) != vace_layers:
            raise ValueError(f"vace_layers must be strictly increasing, got {vace_layers}")
        if image_dim is not None or added_kv_proj_dim is not None:
            raise ValueError("Spatia's transformer has no image embedding (image_dim / added_kv_proj_dim must be None)")
        if attention_head_dim % 2:
            raise ValueError(f"attention_head_dim must be even, got {attention_head_dim}")
        super().__init__(
            patch_size=tuple(patch_size),
            num_attention_heads=num_attention_heads,
            attention_head_dim=attention_head_dim,
            in_channels=in_channels,
            out_channels=out_channels,
            text_dim=text_dim,
            freq_dim=freq_dim,
            ffn_dim=ffn_dim,
            num_layers=num_layers,
            cross_attn_norm=cross_attn_norm,
            qk_norm=qk_norm,
            eps=eps,
            image_dim=image_dim,
            added_kv_proj_dim=added_kv_proj_dim,
            rope_max_seq_len=rope_max_seq_len,
            pos_embed_seq_len=pos_embed_seq_len,
            vace_layers=vace_layers,
            vace_in_channels=vace_in_channels,
        )
        inner_dim = num_attention_heads * attention_head_dim
        # Same parameters as diffusers' VACE blocks; only the forward differs (per-token temb).
        self.vace_blocks = nn.ModuleList(
            [
                SpatiaControlBlock(
                    inner_dim,
                    ffn_dim,
                    num_attention_heads,
                    qk_norm,
                    cross_attn_norm,
                    eps,
                    added_kv_proj_dim,
                    apply_input_projection=i == 0,
                    apply_output_projection=True,
                )
                for i in range(len(vace_layers))
            ]
        )

    # ------------------------------------------------------------------ helpers
    def _reference_rotary(self, num_refs: int, rows: int, cols: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotary (cos, sin) of ``num_refs`` reference frames, shape ``(1, K·rows·cols, 1, head_dim)``.

        Temporal positions ``-K .. -1``, row positions ``rows .. 2·rows-1``, columns ``0 .. cols-1``.
        ``cos(-x) = cos(x)``, ``sin(-x) = -sin(x)``: negative positions come from the same table.
        """
        rope = self.rope
        if num_refs > rope.max_seq_len or 2 * rows > rope.max_seq_len or cols > rope.max_seq_len:
            raise ValueError(
                f"rope_max_seq_len {rope.max_seq_len} too small for {num_refs} reference frames and "
                f"{rows}x{cols} patches (rows are offset by {rows})"
            )
        split = [rope.t_dim, rope.h_dim, rope.w_dim]
        cos_t, cos_h, cos_w = rope.freqs_cos.split(split, dim=1)
        sin_t, sin_h, sin_w = rope.freqs_sin.split(split, dim=1)
        t_idx = torch.arange(num_refs, 0, -1, device=cos_t.device)  # |-K|, ..., |-1|
        shape = (num_refs, rows, cols)

        def grid(t: torch.Tensor, h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
            t = t.view(num_refs, 1, 1, -1).expand(*shape, -1)
            h = h.view(1, rows, 1, -1).expand(*shape, -1)
            w = w.view(1, 1, cols, -1).expand(*shape, -1)
            return torch.cat([t, h, w], dim=-1).reshape(1, num_refs * rows * cols, 1, -1)

        cos = grid(cos_t[t_idx], cos_h[rows : 2 * rows], cos_w[:cols])
        sin = grid(-sin_t[t_idx], sin_h[rows : 2 * rows], sin_w[:cols])
        return cos, sin

    def _frame_timesteps(self, timestep: torch.Tensor | float, batch: int, frames: int, device) -> torch.Tensor:
        """Normalise ``timestep`` to float ``(B, F)`` (one value per latent frame)."""
        t = torch.as_tensor(timestep, device=device)
        if t.ndim == 0:
            t = t.expand(batch)
        if t.ndim == 1:
            if t.shape[0] != batch:
                raise ValueError(f"timestep of shape {tuple(t.shape)} does not match batch size {batch}")
            t = t[:, None].expand(batch, frames)
        elif t.ndim != 2 or t.shape != (batch, frames):
            raise ValueError(f"timestep must be (B,) or (B, F) = ({batch}, {frames}), got {tuple(t.shape)}")
        return t.float()

    def _check_inputs(
        self,
        hidden_states: torch.Tensor,
        control_hidden_states: torch.Tensor | None,
        reference_latents: torch.Tensor | None,
    ) -> None:
        cfg = self.config
        if hidden_states.ndim != 5 or hidden_states.shape[1] != cfg.in_channels:
            raise ValueError(f"hidden_states must be (B, {cfg.in_channels}, F, H, W), got {tuple(hidden_states.shape)}")
        b, _, f, h, w = hidden_states.shape
        p_t, p_h, p_w = cfg.patch_size
        if f % p_t or h % p_h or w % p_w:
            raise ValueError(f"latent size (F, H, W) = ({f}, {h}, {w}) is not divisible by patch {tuple(cfg.patch_size)}")
        if control_hidden_states is not None:
            want = (b, cfg.vace_in_channels, f, h, w)
            if tuple(control_hidden_states.shape) != want:
                raise ValueError(f"control_hidden_states must be {want}, got {tuple(control_hidden_states.shape)}")
        if reference_latents is not None:
            if p_t != 1:
                raise ValueError("reference latents need a temporal patch size of 1")
            if (
                reference_latents.ndim != 5
                or reference_latents.shape[:2] != hidden_states.shape[:2]
                or reference_latents.shape[3:] != hidden_states.shape[3:]
            ):
                raise ValueError(
                    f"reference_latents must be (B, C, K, H, W) = ({b}, {cfg.in_channels}, K, {h}, {w}), "
                    f"got {tuple(reference_latents.shape)}"
                )

    def _control_scales(self, control_scale: float | Sequence[float] | torch.Tensor) -> list:
        n = len(self.config.vace_layers)
        if isinstance(control_scale, torch.Tensor) and control_scale.ndim > 0:
            scales = list(control_scale.unbind(0))
        elif isinstance(control_scale, (list, tuple)):
            scales = list(control_scale)
        else:
            scales = [control_scale] * n
        if len(scales) != n:
            raise ValueError(f"control_scale has {len(scales)} values, expected 1 or {n}")
        return scales

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        control_hidden_states: torch.Tensor | None = None,
        reference_latents: torch.Tensor | None = None,
        control_scale: float = 1.0,
        attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Predict the flow for the ``F`` history + target latent frames.

        Args:
            hidden_states: ``(B, C, F, H, W)`` latents: clean history frames first, then the noisy
                target frames.
            timestep: ``(B,)`` or ``(B, F)`` float, per latent frame (history frames get 0).
            encoder_hidden_states: ``(B, L_text, text_dim)`` umT5 embeddings.
            control_hidden_states: ``(B, vace_in_channels, F, H, W)`` scene-projection latent ⊕
                visibility-mask latent, or ``None`` for no control.
            reference_latents: ``(B, C, K, H, W)`` clean reference latents (one latent frame each),
                or ``None``.
            control_scale: hint scale (a float, or one value per control block).
            attention_kwargs: may hold ``scale`` (the peft LoRA scale).
            return_dict: return a ``Transformer2DModelOutput`` rather than a tuple.

        Returns:
            ``sample`` of shape ``(B, out_channels, F, H, W)`` (reference frames removed).
        """
        self._check_inputs(hidden_states, control_hidden_states, reference_latents)
        lora_scale = (attention_kwargs or {}).get("scale", 1.0)
        if lora_scale != 1.0:
            from diffusers.utils import scale_lora_layers, unscale_lora_layers

            scale_lora_layers(self, lora_scale)
        try:
            output = self._forward(
                hidden_states, timestep, encoder_hidden_states, control_hidden_states, reference_latents, control_scale
            )
        finally:
            if lora_scale != 1.0:
                unscale_lora_layers(self, lora_scale)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    def _forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        control_hidden_states: torch.Tensor | None,
        reference_latents: torch.Tensor | None,
        control_scale: float | Sequence[float] | torch.Tensor,
    ) -> torch.Tensor:
        cfg = self.config
        batch, _, frames, height, width = hidden_states.shape
        p_t, p_h, p_w = cfg.patch_size
        pf, ph, pw = frames // p_t, height // p_h, width // p_w
        tokens_per_frame = ph * pw
        num_refs = 0 if reference_latents is None else reference_latents.shape[2]
        num_ref_tokens = num_refs * tokens_per_frame

        # 1. Rotary positions: references (negative time, rows offset by ph), then the clip.
        rotary = self.rope(hidden_states)
        if num_refs:
            ref_cos, ref_sin = self._reference_rotary(num_refs, ph, pw)
            rotary = (torch.cat([ref_cos, rotary[0]], dim=1), torch.cat([ref_sin, rotary[1]], dim=1))

        # 2. Patch embedding, frame-major tokens.
        latents = hidden_states if not num_refs else torch.cat([reference_latents.to(hidden_states), hidden_states], 2)
        x = self.patch_embedding(latents).flatten(2).transpose(1, 2).contiguous()  # (B, L, D)

        # 3. Time embedding per frame (references and history at t=0), broadcast to its tokens.
        t_frames = self._frame_timesteps(timestep, batch, frames, x.device)[:, ::p_t]  # (B, pf)
        if num_refs:
            t_frames = torch.cat([t_frames.new_zeros(batch, num_refs), t_frames], dim=1)
        emb = self.condition_embedder
        sinusoid = timestep_sinusoid(t_frames.flatten(), cfg.freq_dim)
        time_dtype = next(emb.time_embedder.parameters()).dtype
        temb = emb.time_embedder(sinusoid.to(time_dtype)).type_as(x)  # (B·frames, D)
        tproj = emb.time_proj(emb.act_fn(temb))  # (B·frames, 6D)
        n_frames = t_frames.shape[1]
        temb = temb.view(batch, n_frames, 1, -1).expand(-1, -1, tokens_per_frame, -1).reshape(batch, -1, temb.shape[-1])
        tproj = tproj.view(batch, n_frames, 1, 6, -1).expand(-1, -1, tokens_per_frame, -1, -1)
        tproj = tproj.reshape(batch, n_frames * tokens_per_frame, 6, -1)  # (B, L, 6, D)
        context = emb.text_embedder(encoder_hidden_states)

        # 4. Control hints (all computed from the embedded input, as in VACE).
        scales = self._control_scales(control_scale)
        use_control = control_hidden_states is not None and not all(
            isinstance(s, (int, float)) and s == 0 for s in scales
        )
        checkpointing = torch.is_grad_enabled() and self.gradient_checkpointing

        def run(block: nn.Module, *args):
            return self._gradient_checkpointing_func(block, *args) if checkpointing else block(*args)

        hints: dict[int, tuple[torch.Tensor, Any]] = {}
        if use_control:
            # The control branch sees the clip tokens only (the release slices the reference
            # tokens off its input, time modulation and rotary table).
            n = num_ref_tokens
            c = self.vace_patch_embedding(control_hidden_states.to(x.dtype)).flatten(2).transpose(1, 2)
            clip_x, clip_tproj = x[:, n:], tproj[:, n:]
            clip_rotary = (rotary[0][:, n:], rotary[1][:, n:])
            for layer, block, scale in zip(cfg.vace_layers, self.vace_blocks, scales):
                hint, c = run(block, clip_x, context, c, clip_tproj, clip_rotary)
                hints[layer] = (hint, scale)

        # 5. Main blocks; hints go to the history/target tokens only.
        for i, block in enumerate(self.blocks):
            x = run(block, x, context, tproj, rotary)
            if i in hints:
                hint, scale = hints[i]
                if num_ref_tokens:
                    x = torch.cat([x[:, :num_ref_tokens], x[:, num_ref_tokens:] + hint * scale], 1)
                else:
                    x = x + hint * scale

        # 6. Output head (per-token modulation), drop references, unpatchify.
        shift, scale = (self.scale_shift_table.unsqueeze(0).to(temb.device) + temb.unsqueeze(2)).unbind(dim=2)
        x = (self.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
        x = self.proj_out(x[:, num_ref_tokens:])
        x = x.reshape(batch, pf, ph, pw, p_t, p_h, p_w, -1)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.flatten(6, 7).flatten(4, 5).flatten(2, 3)

    def num_parameters_by_part(self) -> dict[str, int]:
        """Parameter counts: ``{"base": ..., "control": ...}`` (control = VACE blocks + embedding)."""
        control = sum(p.numel() for n, p in self.named_parameters() if n.startswith("vace_"))
        total = sum(p.numel() for p in self.parameters())
        return {"base": total - control, "control": control}


def _param_count_5b() -> dict[str, int]:  # pragma: no cover - handy from a shell
    with torch.device("meta"):
        model = SpatiaTransformer3DModel(**SPATIA_5B_CONFIG)
    return model.num_parameters_by_part()


if __name__ == "__main__":  # pragma: no cover
    counts = _param_count_5b()
    print({k: f"{v / 1e9:.3f}B" for k, v in counts.items()}, f"total {sum(counts.values()) / 1e9:.3f}B")
