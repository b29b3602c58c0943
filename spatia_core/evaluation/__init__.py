"""Evaluation metrics of the Spatia paper: PSNR, SSIM, LPIPS, Match Accuracy, camera control.

See :mod:`spatia_core.evaluation.metrics`. LPIPS needs a weights file created once by
``scripts/fetch_eval_weights.py``; LightGlue matching needs ``requirements-eval.txt``.
"""

from .metrics import (
    LPIPS,
    camera_control_error,
    coverage,
    lightglue_available,
    lpips,
    match_accuracy,
    psnr,
    ssim,
)

__all__ = [
    "LPIPS",
    "camera_control_error",
    "coverage",
    "lightglue_available",
    "lpips",
    "match_accuracy",
    "psnr",
    "ssim",
]
