"""Reference selection as the official Spatia release does it, beside our Algorithm 1.

:mod:`spatia_core.retrieval` follows the paper (voxel IoU, argmax per target, threshold). The
release (``inference.py`` ``select_reference_frames`` with ``utils/frustum_culling.py``) picks
references differently, and this module reproduces that choice:

1. For every camera, a z-buffer over the memory point cloud marks the "front-most" points
   (:func:`frontmost_point_masks`): a point counts if it lies in front of the camera
   (``Z > 0``), its pixel ``(trunc(u), trunc(v))`` is in the image, and its depth is within
   1e-6 (float32) of the smallest depth landing on that pixel. ``trunc`` rounds toward zero,
   so ``u`` in (-1, 0) still lands in column 0.
2. History cameras are matched to target cameras one-to-one by the Hungarian method on the
   counts of shared front-most points (rounded to bfloat16, as the release's matmul does),
   and the matches are kept in target order, at most ``k``, with no threshold
   (:func:`match_masks_release`).

Which frames are candidates and targets also follows the release
(:func:`release_candidate_indices`, :func:`release_target_indices`, :func:`release_stride`).
All arithmetic runs on the CPU in float32 with the release's order of operations, so masks
agree bit for bit with the release's torch kernel on the same machine.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .errors import InputError
from .geometry import Intrinsics

BACKGROUND_DEPTH = 1e9
"""The release's empty z-buffer value; valid points farther than this are never front-most."""
DEPTH_TOLERANCE = 1e-6
"""Absolute slack (added in float32) within which a point ties with the pixel's nearest depth."""
RELEASE_POINT_BATCH = 10_000_000
"""The release's ``--point_retrieval_batch_size``: each batch of points gets its own z-buffer."""


# -- frame choice -----------------------------------------------------------------------------
def release_stride(fps: float, rate: float) -> int:
    """Frame stride for sampling a ``fps`` video at ``rate`` Hz: ``max(1, round(fps / rate))``.

    The release uses ``ref_fps=2`` for targets (stride 12 at 24 fps) and ``ref_hist_fps=6``
    for history candidates (stride 4).
    """
    if fps <= 0 or rate <= 0:
        raise InputError(f"fps and rate must be > 0, got {fps} and {rate}")
    return max(1, int(round(fps / rate)))


def release_candidate_indices(num_past: int, hist_frames: int = 9, hist_stride: int = 4) -> list[int]:
    """Indices of the past frames the release offers as references.

    Every ``hist_stride``-th of the ``num_past`` frames so far, leaving out the last
    ``hist_frames`` (they condition the clip as history): the release's
    ``all_hist_frames[:-hist_frames][::ref_hist_stride]``. For ``hist_frames = 0`` this keeps
    all frames, where Python's ``[:-0]`` would keep none (the release cannot run that way).
    """
    if num_past < 0 or hist_frames < 0 or hist_stride < 1:
        raise InputError(f"need num_past >= 0, hist_frames >= 0, hist_stride >= 1, got {num_past}, {hist_frames}, {hist_stride}")
    return list(range(0, max(num_past - hist_frames, 0), hist_stride))


def release_target_indices(num_targets: int, stride: int = 12) -> list[int]:
    """Indices of the clip frames whose cameras are matched: ``round_extrinsic[::ref_stride]``.

    In the release the clip starts with its ``hist_frames`` conditioning frames and is padded
    to its full length by repeating the last pose; ``num_targets`` counts all of them.
    """
    if num_targets < 0 or stride < 1:
        raise InputError(f"need num_targets >= 0 and stride >= 1, got {num_targets} and {stride}")
    return list(range(0, num_targets, stride))


# -- visibility -------------------------------------------------------------------------------
def _pixel_intrinsics(intrinsics, count: int) -> torch.Tensor:
    """float32 (count, 4) ``[fx, fy, cx, cy]`` in pixels from an :class:`Intrinsics`, (4,) or (count, 4)."""
    if isinstance(intrinsics, Intrinsics):
        intrinsics = [intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy]
    k = torch.as_tensor(np.asarray(intrinsics, dtype=np.float32))
    if k.shape == (4,):
        return k.expand(count, 4)
    if k.shape != (count, 4):
        raise InputError(f"intrinsics must be (4,) or ({count}, 4), got {tuple(k.shape)}")
    return k


