"""Hole filling of a rendered view that is not a blur: background first, then push-pull.

Holes in a scene projection are of two kinds. Small ones (gaps between splats seen at a slant,
disocclusions beside a foreground edge) should take the colour of the surface *behind* them, the
one the foreground moved away from; filling them from every side smears the foreground edge into
the background. Large ones (nothing of the memory in that direction) have no right answer.

:func:`fill_holes_depth_aware` grows the known pixels into the holes one ring per step, up to
``max_steps`` pixels: a hole pixel with known 8-neighbours takes the mean colour (and depth) of
those neighbours whose depth is within ``depth_tol`` of the farthest one among them; what is still
empty afterwards gets :func:`~spatia_core.generators.projection.fill_holes` (push-pull).
Deterministic, pure torch, (B, H, W) batches.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_OFFSETS = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def _neighbours(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (8, B, C, H, W): the 8-neighbours of every pixel (zero beyond the border)."""
    p = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    return torch.stack([p[..., 1 + dy : 1 + dy + h, 1 + dx : 1 + dx + w] for dy, dx in _OFFSETS])


def fill_holes_depth_aware(rgb: torch.Tensor, mask: torch.Tensor, depth: torch.Tensor, max_steps: int = 6,
                           depth_tol: float = 0.03) -> torch.Tensor:
    """Fill ``rgb`` float (B, H, W, 3) where bool ``mask`` (B, H, W) is False, using metric
    ``depth`` (B, H, W) of the known pixels (see the module docstring). Known pixels are unchanged."""
    from .generators.projection import fill_holes

    if bool(mask.all()) or not bool(mask.any()):
        return rgb.clone() if bool(mask.all()) else fill_holes(rgb, mask)
    col = rgb.permute(0, 3, 1, 2).float().clone()  # (B, 3, H, W)
    known = mask[:, None].clone()
    dep = torch.where(mask, depth.float(), torch.zeros_like(depth, dtype=torch.float32))[:, None]
    for _ in range(max_steps):
        nk = _neighbours(known.float()) > 0  # (8, B, 1, H, W)
        nd = torch.where(nk, _neighbours(dep), torch.zeros(()))
        todo = ~known & nk.any(0)
        if not bool(todo.any()):
            break
        far = nd.max(0).values
        pick = nk & (nd >= far * (1.0 - depth_tol))
        wsum = pick.float().sum(0)
        c = (torch.where(pick, _neighbours(col), torch.zeros(())).sum(0) / wsum.clamp_min(1))
        d = (torch.where(pick, nd, torch.zeros(())).sum(0) / wsum.clamp_min(1))
        col = torch.where(todo, c, col)
        dep = torch.where(todo, d, dep)
        known = known | todo
    out = col.permute(0, 2, 3, 1)
    still = known[:, 0]
    if not bool(still.all()):
        out = torch.where(still[..., None], out, fill_holes(out, still))
    return out


__all__ = ["fill_holes_depth_aware"]
