"""Masked SSIM and LPIPS (held-out views are compared on the pixels the memory covers too)."""

import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)

from spatia_core.errors import InputError
from spatia_core.evaluation.metrics import LPIPS, ssim


def _pair():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)
    b = a.copy()
    b[:, 40:] = rng.integers(0, 255, (64, 40, 3), dtype=np.uint8)  # right half differs
    return a, b


def test_masked_ssim():
    a, b = _pair()
    full = np.ones(a.shape[:2], bool)
    assert ssim(a, b, mask=full) == pytest.approx(ssim(a, b), abs=1e-12)
    left = np.zeros(a.shape[:2], bool)
    left[:, :30] = True
    assert ssim(a, b, mask=left) == pytest.approx(1.0, abs=1e-9)  # windows of the left part see equal pixels
    with pytest.raises(InputError, match="no pixel"):
        ssim(a, b, mask=np.zeros(a.shape[:2], bool))


def test_masked_lpips():
    model = LPIPS()
    if not model.available():
        _prereq.missing("LPIPS weights not fetched (scripts/fetch_eval_weights.py)")
    a, b = _pair()
    full = np.ones(a.shape[:2], bool)
    assert model(a, b, mask=full) == pytest.approx(model(a, b), rel=0.05)
    left = np.zeros(a.shape[:2], bool)
    left[:, :20] = True
    right = ~left
    assert model(a, b, mask=left) < 0.5 * model(a, b, mask=right)
    assert model(a, a, mask=left) == pytest.approx(0.0, abs=1e-6)
