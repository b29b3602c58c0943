"""SAM2 video-predictor adapter: track prompted dynamic entities through each generated clip.

Prompts (any of them, on the first frame of the first clip):

* a mask image (the official test case's ``mask.png``: non-zero = dynamic); each connected
  component becomes one tracked object;
* boxes ``[x0, y0, x1, y1]`` in pixels, one object each;
* points ``[[x, y], ...]`` with labels (1 = on the object, 0 = background), one object.

Later clips are prompted with the previous clip's last mask of every object, so tracking
continues across clips; an object whose mask vanished is dropped. ``reset()`` restarts from the
original prompts. The returned mask is the union over objects, bool (T, H, W).

SAM2's ``init_state`` only reads a JPEG folder or an mp4 (``sam2.utils.misc.load_video_frames``),
so the frames are written as high-quality JPEGs to a temporary folder per clip. The predictor is
built with ``sam2.build_sam.build_sam2_video_predictor(config, checkpoint, device)``; it needs the
``sam2`` package and a checkpoint (``ckpt_path=None`` gives random weights, for tests only). On
CPU the tiny model takes seconds per frame (REFERENCE §5).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import cv2
import numpy as np

from ..errors import BackendUnavailableError, FileFormatError, InputError
from ..geometry import Intrinsics

log = logging.getLogger(__name__)


def read_mask_image(path: str | Path) -> np.ndarray:
    """bool (H, W) from a mask image (non-zero in any channel = True)."""
    from ..cameras import read_mask

    return read_mask(path)


def mask_objects(mask: np.ndarray, min_area: int = 4) -> list[np.ndarray]:
    """Connected components of a bool (H, W) mask with at least ``min_area`` pixels."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    parts = [labels == i for i in range(1, n)]
    return [p for p in parts if p.sum() >= min_area]


