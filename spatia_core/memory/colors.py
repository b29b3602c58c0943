"""Colour conventions shared by the memory and the renderer."""

from __future__ import annotations

import torch


def as_rgb_float(rgb: torch.Tensor) -> torch.Tensor:
    """Colours as float32 in [0, 1]: uint8 is divided by 255, float is kept as it is."""
    return rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
