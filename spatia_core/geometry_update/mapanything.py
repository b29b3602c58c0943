"""MapAnything depth source (optional dependency ``mapanything``, facebookresearch/map-anything).

Written against MapAnything's documented inference API (its README, "Multi-Modal Inference"):
``MapAnything.from_pretrained(folder)``; views are dicts with ``img`` (H, W, 3) in [0, 255],
``intrinsics`` (3, 3) and ``camera_poses`` (4, 4) OpenCV camera-to-world, plus
``is_metric_scale``; ``mapanything.utils.image.preprocess_inputs(views)`` then
``model.infer(views, ...)`` returns one dict per view with ``depth_z`` (B, H, W, 1) and ``mask``
(B, H, W, 1). The package is not installed in this project's environment, so this adapter is
untested against the real package; without it every entry point raises a clear
:class:`BackendUnavailableError`.

The clip's frames go in with their commanded poses and the camera intrinsics, after the history
frames (also posed), so the predicted depth is in the memory's metric frame. Where the memory
covers a pixel the rendered depth is returned (it is authoritative).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import BackendUnavailableError, InputError
from ..geometry import Intrinsics

log = logging.getLogger(__name__)

INSTALL_HINT = ("update.depth=mapanything needs the optional package 'mapanything' "
                "(https://github.com/facebookresearch/map-anything, installed from its repository) "
                "and a local model folder in update.depth_checkpoint; it is not installed here. "
                "Use update.depth=mono (transformers) or multiview (no weights) instead")


def mapanything_available() -> bool:
    """Whether the ``mapanything`` package can be imported."""
    return importlib.util.find_spec("mapanything") is not None


def _k(intr: Intrinsics) -> np.ndarray:
    return intr.matrix().astype(np.float32)


class MapAnythingDepth:
    """Depth from MapAnything with known poses and intrinsics.

    Args:
        checkpoint: local folder of a MapAnything model (``from_pretrained`` format).
        device: torch device.
        use_amp: mixed precision inference (bf16) on CUDA.
        max_history: most history frames given to the model as extra posed views.
    """

    def __init__(self, checkpoint: str, device="cpu", use_amp: bool = True, max_history: int = 4):
        if not mapanything_available():
            raise BackendUnavailableError(INSTALL_HINT)
        if not checkpoint or not Path(checkpoint).is_dir():
            raise BackendUnavailableError(f"mapanything needs update.depth_checkpoint: a local model folder, "
                                          f"got {checkpoint!r} (nothing is downloaded)")
        from mapanything.models import MapAnything

        self.device = torch.device(device)
        self.model = MapAnything.from_pretrained(str(checkpoint)).to(self.device).eval()
        self.use_amp = bool(use_amp) and self.device.type == "cuda"
        self.max_history = int(max_history)

    def _infer(self, views: list[dict]) -> list[np.ndarray]:
        from mapanything.utils.image import preprocess_inputs

        sizes = [v["img"].shape[:2] for v in views]
        with torch.no_grad():
            preds = self.model.infer(preprocess_inputs(views), memory_efficient_inference=False,
                                     use_amp=self.use_amp, amp_dtype="bf16", apply_mask=True, mask_edges=True)
        out = []
        for (h, w), p in zip(sizes, preds):
            d = p["depth_z"].float()[..., 0]  # (B, h', w')
            if "mask" in p:
                d = torch.where(p["mask"][..., 0].bool(), d, torch.zeros_like(d))
            if d.shape[-2:] != (h, w):  # preprocess_inputs may resize; bring it back to the frame size
                d = torch.nn.functional.interpolate(d[:, None], size=(h, w), mode="nearest")[:, 0]
            out.append(d[0].cpu().numpy().astype(np.float32))
        return out

    @staticmethod
    def _view(image, intrinsics: Intrinsics, pose=None) -> dict:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            raise InputError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
        v = {"img": torch.from_numpy(image.copy()).float(), "intrinsics": torch.from_numpy(_k(intrinsics))}
        if pose is not None:
            v["camera_poses"] = torch.from_numpy(np.asarray(pose, np.float32))
            v["is_metric_scale"] = torch.tensor([True])
        return v

    def estimate(self, frames: np.ndarray, scene: dict | None, poses: np.ndarray, intrinsics: Intrinsics,
                 history: Sequence = ()) -> np.ndarray:
        """Depth of ``frames`` (T, H, W, 3) uint8 at c2w ``poses``: float32 (T, H, W), 0 = unknown."""
        frames = np.asarray(frames)
        hist = list(history)[-self.max_history:] if self.max_history else []
        views = [self._view(h.image, h.intrinsics, h.pose) for h in hist]
        views += [self._view(f, intrinsics, p) for f, p in zip(frames, np.asarray(poses))]
        depth = np.stack(self._infer(views)[len(hist):])
        if scene is not None and "mask" in scene and "depth" in scene:
            depth = np.where(scene["mask"], scene["depth"], depth).astype(np.float32)
        return depth

    def estimate_single(self, image: np.ndarray, intrinsics: Intrinsics | None = None, hint=None) -> np.ndarray:
        """Metric depth of one image (world initialisation): float32 (H, W), 0 = unknown."""
        image = np.asarray(image)
        if intrinsics is None:
            raise InputError("mapanything single-image depth needs the image's intrinsics")
        return self._infer([self._view(image, intrinsics)])[0]


__all__ = ["INSTALL_HINT", "MapAnythingDepth", "mapanything_available"]
