"""Posed-photo captures: one reader per format, detected from the path, all returning :class:`Capture`.

========================  =====================================================================
format                    detected by
========================  =====================================================================
``transforms_json``       ``transforms.json`` (the file, or a folder holding it): instant-ngp,
                          nerfstudio
``llff``                  ``poses_bounds.npy`` (file or folder) with ``images/``
``re10k``                 ``frames/`` (or ``images/``, ``rgb/``, ``color/``) and an RE10K camera
                          file (``cameras.txt`` or the one ``.txt`` in that format)
``colmap``                ``cameras.bin``/``cameras.txt`` in ``sparse/0``, ``sparse`` or the folder
``strecha``               ``gt_dense_cameras/*.camera`` (or ``images/*.camera``)
``sfm``                   any other folder of at least 2 photos (itself or ``images/``): posed
                          by structure from motion (:mod:`.sfm`, pycolmap), up to scale
========================  =====================================================================
"""

from __future__ import annotations

from pathlib import Path

from ..errors import FileFormatError
from .base import Capture, PosedImage, load_image, parse_holdout, scale_intrinsics

FORMATS = ("transforms_json", "llff", "colmap", "strecha", "re10k", "sfm")


def detect_format(path: str | Path) -> str | None:
    """The capture format of ``path`` (see the module table), or None when it is none of them."""
    from .colmap import find_model
    from .re10k import is_re10k_clip
    from .sfm import is_photo_folder
    from .strecha import is_strecha

    path = Path(path)
    if path.is_file():
        return {"transforms.json": "transforms_json", "poses_bounds.npy": "llff"}.get(path.name)
    if not path.is_dir():
        return None
    if (path / "transforms.json").is_file():
        return "transforms_json"
    if (path / "poses_bounds.npy").is_file():
        return "llff"
    if is_re10k_clip(path):  # before COLMAP: both may hold a cameras.txt
        return "re10k"
    if find_model(path) is not None:
        return "colmap"
    if is_strecha(path):
        return "strecha"
    if is_photo_folder(path):
        return "sfm"
    return None


def read_capture(path: str | Path, fmt: str = "auto") -> Capture:
    """Read the capture at ``path`` in format ``fmt`` (``auto``: :func:`detect_format`)."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt is None:
        raise FileFormatError(f"{path} is not a posed-photo capture (transforms.json, poses_bounds.npy, a COLMAP "
                              "model, Strecha .camera files, an RE10K clip or a folder of at least 2 photos)")
    if fmt == "transforms_json":
        from .transforms_json import read_transforms_json

        return read_transforms_json(path)
    if fmt == "llff":
        from .llff import read_llff

        return read_llff(path)
    if fmt == "colmap":
        from .colmap import read_colmap

        return read_colmap(path)
    if fmt == "strecha":
        from .strecha import read_strecha

        return read_strecha(path)
    if fmt == "re10k":
        from .re10k import read_re10k_clip

        return read_re10k_clip(path)
    if fmt == "sfm":
        from .sfm import read_photos

        return read_photos(path)
    raise FileFormatError(f"unknown capture format {fmt!r}; choose one of {', '.join(FORMATS)}")


__all__ = ["FORMATS", "Capture", "PosedImage", "detect_format", "load_image", "parse_holdout", "read_capture",
           "scale_intrinsics"]
