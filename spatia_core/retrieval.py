"""Reference retrieval (Spatia, supplementary Algorithm 1): pick past frames that see the same
part of the scene as the frames about to be generated.

Every frame is summarised by the set of coarse voxels its view sees (its "view-specific scene
point cloud", voxelised at ``voxel_size``, in the world frame, so no registration is needed).
The :class:`FrameBank` keeps those sets in a sparse voxel x frame incidence matrix ``A``; the
IoUs of all target views against all candidates come from one sparse product
``|T ∩ C| = T @ A`` (``T``: target x voxel indicator) and ``|T ∪ C| = |T| + |C| - |T ∩ C|``.

Algorithm 1, as used here: for every ``stride``-th target frame (``i % stride == 0``; the paper
uses stride = K) take the candidate with the highest IoU; keep it if the IoU exceeds
``epsilon``. The union of those picks, best score first, capped at ``k`` unique frames, is the
reference set.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse as sp
import torch

from .geometry import Intrinsics
from .cameras import backproject
from .memory.voxel_hash import VoxelHash, voxel_keys


@dataclass
class BankFrame:
    """A past frame: the image (JPEG- or, lossless, PNG-encoded to bound memory), its pose and camera."""

    frame_id: int
    pose: np.ndarray  # float64 (4, 4) camera-to-world
    intrinsics: Intrinsics
    jpeg: bytes

    def image(self) -> np.ndarray:
        """Decoded uint8 (H, W, 3) RGB image."""
        bgr = cv2.imdecode(np.frombuffer(self.jpeg, np.uint8), cv2.IMREAD_COLOR)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass
class Reference:
    """A retrieved reference frame."""

    bank_index: int
    frame_id: int
    score: float  # 3D IoU with the target view that picked it
    target_index: int


class FrameBank:
    """Past frames with their visible coarse-voxel sets, for IoU retrieval.

    ``max_frames`` bounds the bank: beyond it the oldest frames (except the first, the world's
    anchor view) are dropped, 10 % at a time.
    """

    def __init__(self, voxel_size: float = 0.1, max_frames: int = 5000, jpeg_quality: int = 95, pixel_stride: int = 4,
                 lossless: bool = False):
        self.voxel_size = float(voxel_size)
        self.lossless = bool(lossless)  # PNG instead of JPEG: references are the frames, bit for bit
        self.max_frames = int(max_frames)
        self.jpeg_quality = int(jpeg_quality)
        self.pixel_stride = int(pixel_stride)
        self.frames: list[BankFrame] = []
        self._ids = VoxelHash(capacity=4096)
        self._rows: list[np.ndarray] = []  # sorted unique int64 voxel ids per frame
        self._matrix: sp.csr_matrix | None = None
        self._next_id = 0

    def __len__(self) -> int:
        return len(self.frames)

    # -- view voxel sets -------------------------------------------------------------------
    def view_voxels(self, depth, intrinsics: Intrinsics, pose) -> np.ndarray:
        """Sorted unique ids of the coarse voxels seen in a depth map (0 = nothing).

        ``depth`` float (H, W) metres (numpy or torch), ``pose`` camera-to-world (4, 4).
        New voxels get new ids.
        """
        d = torch.as_tensor(np.asarray(depth) if not torch.is_tensor(depth) else depth).float().cpu()
        s = self.pixel_stride
        sub = torch.zeros_like(d, dtype=torch.bool)
        sub[::s, ::s] = True
        pts = backproject(d, intrinsics, torch.as_tensor(np.asarray(pose), dtype=torch.float32), sub & (d > 0))
        if pts.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        keys = torch.unique(voxel_keys(pts, self.voxel_size))
        ids, _ = self._ids.insert(keys)
        return np.sort(ids.numpy())

    # -- bank ------------------------------------------------------------------------------
    def add(self, image: np.ndarray, pose: np.ndarray, intrinsics: Intrinsics, voxel_ids: np.ndarray) -> int:
        """Store a frame (uint8 (H, W, 3) RGB) with its view voxel ids; returns its frame id."""
        bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
        if self.lossless:
            ok, buf = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        else:
            ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        if not ok:
            raise RuntimeError("image encoding failed")
        frame = BankFrame(self._next_id, np.asarray(pose, dtype=np.float64).copy(), intrinsics, buf.tobytes())
        self._next_id += 1
        self.frames.append(frame)
        self._rows.append(np.asarray(voxel_ids, dtype=np.int64))
        self._matrix = None
        if len(self.frames) > self.max_frames:
            drop = max(1, self.max_frames // 10)
            del self.frames[1 : 1 + drop]
            del self._rows[1 : 1 + drop]
        return frame.frame_id

    def _voxel_frame_matrix(self) -> sp.csr_matrix:
        """Cached sparse (voxels x frames) incidence matrix, rebuilt after the bank changed."""
        if self._matrix is None or self._matrix.shape[0] < self._ids.size:
            indptr = np.zeros(len(self._rows) + 1, dtype=np.int64)
            np.cumsum([r.size for r in self._rows], out=indptr[1:])
            indices = np.concatenate(self._rows) if self._rows else np.zeros(0, np.int64)
            frames_x_voxels = sp.csr_matrix(
                (np.ones(indices.size, np.float32), indices, indptr), shape=(len(self._rows), max(self._ids.size, 1))
            )
            self._matrix = frames_x_voxels.T.tocsr()
            self._sizes = np.diff(indptr).astype(np.float32)
        return self._matrix

    def iou(self, *voxel_id_sets: np.ndarray) -> np.ndarray:
        """3D IoU, float32 (len(sets), len(bank)), of each view voxel set with every stored frame.

        Cost grows with the number of (target voxel, frame seeing it) pairs, not with the bank.
        """
        if not self.frames:
            return np.zeros((len(voxel_id_sets), 0), np.float32)
        vf = self._voxel_frame_matrix()
        ids = [np.asarray(v, dtype=np.int64) for v in voxel_id_sets]
        ids = [v[v < vf.shape[0]] for v in ids]
        indptr = np.zeros(len(ids) + 1, dtype=np.int64)
        np.cumsum([v.size for v in ids], out=indptr[1:])
        targets = sp.csr_matrix(
            (np.ones(indptr[-1], np.float32), np.concatenate(ids) if ids else np.zeros(0, np.int64), indptr),
            shape=(len(ids), vf.shape[0]),
        )
        inter = (targets @ vf).toarray()
        sizes = np.array([v.size for v in voxel_id_sets], np.float32)[:, None]
        union = sizes + self._sizes[None, :] - inter
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)


def retrieve_references(
    bank: FrameBank,
    target_voxel_ids: list[np.ndarray],
    k: int = 7,
    epsilon: float = 0.1,
    stride: int | None = None,
    exclude_frame_ids: set[int] | None = None,
) -> list[Reference]:
    """Algorithm 1: up to ``k`` unique references for a clip's target views (best first).

    ``target_voxel_ids`` holds the view voxel set of every target frame; ``stride`` defaults to
    ``k``; frames in ``exclude_frame_ids`` (e.g. the history frames already conditioning the
    clip) are never picked.
    """
    if k <= 0 or not len(bank):
        return []
    stride = stride or k
    excluded = np.array([f.frame_id in (exclude_frame_ids or ()) for f in bank.frames])
    picked = list(range(0, len(target_voxel_ids), stride))
    scores = bank.iou(*[target_voxel_ids[i] for i in picked])
    scores[:, excluded] = -1.0
    best: dict[int, Reference] = {}
    for row, i in enumerate(picked):
        j = int(np.argmax(scores[row]))
        s = float(scores[row, j])
        if s > epsilon and (j not in best or s > best[j].score):
            best[j] = Reference(j, bank.frames[j].frame_id, s, i)
    return sorted(best.values(), key=lambda r: -r.score)[:k]
