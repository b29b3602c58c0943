"""Weight-free dynamic masks from disagreement with the memory and between consecutive frames.

The world loop treats the memory as authoritative where its rendering covers a pixel, so new
geometry only comes from uncovered pixels. A moving thing therefore shows up in two ways:

* **over covered pixels** it disagrees with the memory's rendering: its colour differs from the
  rendered colour by more than ``color_threshold`` (mean absolute difference over RGB, 0-255),
  or its depth differs from the rendered depth by more than ``depth_threshold`` (relative) plus
  ``depth_abs`` metres. These pixels would not be fused anyway; they are reported so that the
  mask says where the moving things are.
* **over uncovered pixels** there is nothing to compare with, so consistency across
  consecutive frames decides: each candidate pixel of frame ``t`` (with depth) is back-projected
  at its pose and projected into the frames ``s`` within ``window`` frames of ``t`` (including
  the last ``window`` frames of the previous clip). If frame ``s`` sees *farther* than the point
  at that pixel (free space where the point should be), the point was not there at time ``s``:
  it moved, and the pixel is dynamic. If ``s`` sees the point at the same depth but in a clearly
  different colour (``2 * color_threshold``), it is dynamic too. Nearer readings (occlusion),
  pixels outside ``s``'s view and pixels without depth give no evidence.

Both masks are cleaned with a 3x3 opening (isolated pixels from rounding at depth edges) and
grown by ``dilate`` pixels so that the blurred rims of moving things are excluded as well. An
object whose displacement within ``window`` frames is smaller than its own extent is only caught
where its colour changes: use a larger window for slow objects.
"""

from __future__ import annotations

from collections import deque

import cv2
import numpy as np

from ..cameras import backproject, pixel_index
from ..errors import InputError
from ..geometry import Intrinsics, validate_poses


def _clean(mask: np.ndarray, dilate: int) -> np.ndarray:
    """3x3 opening then dilation by ``dilate`` px of a bool (H, W) mask."""
    m = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    if dilate > 0:
        m = cv2.dilate(m, np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8))
    return m.astype(bool)


