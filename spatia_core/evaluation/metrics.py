"""Image and camera metrics of the Spatia paper (arXiv 2512.15716, Tables 2, 3, 5).

Images are RGB numpy arrays of shape (H, W, 3): uint8 in [0, 255], or floating point in
[0, 1] (scaled by 255). Torch tensors of the same layout are accepted too.

* :func:`psnr` — dB over all pixels and channels (data range 255), optionally on a mask.
* :func:`ssim` — Wang et al. 2004 SSIM, 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03,
  computed per RGB channel and averaged over the three channels, over the "valid" region (pixels
  whose whole window lies inside the image). Equal to
  ``skimage.metrics.structural_similarity(a, b, channel_axis=2, data_range=255,
  gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
* :func:`lpips` / :class:`LPIPS` — LPIPS AlexNet v0.1 (``lpips.LPIPS(net='alex')``), without
  torchvision; weights from ``scripts/fetch_eval_weights.py``.
* :func:`coverage` — fraction of True pixels of a mask.

Match accuracy and camera-control error (feature matching) are in
:mod:`spatia_core.evaluation.matching`.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from .lpips_net import LPIPSAlexNet, default_weights_path, load_weights_file

__all__ = ["LPIPS", "coverage", "lpips", "psnr", "ssim"]


# ------------------------------------------------------------------------------------------
# input checks
# ------------------------------------------------------------------------------------------


def _to_numpy(x) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_float255(x, name: str, batch: bool = False) -> np.ndarray:
    """uint8 or [0, 1] float image(s) -> float64 in [0, 255]; shape (H, W, 3) or (H, W)."""
    arr = _to_numpy(x)
    ok_ndim = (3, 4) if batch else (2, 3)
    if arr.ndim not in ok_ndim or (arr.ndim == ok_ndim[1] and arr.shape[-1] not in (1, 3)):
        raise InputError(f"{name} must be an image of shape (H, W, 3){' or (N, H, W, 3)' if batch else ''}, "
                         f"got shape {arr.shape}")
    if arr.dtype == np.uint8:
        return arr.astype(np.float64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise InputError(f"{name} has NaN or infinite values")
        return arr.astype(np.float64) * 255.0
    raise InputError(f"{name} must be uint8 or floating point in [0, 1], got dtype {arr.dtype}")


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _as_float255(a, "a"), _as_float255(b, "b")
    if a.shape != b.shape:
        raise InputError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def _as_uint8(x, name: str) -> np.ndarray:
    arr = _to_numpy(x)
    if arr.dtype != np.uint8:
        arr = np.clip(np.rint(_as_float255(arr, name)), 0, 255).astype(np.uint8)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise InputError(f"{name} must be an RGB image of shape (H, W, 3), got shape {arr.shape}")
    return np.ascontiguousarray(arr)


# ------------------------------------------------------------------------------------------
# PSNR, SSIM, coverage
# ------------------------------------------------------------------------------------------


def psnr(a, b, mask=None) -> float:
    """Peak signal-to-noise ratio in dB, data range 255.

    Args:
        a, b: images (H, W, 3) (or (H, W)), uint8 or float in [0, 1].
        mask: optional bool (H, W): only these pixels count (all their channels).

    Returns:
        ``10 log10(255^2 / MSE)``; ``inf`` when the (masked) images are identical.

    Raises:
        InputError: shapes differ, the mask has the wrong shape or selects no pixel.
    """
    a, b = _pair(a, b)
    diff2 = (a - b) ** 2
    if mask is not None:
        m = _to_numpy(mask).astype(bool)
        if m.shape != a.shape[:2]:
            raise InputError(f"mask shape {m.shape} does not match image shape {a.shape[:2]}")
        if not m.any():
            raise InputError("mask selects no pixel")
        diff2 = diff2[m]
    mse = float(diff2.mean())
    if mse == 0.0:
        return math.inf
    return 10.0 * math.log10(255.0**2 / mse)


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x**2) / (2.0 * sigma**2))
    return g / g.sum()


def _valid_filter(img: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation of (H, W, C) with ``g`` x ``g`` keeping only the valid region."""
    from scipy.ndimage import correlate1d

    r = (len(g) - 1) // 2
    out = correlate1d(img, g, axis=0, mode="reflect")
    out = correlate1d(out, g, axis=1, mode="reflect")
    return out[r:-r, r:-r]


