"""Monocular depth through transformers (Depth Anything / DPT family), aligned to the memory.

The model and its image processor come from ``update.depth_checkpoint``: a local folder (as
written by ``save_pretrained``) or a Hugging Face model id (default :data:`DEFAULT_CHECKPOINT`),
taken from the Hugging Face cache, and downloaded into it on first use where there is a network.
Offline (``HF_HUB_OFFLINE=1``, or no network) and not cached is one clear error. A model predicts
either

* relative depth (``depth_estimation_type == "relative"``, Depth Anything's default): an
  affine-invariant *inverse* depth (disparity). It is aligned in inverse-depth space:
  ``1 / depth = s * pred + t``;
* metric depth (``"metric"``): depth in metres up to a residual affine error. It is aligned in
  depth space: ``depth = s * pred + t``.

The scale ``s`` and shift ``t`` are a robust least-squares fit (Huber-weighted IRLS) on the
pixels where the memory's rendered depth is valid; for a first image there is no memory, and a
metric hint is used instead: a sparse depth map (fitted like the rendered depth) or a scalar
median depth (scale only, shift 0, so that the median depth equals the hint). A metric model
without any hint is used as it is. Where the memory covers a pixel, the rendered depth is
returned (it is authoritative).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..config import UpdateConfig
from ..errors import BackendUnavailableError, InputError
from ..geometry import Intrinsics

log = logging.getLogger(__name__)

KINDS = ("auto", "relative", "metric")
#: The default ``update.depth_checkpoint``: Depth Anything V2 Small (relative depth, Apache-2.0, ~100 MB).
DEFAULT_CHECKPOINT = UpdateConfig().depth_checkpoint
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_checkpoint(checkpoint: str) -> Path:
    """The local folder of a depth model: ``checkpoint`` itself if it is a folder, else the
    Hugging Face cache's snapshot of the model id ``checkpoint`` (``config.json``, ``*.json`` and
    ``*.safetensors``), looked up in the cache first and downloaded only if it is not there.

    Raises:
        BackendUnavailableError: an empty value, a path that is no model folder, or a model id
            that is not cached and cannot be downloaded (offline); the one-line message says what
            to do.
    """
    if not checkpoint:
        raise BackendUnavailableError("mono depth needs update.depth_checkpoint: a Hugging Face model id (e.g. "
                                      f"{DEFAULT_CHECKPOINT}) or a local folder with a transformers "
                                      "depth-estimation model (config.json, weights, preprocessor_config.json)")
    folder = Path(checkpoint).expanduser()
    if folder.exists() or not _REPO_ID.match(checkpoint):
        if not (folder / "config.json").is_file():
            raise BackendUnavailableError(f"mono depth checkpoint {folder} is not a transformers model folder "
                                          "(no config.json); save one with save_pretrained, or give a Hugging Face id")
        return folder
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError

    patterns = ["*.json", "*.safetensors"]
    try:  # the cache first: no network call at all when the model is there
        cached = Path(snapshot_download(checkpoint, allow_patterns=patterns, local_files_only=True))
        if (cached / "config.json").is_file() and any(cached.glob("*.safetensors")):
            return cached
    except (LocalEntryNotFoundError, HFValidationError):
        pass
    todo = (f"download it once with network access (`hf download {checkpoint}`), "
            "or set update.depth_checkpoint to a local model folder")
    if constants.HF_HUB_OFFLINE:
        raise BackendUnavailableError(f"depth model {checkpoint} (update.depth_checkpoint) is neither a local folder "
                                      f"nor in the Hugging Face cache, and HF_HUB_OFFLINE is set: {todo}")
    log.info("mono depth: downloading %s into the Hugging Face cache (once)", checkpoint)
    try:
        return Path(snapshot_download(checkpoint, allow_patterns=patterns))
    except Exception as exc:  # network, missing or gated repo: each is the user's to fix, none a bug here
        reason = " ".join(str(exc).split())[:200]
        if isinstance(exc, LocalEntryNotFoundError):  # the hub's way of saying "no connection"
            reason = "no connection to the Hugging Face Hub"
        raise BackendUnavailableError(f"cannot download the depth model {checkpoint} (update.depth_checkpoint): "
                                      f"{reason}; {todo}") from None


def fit_scale_shift(pred: np.ndarray, target: np.ndarray, mask: np.ndarray | None = None, iters: int = 10,
                    huber: float = 1.345) -> tuple[float, float]:
    """Robust ``target ~ s * pred + t`` over ``mask`` (Huber IRLS, scale from the MAD).

    Args:
        pred, target: float arrays of one shape.
        mask: bool array of that shape (default: all finite pairs).
    Returns:
        ``(s, t)``. Raises :class:`InputError` with fewer than 2 usable pixels or no spread.
    """
    pred = np.asarray(pred, np.float64).ravel()
    target = np.asarray(target, np.float64).ravel()
    ok = np.isfinite(pred) & np.isfinite(target)
    if mask is not None:
        ok &= np.asarray(mask, bool).ravel()
    x, y = pred[ok], target[ok]
    if x.size < 2 or np.ptp(x) <= 1e-12:
        raise InputError(f"scale/shift fit needs at least 2 pixels with distinct predictions, got {x.size}")
    a = np.stack([x, np.ones_like(x)], 1)
    wgt = np.ones_like(x)
    s = t = 0.0
    for _ in range(iters):
        sw = np.sqrt(wgt)
        (s, t), *_ = np.linalg.lstsq(a * sw[:, None], y * sw, rcond=None)
        res = y - (s * x + t)
        sigma = 1.4826 * np.median(np.abs(res - np.median(res))) + 1e-12
        u = np.abs(res) / (huber * sigma)
        wgt = np.where(u <= 1, 1.0, 1.0 / np.maximum(u, 1e-12))
    return float(s), float(t)


class MonoDepth:
    """Depth source from a transformers depth-estimation model in a local folder.

    Args:
        checkpoint: folder with ``config.json``, weights and ``preprocessor_config.json``, or a
            Hugging Face model id (see :func:`resolve_checkpoint`).
        kind: ``auto`` (from the model config's ``depth_estimation_type``; ``relative`` if
            absent), ``relative`` (inverse depth) or ``metric`` (metres).
        default_median_depth: metres, the scalar hint used for a relative model when neither
            the memory nor the caller gives any (a first image without depth).
        min_overlap: rendered pixels needed for a fit; fewer reuse the last fit (or the hint).
        max_depth: predictions beyond this (metres), or not positive, give 0 (unknown).
        device: torch device.
    """

    def __init__(self, checkpoint: str = DEFAULT_CHECKPOINT, kind: str = "auto", default_median_depth: float = 2.0,
                 min_overlap: int = 200, max_depth: float = 50.0, device="cpu"):
        if kind not in KINDS:
            raise InputError(f"unknown mono depth kind {kind!r}; choose one of {', '.join(KINDS)}")
        folder = resolve_checkpoint(checkpoint)
        from transformers import AutoImageProcessor, AutoModelForDepthEstimation

        try:
            self.processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
            self.model = AutoModelForDepthEstimation.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, KeyError) as exc:
            raise BackendUnavailableError(f"cannot load the depth model from {folder}: {exc}") from None
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        if kind == "auto":
            kind = getattr(self.model.config, "depth_estimation_type", None) or "relative"
        self.kind = kind
        self.default_median_depth = float(default_median_depth)
        self.min_overlap = int(min_overlap)
        self.max_depth = float(max_depth)
        self.last_fit: tuple[float, float] | None = None  # (s, t) of the last successful alignment

    # -- model -------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, image: np.ndarray) -> np.ndarray:
        """Raw model output at the image size: float32 (H, W) (inverse depth or metres, by ``kind``)."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise InputError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        inputs = self.processor(images=image, return_tensors="pt")
        pix = inputs["pixel_values"].to(self.device, dtype=next(self.model.parameters()).dtype)
        out = self.model(pixel_values=pix).predicted_depth  # (1, h, w)
        out = torch.nn.functional.interpolate(out[:, None].float(), size=image.shape[:2], mode="bilinear",
                                              align_corners=False)
        return out[0, 0].cpu().numpy().astype(np.float32)

    # -- alignment ---------------------------------------------------------------------------
    def _space(self, depth: np.ndarray) -> np.ndarray:
        """Metric depth in the space the fit is done in (inverse depth for relative models)."""
        return 1.0 / depth if self.kind == "relative" else depth

    def _to_depth(self, pred: np.ndarray, s: float, t: float) -> np.ndarray:
        v = s * pred.astype(np.float64) + t
        if self.kind == "relative":
            with np.errstate(divide="ignore"):
                v = np.where(v > 0, 1.0 / v, 0.0)
        v = np.where(np.isfinite(v) & (v > 0) & (v <= self.max_depth), v, 0.0)
        return v.astype(np.float32)

    def align(self, pred: np.ndarray, hint=None) -> np.ndarray:
        """Metric depth (float32 (H, W), 0 = unknown) from a raw prediction and a hint.

        ``hint``: None, a scalar median depth (metres), or a sparse depth map (H, W) with 0 where
        unknown. Dense-enough maps are fitted (scale and shift); a scalar sets the scale only.
        """
        pred = np.asarray(pred, np.float32)
        fit = None
        if hint is not None and np.ndim(hint) == 0:
            med = float(hint)
            if not med > 0:
                raise InputError(f"median depth hint must be positive, got {med}")
            fit = self._scale_to_median(pred, med)
        elif hint is not None:
            hint = np.asarray(hint, np.float32)
            if hint.shape != pred.shape:
                raise InputError(f"depth hint is {hint.shape}, prediction is {pred.shape}")
            m = np.isfinite(hint) & (hint > 0)
            if m.sum() >= self.min_overlap:
                try:
                    fit = fit_scale_shift(pred, self._space(np.where(m, hint, 1.0)), m)
                except InputError as exc:
                    log.warning("mono depth: alignment failed (%s); using the previous fit", exc)
        if fit is None:
            fit = self.last_fit
        if fit is None:
            fit = (1.0, 0.0) if self.kind == "metric" else self._scale_to_median(pred, self.default_median_depth)
        else:
            self.last_fit = fit
        return self._to_depth(pred, *fit)

    def _scale_to_median(self, pred: np.ndarray, median_depth: float) -> tuple[float, float]:
        m = np.isfinite(pred) & (pred > 0)
        if not m.any():
            raise InputError("mono depth: the model predicted no positive value to scale")
        med_pred = float(np.median(pred[m]))
        if self.kind == "relative":  # median inverse depth -> 1 / median depth
            return 1.0 / (median_depth * med_pred), 0.0
        return median_depth / med_pred, 0.0

    # -- DepthSource ----------------------------------------------------------------------------
    def estimate(self, frames: np.ndarray, scene: dict | None, poses: np.ndarray, intrinsics: Intrinsics,
                 history: Sequence = ()) -> np.ndarray:
        """Aligned depth of ``frames`` (T, H, W, 3) uint8: float32 (T, H, W), rendered depth where covered."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames must be uint8 (T, H, W, 3), got {frames.dtype} {frames.shape}")
        out = np.zeros(frames.shape[:3], np.float32)
        for i, img in enumerate(frames):
            rendered = None
            if scene is not None and "mask" in scene and "depth" in scene:
                rendered = np.where(scene["mask"][i], scene["depth"][i], 0.0).astype(np.float32)
            out[i] = self.align(self.predict(img), rendered)
            if rendered is not None:
                out[i] = np.where(scene["mask"][i], rendered, out[i])
        return out

    def estimate_single(self, image: np.ndarray, intrinsics: Intrinsics | None = None, hint=None) -> np.ndarray:
        """Depth of one image without memory (world initialisation): float32 (H, W) metres, 0 = unknown."""
        return self.align(self.predict(image), hint)


__all__ = ["DEFAULT_CHECKPOINT", "KINDS", "MonoDepth", "fit_scale_shift", "resolve_checkpoint"]