class ResidualDynamics:
    """Dynamic-mask source ``residual`` (see module docstring).

    Args:
        color_threshold: mean absolute RGB difference (0-255) above which a covered pixel
            disagrees with the rendering.
        depth_threshold: relative depth difference above which depths disagree (plus ``depth_abs``).
        depth_abs: absolute depth tolerance in metres (about a voxel or two).
        window: frames on each side used for the multi-frame consistency test.
        dilate: pixels the final masks are grown by.
        min_depth: depth readings at or below this (metres) are ignored.
    """

    def __init__(self, color_threshold: float = 30.0, depth_threshold: float = 0.05, depth_abs: float = 0.03,
                 window: int = 2, dilate: int = 2, min_depth: float = 0.05):
        if not (color_threshold > 0 and depth_threshold >= 0 and depth_abs >= 0):
            raise InputError("residual thresholds must be positive")
        if window < 1 or dilate < 0:
            raise InputError(f"residual window must be >= 1 and dilate >= 0, got {window}, {dilate}")
        self.color_threshold = float(color_threshold)
        self.depth_threshold = float(depth_threshold)
        self.depth_abs = float(depth_abs)
        self.window = int(window)
        self.dilate = int(dilate)
        self.min_depth = float(min_depth)
        self._tail: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=self.window)

    def reset(self) -> None:
        """Forget the previous clip's frames."""
        self._tail.clear()

    def _tol(self, z: np.ndarray) -> np.ndarray:
        return self.depth_abs + self.depth_threshold * z

    def covered_residual(self, frames: np.ndarray, scene: dict, depth: np.ndarray | None) -> np.ndarray:
        """bool (T, H, W): covered pixels whose colour or depth disagrees with the rendering."""
        diff = np.abs(frames.astype(np.int16) - scene["rgb"].astype(np.int16)).mean(-1)
        bad = diff > self.color_threshold
        if depth is not None:
            sd = scene["depth"]
            bad |= (depth > self.min_depth) & (np.abs(depth - sd) > self._tol(sd))
        return bad & scene["mask"]

    def _moved(self, t_rgb, t_depth, t_pose, cand, others, k: Intrinsics) -> np.ndarray:
        """bool (H, W): candidate pixels of one frame contradicted by any of ``others``."""
        v, u = np.nonzero(cand)
        z = t_depth[v, u].astype(np.float64)
        world = backproject(t_depth, k, t_pose, cand)
        colour = t_rgb[v, u].astype(np.int16)
        moved = np.zeros(len(z), dtype=bool)
        for s_rgb, s_depth, s_pose in others:
            pc = (world - s_pose[:3, 3]) @ s_pose[:3, :3]
            zs = pc[:, 2]
            front = zs > self.min_depth
            us = pixel_index(pc[:, 0] / np.where(front, zs, 1) * k.fx + k.cx)
            vs = pixel_index(pc[:, 1] / np.where(front, zs, 1) * k.fy + k.cy)
            inside = front & (us >= 0) & (us < k.width) & (vs >= 0) & (vs < k.height)
            idx = np.nonzero(inside)[0]
            ds = s_depth[vs[idx], us[idx]]
            seen = ds > self.min_depth
            tol = self._tol(zs[idx])
            through = seen & (ds > zs[idx] + tol)  # free space where the point should be
            same = seen & (np.abs(ds - zs[idx]) <= tol)
            recoloured = same & (np.abs(s_rgb[vs[idx], us[idx]].astype(np.int16) - colour[idx]).mean(-1)
                                 > 2 * self.color_threshold)
            moved[idx[through | recoloured]] = True
        out = np.zeros_like(cand)
        out[v[moved], u[moved]] = True
        return out

    def masks(self, frames: np.ndarray, scene: dict, poses: np.ndarray, intrinsics: Intrinsics,
              depth: np.ndarray | None = None) -> np.ndarray | None:
        """bool (T, H, W) dynamic pixels of ``frames`` uint8 (T, H, W, 3), or ``None`` if none.

        ``depth`` float32 (T, H, W) metres of the frames (0 = unknown); without it only the
        covered-pixel colour test runs and nothing is carried to the next clip.
        """
        frames = np.asarray(frames)
        poses = validate_poses(poses)
        t, h, w = frames.shape[:3]
        if frames.shape != (t, h, w, 3) or len(poses) != t or scene["mask"].shape != (t, h, w):
            raise InputError(f"frames {frames.shape}, poses {poses.shape} and scene {scene['mask'].shape} do not match")
        if depth is not None:
            depth = np.asarray(depth, dtype=np.float32)
            if depth.shape != (t, h, w):
                raise InputError(f"depth {depth.shape} does not match frames {frames.shape}")
        dyn = self.covered_residual(frames, scene, depth)
        if depth is not None:
            history = list(self._tail)
            seq = history + [(frames[i], depth[i], poses[i]) for i in range(t)]
            off = len(history)
            for i in range(t):
                cand = ~scene["mask"][i] & (depth[i] > self.min_depth)
                if not cand.any():
                    continue
                j = off + i
                others = [seq[s] for s in range(max(0, j - self.window), min(len(seq), j + self.window + 1)) if s != j]
                dyn[i] |= self._moved(frames[i], depth[i], poses[i], cand, others, intrinsics)
            for i in range(max(0, t - self.window), t):
                self._tail.append((frames[i].copy(), depth[i].copy(), poses[i].copy()))
        dyn = np.stack([_clean(m, self.dilate) for m in dyn])
        return dyn if dyn.any() else None


def make_residual_dynamics(update) -> ResidualDynamics:
    """The residual detector for an :class:`~spatia_core.config.UpdateConfig`."""
    return ResidualDynamics(update.residual_color, update.residual_depth, update.residual_depth_abs,
                            update.residual_window, update.residual_dilate)
