"""Padding frames: borders of a photo that hold no image, only one constant colour.

Colour images registered to a depth camera, and some exported photos, come inside a frame of one
flat colour (the slambook2 dining set: 5-7 px of pure white on every side, then one pixel blended
with the image). Such pixels show nothing of the scene: fused, completed or warped they draw white
lines into other views, and scored they favour whichever picture has the same frame (the nearest
photo has it at exactly the same place). :func:`content_box` finds the rectangle inside the frame;
views keep it (:attr:`~spatia_core.captures.views.View.content_box`), depth outside it is dropped
before fusion, and held-out views are scored inside it.
"""

from __future__ import annotations

import numpy as np

Box = tuple[int, int, int, int]  # (top, bottom, left, right): rows top..bottom-1, columns left..right-1


def _run(lines: np.ndarray) -> int:
    """How many leading entries of the boolean ``lines`` are True."""
    off = np.flatnonzero(~lines)
    return int(off[0]) if off.size else int(lines.size)


def content_box(rgb: np.ndarray, margin: int = 2, min_content: float = 0.5) -> Box | None:
    """The rows and columns of ``rgb`` (H, W, 3) inside a constant-colour frame, or None.

    A frame counts only when all four sides start with at least one row / column of exactly the
    corner colour (a photo whose top row is overexposed sky has no frame). ``margin`` more pixels
    are dropped on each side for the edge blended into the frame. None too when the box would
    keep less than ``min_content`` of the image (a flat image is not a frame around nothing)."""
    img = np.asarray(rgb)
    h, w = img.shape[:2]
    if img.ndim != 3 or h < 4 or w < 4:
        return None
    c = img[0, 0]
    if not all((img[y, x] == c).all() for y, x in ((0, w - 1), (h - 1, 0), (h - 1, w - 1))):
        return None
    same = (img == c).all(axis=2)
    top, bottom = _run(same.all(axis=1)), _run(same.all(axis=1)[::-1])
    left, right = _run(same.all(axis=0)), _run(same.all(axis=0)[::-1])
    if min(top, bottom, left, right) < 1:
        return None
    box = (top + margin, h - bottom - margin, left + margin, w - right - margin)
    if box[1] <= box[0] or box[3] <= box[2] or (box[1] - box[0]) * (box[3] - box[2]) < min_content * h * w:
        return None
    return box


def box_mask(shape: tuple[int, int], box: Box | None) -> np.ndarray:
    """Boolean (H, W): True inside ``box`` (everywhere when ``box`` is None)."""
    if box is None:
        return np.ones(shape[:2], bool)
    m = np.zeros(shape[:2], bool)
    m[box[0]:box[1], box[2]:box[3]] = True
    return m


def crop(image: np.ndarray, box: Box | None) -> np.ndarray:
    """``image`` (H, W, ...) cut to ``box`` (unchanged when None), contiguous."""
    return image if box is None else np.ascontiguousarray(image[box[0]:box[1], box[2]:box[3]])


__all__ = ["Box", "box_mask", "content_box", "crop"]