class Sam2Dynamics:
    """Dynamic-mask source ``sam2`` (see module docstring).

    Args:
        config: SAM2 model config name inside the package (e.g. ``configs/sam2.1/sam2.1_hiera_t.yaml``).
        checkpoint: SAM2 weights (``.pt`` holding ``{"model": state_dict}``); ``None`` only with
            ``allow_random_weights`` (tests).
        device: torch device.
        mask: prompt mask, bool (H, W) array or a path to a mask image.
        boxes: prompt boxes, (N, 4) pixels ``x0 y0 x1 y1``.
        points, labels: prompt points (N, 2) pixels ``x y`` and labels (N,) (1 = object).
        threshold: mask logit threshold.
        image_size: the model's input resolution (``None``: the config's, 1024); smaller is
            faster and coarser (tests use 256 on CPU).
    """

    def __init__(self, config: str = "configs/sam2.1/sam2.1_hiera_t.yaml", checkpoint: str | None = None,
                 device: str = "cpu", mask=None, boxes=None, points=None, labels=None, threshold: float = 0.0,
                 image_size: int | None = None, allow_random_weights: bool = False):
        if checkpoint is None and not allow_random_weights:
            raise BackendUnavailableError("the sam2 dynamics source needs SAM2 weights: set update.sam2_checkpoint")
        if checkpoint is not None and not Path(checkpoint).is_file():
            raise BackendUnavailableError(f"SAM2 checkpoint not found: {checkpoint}")
        try:
            from sam2.build_sam import build_sam2_video_predictor
        except ImportError as exc:
            raise BackendUnavailableError(f"the sam2 package is not importable ({exc}); see REFERENCE §5 to install it") from exc
        self.config, self.checkpoint, self.device = config, checkpoint, device
        self.threshold = float(threshold)
        self._prompt_mask = read_mask_image(mask) if isinstance(mask, (str, Path)) else (
            None if mask is None else np.asarray(mask).astype(bool))
        if self._prompt_mask is not None and self._prompt_mask.ndim != 2:
            raise InputError(f"prompt mask must be (H, W), got {self._prompt_mask.shape}")
        self._boxes = None if boxes is None else np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
        self._points = None if points is None else np.asarray(points, dtype=np.float32).reshape(-1, 2)
        self._labels = None
        if self._points is not None:
            self._labels = (np.ones(len(self._points), np.int32) if labels is None
                            else np.asarray(labels, dtype=np.int32).reshape(-1))
            if len(self._labels) != len(self._points):
                raise InputError("prompt points and labels differ in number")
        try:
            extra = [] if image_size is None else [f"++model.image_size={int(image_size)}"]
            self.predictor = build_sam2_video_predictor(config, ckpt_path=checkpoint, device=device,
                                                        hydra_overrides_extra=extra)
        except Exception as exc:  # hydra / state-dict errors: one clear message
            raise BackendUnavailableError(f"cannot build the SAM2 video predictor from {config!r} / {checkpoint!r}: {exc}") from exc
        self._carry: dict[int, np.ndarray] = {}  # object id -> last mask of the previous clip
        self._started = False

    def reset(self) -> None:
        """Forget the tracked objects; the next clip is prompted from the original prompts again."""
        self._carry.clear()
        self._started = False

    def _prompt(self, state, h: int, w: int) -> list[int]:
        """Add the prompts to frame 0 of ``state``; returns the object ids."""
        import torch

        p = self.predictor
        ids: list[int] = []
        if self._started:
            for obj_id, m in self._carry.items():
                p.add_new_mask(state, 0, obj_id, torch.as_tensor(m))
                ids.append(obj_id)
            return ids
        next_id = 1
        if self._prompt_mask is not None:
            m = self._prompt_mask
            if m.shape != (h, w):
                m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
            for part in mask_objects(m):
                p.add_new_mask(state, 0, next_id, torch.as_tensor(part))
                ids.append(next_id)
                next_id += 1
        for box in [] if self._boxes is None else self._boxes:
            p.add_new_points_or_box(state, 0, next_id, box=box)
            ids.append(next_id)
            next_id += 1
        if self._points is not None:
            p.add_new_points_or_box(state, 0, next_id, points=self._points, labels=self._labels)
            ids.append(next_id)
        return ids

    def masks(self, frames: np.ndarray, scene: dict | None = None, poses=None, intrinsics: Intrinsics | None = None,
              depth: np.ndarray | None = None) -> np.ndarray | None:
        """bool (T, H, W) union of the tracked objects in ``frames`` uint8 (T, H, W, 3); ``None``
        when nothing is prompted or tracked."""
        import torch

        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"frames must be uint8 (T, H, W, 3), got {frames.shape} {frames.dtype}")
        t, h, w = frames.shape[:3]
        if self._started and not self._carry:
            return None  # every object was lost
        with tempfile.TemporaryDirectory(prefix="spatia_sam2_") as tmp:
            for i, f in enumerate(frames):
                cv2.imwrite(str(Path(tmp) / f"{i:05d}.jpg"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
            with torch.inference_mode():
                state = self.predictor.init_state(video_path=tmp)
                ids = self._prompt(state, h, w)
                self._started = True
                if not ids:
                    return None
                per_obj = {obj_id: np.zeros((t, h, w), bool) for obj_id in ids}
                for frame_idx, obj_ids, logits in self.predictor.propagate_in_video(state):
                    for k, obj_id in enumerate(obj_ids):
                        per_obj[obj_id][frame_idx] = (logits[k, 0] > self.threshold).cpu().numpy()
        self._carry = {obj_id: m[-1] for obj_id, m in per_obj.items() if m[-1].any()}
        union = np.any(np.stack(list(per_obj.values())), axis=0)
        return union


def make_sam2_dynamics(update, device: str = "cpu") -> Sam2Dynamics:
    """The SAM2 source for an :class:`~spatia_core.config.UpdateConfig` (prompted by ``dynamic_mask``)."""
    return Sam2Dynamics(update.sam2_config, update.sam2_checkpoint or None, device=device,
                        mask=update.dynamic_mask or None)