def ssim(a, b, win_size: int = 11, sigma: float = 1.5, mask=None) -> float:
    """Structural similarity (Wang et al. 2004), mean over the valid region and the RGB channels.

    Args:
        a, b: images (H, W, 3) (or (H, W)), uint8 or float in [0, 1]; H, W >= ``win_size``.
        win_size, sigma: the Gaussian window (defaults: 11 x 11, sigma 1.5).
        mask: optional bool (H, W): the SSIM map is averaged over these pixels only (those of
            the valid region; the windows still read their neighbours).

    Returns:
        SSIM in [-1, 1]; 1.0 for identical images. Each channel is treated as its own
        grayscale image (no luminance conversion) and the three channel SSIMs are averaged.
        Population (not sample) covariances, C1 = (0.01 * 255)^2, C2 = (0.03 * 255)^2.
    """
    a, b = _pair(a, b)
    if a.shape[0] < win_size or a.shape[1] < win_size:
        raise InputError(f"images must be at least {win_size}x{win_size} for SSIM, got {a.shape[:2]}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    g = _gaussian_1d(win_size, sigma)
    c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
    mu_a, mu_b = _valid_filter(a, g), _valid_filter(b, g)
    var_a = _valid_filter(a * a, g) - mu_a**2
    var_b = _valid_filter(b * b, g) - mu_b**2
    cov = _valid_filter(a * b, g) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    if mask is not None:
        m = _to_numpy(mask).astype(bool)
        if m.shape != a.shape[:2]:
            raise InputError(f"mask shape {m.shape} does not match image shape {a.shape[:2]}")
        r = (win_size - 1) // 2
        m = m[r:-r, r:-r]
        if not m.any():
            raise InputError("mask selects no pixel of the SSIM valid region")
        return float(s[m].mean())
    return float(s.mean(axis=(0, 1)).mean())


def coverage(mask) -> float:
    """Fraction (0..1) of nonzero entries of ``mask`` (any shape; numpy or torch)."""
    m = _to_numpy(mask)
    if m.size == 0:
        raise InputError("coverage of an empty mask")
    return float(np.count_nonzero(m) / m.size)


# ------------------------------------------------------------------------------------------
# LPIPS
# ------------------------------------------------------------------------------------------


class LPIPS:
    """LPIPS distance, AlexNet v0.1 (same network as ``lpips.LPIPS(net='alex')``).

    Weights are read lazily (first call) from ``weights_path`` (default
    ``$SPATIA_WEIGHTS_DIR/lpips_alex_v0.1.safetensors`` or ``<repo>/.weights/...``); a missing
    file raises :class:`BackendUnavailableError` naming ``scripts/fetch_eval_weights.py``.

    Call with two images (H, W, 3) -> float, or two batches (N, H, W, 3) -> float64 (N,).
    Images are uint8 or float in [0, 1] and are mapped to [-1, 1] as LPIPS expects; H, W >= 32.
    """

    def __init__(self, weights_path: str | Path | None = None, device: str | torch.device = "cpu",
                 batch_size: int = 8):
        self.weights_path = Path(weights_path) if weights_path is not None else default_weights_path()
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self._net: LPIPSAlexNet | None = None
        self._lock = threading.Lock()

    def available(self) -> bool:
        """Whether the weights file exists (does not load it)."""
        return self.weights_path.is_file()

    @property
    def net(self) -> LPIPSAlexNet:
        """The loaded network (loads the weights on first use)."""
        with self._lock:
            if self._net is None:
                net = LPIPSAlexNet()
                net.load_lpips_state(load_weights_file(self.weights_path))
                self._net = net.to(self.device)
            return self._net

    def _tensor(self, x, name: str) -> torch.Tensor:
        arr = _as_float255(x, name, batch=True)
        if arr.ndim == 3:
            arr = arr[None]
        if arr.shape[-1] != 3:
            raise InputError(f"{name} must have 3 (RGB) channels, got shape {arr.shape}")
        if arr.shape[1] < 32 or arr.shape[2] < 32:
            raise InputError(f"LPIPS needs images of at least 32x32, got {arr.shape[1:3]}")
        t = torch.from_numpy(arr.astype(np.float32)).permute(0, 3, 1, 2)
        return t / 127.5 - 1.0

    def __call__(self, a, b, mask=None):
        """Distance of ``a`` to ``b``; with bool ``mask`` ((H, W) or (N, H, W)) the spatial LPIPS map
        (each layer's map upsampled bilinearly to H x W, as ``lpips.LPIPS(spatial=True)``) is
        averaged over the masked pixels only."""
        single = _to_numpy(a).ndim == 3
        ta, tb = self._tensor(a, "a"), self._tensor(b, "b")
        if ta.shape != tb.shape:
            raise InputError(f"images differ in shape: {tuple(ta.shape)} vs {tuple(tb.shape)}")
        tm = None
        if mask is not None:
            tm = torch.as_tensor(_to_numpy(mask).astype(bool))
            tm = tm[None] if tm.ndim == 2 else tm
            if tuple(tm.shape) != (ta.shape[0], ta.shape[2], ta.shape[3]):
                raise InputError(f"mask shape {tuple(tm.shape)} does not match images {tuple(ta.shape)}")
            if not bool(tm.flatten(1).any(1).all()):
                raise InputError("mask selects no pixel")
        net = self.net
        out = []
        with torch.inference_mode():
            for i in range(0, ta.shape[0], self.batch_size):
                x0 = ta[i : i + self.batch_size].to(self.device)
                x1 = tb[i : i + self.batch_size].to(self.device)
                m = None if tm is None else tm[i : i + self.batch_size].to(self.device)
                out.append(net(x0, x1, mask=m).double().cpu())
        d = torch.cat(out).numpy()
        return float(d[0]) if single else d


_LPIPS_CACHE: dict[Path, LPIPS] = {}


def lpips(a, b) -> float:
    """LPIPS (AlexNet v0.1) between two images (H, W, 3); lower is more similar, 0 if identical.

    Uses a cached :class:`LPIPS` on the CPU with the default weights file.
    """
    path = default_weights_path()
    if path not in _LPIPS_CACHE:
        _LPIPS_CACHE[path] = LPIPS(path)
    return _LPIPS_CACHE[path](a, b)