def frontmost_point_masks(
    points,
    w2c,
    intrinsics,
    height: int,
    width: int,
    near: float | None = None,
    far: float | None = None,
    camera_chunk: int = 2,
) -> np.ndarray:
    """bool (T, N): which points each camera sees front-most (the release's z-buffer visibility).

    ``points``: float (N, >= 3) world xyz (extra columns, e.g. colours, are ignored);
    ``w2c``: float (T, 4, 4) or (T, 3, 4) world-to-camera, OpenCV axes; ``intrinsics``: pixel
    ``[fx, fy, cx, cy]`` as an :class:`Intrinsics`, (4,) or (T, 4). In float32, with
    ``(X, Y, Z) = w2c @ [x, y, z, 1]``:

    * ``u = fx * (X / max(Z, eps)) + cx``, ``v`` likewise, pixel ``(trunc(u), trunc(v))``;
    * in the frustum: ``Z > 0`` (and ``near <= Z <= far`` when given), pixel in the image;
    * front-most: ``Z <= min Z over the pixel + 1e-6``, so exact ties all count.

    One z-buffer spans all points; cameras are processed ``camera_chunk`` at a time.
    """
    pts = torch.as_tensor(np.asarray(points)[:, :3], dtype=torch.float32)
    w2c = torch.as_tensor(np.asarray(w2c), dtype=torch.float32)
    if pts.ndim != 2 or w2c.ndim != 3 or w2c.shape[1:] not in ((4, 4), (3, 4)):
        raise InputError(f"need points (N, 3+) and w2c (T, 4, 4), got {tuple(pts.shape)} and {tuple(w2c.shape)}")
    if height <= 0 or width <= 0:
        raise InputError(f"invalid image size {width}x{height}")
    if w2c.shape[1] == 3:
        w2c = torch.cat([w2c, torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(len(w2c), 1, 4)], dim=1)
    num_cams, n = w2c.shape[0], pts.shape[0]
    k = _pixel_intrinsics(intrinsics, num_cams)
    out = torch.zeros((num_cams, n), dtype=torch.bool)
    if n == 0 or num_cams == 0:
        return out.numpy()
    pts_h = torch.cat([pts, torch.ones(n, 1)], dim=1).t()  # (4, N): the release's layout, hence its bits
    w2c = w2c.contiguous()
    eps = torch.finfo(torch.float32).eps
    hw = height * width
    with torch.no_grad():
        for c0 in range(0, num_cams, camera_chunk):
            cam = w2c[c0 : c0 + camera_chunk] @ pts_h  # (t, 4, N)
            t, kc = len(cam), k[c0 : c0 + camera_chunk]
            x, y, z = cam[:, 0], cam[:, 1], cam[:, 2]
            denom = z.clamp(min=eps)
            u = x.div_(denom).mul_(kc[:, 0:1]).add_(kc[:, 2:3])  # fx * (X / Z) + cx
            v = y.div_(denom).mul_(kc[:, 1:2]).add_(kc[:, 3:4])
            valid = z > 0
            if near is not None:
                valid &= z >= near
            if far is not None:
                valid &= z <= far
            # trunc(u) in [0, W) <=> -1 < u < W; testing the float avoids int overflow
            valid &= (u > -1) & (u < width) & (v > -1) & (v < height)
            # z-buffer cell per point (trunc toward zero); points outside go to a spare cell
            cell = v.clamp_(-1, height).long().mul_(width).add_(u.clamp_(-1, width).long())
            cell.add_(torch.arange(t)[:, None] * hw).masked_fill_(~valid, t * hw)
            zbuf = torch.full((t * hw + 1,), BACKGROUND_DEPTH, dtype=torch.float32)
            zbuf.scatter_reduce_(0, cell.view(-1), z.reshape(-1), reduce="amin", include_self=True)
            out[c0 : c0 + t] = valid & (z <= zbuf[cell] + DEPTH_TOLERANCE)
    return out.numpy()


