"""The weight-free default generator: the scene projection with its holes filled.

Holes (pixels the memory does not cover) are filled by push-pull interpolation: the image and
its coverage weights are averaged down an image pyramid, then each level's holes take the
upsampled colour of the coarser level. Deterministic, pure torch. The depth handed back is the
rendered depth with holes left at 0: the backend invents no geometry.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from .base import GenerationRequest, GenerationResult


def fill_holes(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Push-pull hole filling. ``rgb`` float (B, H, W, 3), ``mask`` bool (B, H, W) of known pixels."""
    img = rgb.permute(0, 3, 1, 2).float()
    w = mask[:, None].float()
    if bool(mask.all()) or not bool(mask.any()):
        return rgb.clone()
    pyramid = [(img * w, w)]
    while min(pyramid[-1][1].shape[-2:]) > 1:
        cw, ww = pyramid[-1]
        pyramid.append((F.avg_pool2d(cw, 2, ceil_mode=True), F.avg_pool2d(ww, 2, ceil_mode=True)))
    colour = pyramid[-1][0] / pyramid[-1][1].clamp(min=1e-8)
    for cw, ww in reversed(pyramid[:-1]):
        up = F.interpolate(colour, size=cw.shape[-2:], mode="bilinear", align_corners=False)
        alpha = ww.clamp(max=1.0)
        colour = torch.where(ww > 0, cw / ww.clamp(min=1e-8), up) * alpha + up * (1 - alpha)
    return colour.permute(0, 2, 3, 1)


class ProjectionGenerator:
    """Generator backend ``projection``: renders what the memory holds, fills the rest."""

    name = "projection"
    depth_is_memory = True  # the depth handed back is the memory's rendered depth (no carving needed)
    uses_references = False  # it shows the memory; history and reference frames add nothing

    def __init__(self, device: str = "cpu"):
        self.device = torch.device(device)

    def generate(self, request: GenerationRequest) -> GenerationResult:
        depth = np.where(request.visibility, request.scene_depth, 0.0).astype(np.float32)
        if request.visibility.all():  # nothing to fill (the usual frame of a known world)
            return GenerationResult(frames=np.array(request.scene_rgb, dtype=np.uint8), depth=depth)
        rgb = torch.as_tensor(request.scene_rgb, device=self.device).float() / 255.0
        mask = torch.as_tensor(request.visibility, device=self.device)
        filled = torch.where(mask[..., None], rgb, fill_holes(rgb, mask))
        frames = (filled.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
        return GenerationResult(frames=frames, depth=depth)
