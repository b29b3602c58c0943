"""Evaluation metrics of the Spatia paper: PSNR, SSIM, LPIPS, Match Accuracy, camera control.

See :mod:`spatia_core.evaluation.metrics` and :mod:`spatia_core.evaluation.matching`. LPIPS needs a weights file created once by
``scripts/fetch_eval_weights.py``; LightGlue matching needs ``requirements-eval.txt``.
"""

from .matching import camera_control_error, lightglue_available, match_accuracy
from .metrics import LPIPS, coverage, lpips, psnr, ssim

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