# -- matching ---------------------------------------------------------------------------------
def shared_point_counts(target_masks: np.ndarray, history_masks: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """int64 (S, M): points front-most in both target ``s`` and history camera ``m``."""
    b, a = np.asarray(target_masks, dtype=bool), np.asarray(history_masks, dtype=bool)
    if b.ndim != 2 or a.ndim != 2 or b.shape[1] != a.shape[1]:
        raise InputError(f"masks must be (S, N) and (M, N), got {b.shape} and {a.shape}")
    counts = torch.zeros((len(b), len(a)), dtype=torch.int64)
    for s in range(0, b.shape[1], chunk):  # float32 sums are exact below 2**24 per chunk
        bt = torch.from_numpy(np.ascontiguousarray(b[:, s : s + chunk])).float()
        at = torch.from_numpy(np.ascontiguousarray(a[:, s : s + chunk])).float()
        counts += (bt @ at.t()).long()
    return counts.numpy()


def match_masks_release(
    history_masks: np.ndarray, target_masks: np.ndarray, k: int = 7, bf16_costs: bool = True
) -> list[tuple[int, int]]:
    """The release's matching: up to ``k`` ``(history_index, shared_point_count)`` pairs.

    Hungarian assignment (``scipy.optimize.linear_sum_assignment``) of targets to distinct
    history cameras maximising the shared front-most point counts, those counts first rounded
    to bfloat16 (round to nearest even) as the release's ``find_mask_matches(bf16=True)``
    matmul does. Pairs come in target order, trimmed to ``k``; no threshold, so a pair may
    share nothing. The count reported is exact. With more targets than history cameras
    (where the release raises ``ValueError``) only the assigned targets give a pair.
    """
    if k <= 0 or len(history_masks) == 0 or len(target_masks) == 0:
        return []
    return _match_counts(shared_point_counts(target_masks, history_masks), k, bf16_costs)


def _match_counts(counts: np.ndarray, k: int, bf16_costs: bool) -> list[tuple[int, int]]:
    score = torch.from_numpy(counts.astype(np.float32))
    if bf16_costs:
        score = score.bfloat16().float()
    rows, cols = linear_sum_assignment((-score).numpy())  # rows ascending: the release's order
    return [(int(c), int(counts[r, c])) for r, c in zip(rows, cols)][:k]


def select_references_release(
    points,
    history_c2w,
    target_c2w,
    intrinsics,
    height: int,
    width: int,
    k: int = 7,
    point_batch: int = RELEASE_POINT_BATCH,
    bf16_costs: bool = True,
) -> list[tuple[int, int]]:
    """The release's reference choice: up to ``k`` ``(history_index, shared_point_count)``.

    ``points``: float (N, >= 3) memory point cloud (world); ``history_c2w`` (M, 4, 4) and
    ``target_c2w`` (S, 4, 4) camera-to-world poses (OpenCV axes) of the candidates and the
    targets (pick them with :func:`release_candidate_indices` and
    :func:`release_target_indices`); ``intrinsics`` pixel ``[fx, fy, cx, cy]`` shared by all.
    Front-most masks (:func:`frontmost_point_masks`) are computed per batch of ``point_batch``
    points, each with its own z-buffer, as the release does; then :func:`match_masks_release`.
    """
    if k <= 0 or len(history_c2w) == 0 or len(target_c2w) == 0 or len(points) == 0:
        return []
    hist_w2c = np.linalg.inv(np.asarray(history_c2w, dtype=np.float64)).astype(np.float32)
    tgt_w2c = np.linalg.inv(np.asarray(target_c2w, dtype=np.float64)).astype(np.float32)
    counts = np.zeros((len(tgt_w2c), len(hist_w2c)), dtype=np.int64)
    for s in range(0, len(points), point_batch):
        batch = np.asarray(points[s : s + point_batch])
        hist = frontmost_point_masks(batch, hist_w2c, intrinsics, height, width)
        tgt = frontmost_point_masks(batch, tgt_w2c, intrinsics, height, width)
        counts += shared_point_counts(tgt, hist)
    return _match_counts(counts, k, bf16_costs)
