"""Confining a requested path to configured folders (symlinks resolved)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable


def resolve_inside(path: str | os.PathLike, roots: Iterable[str | os.PathLike],
                   base: str | os.PathLike | None = None) -> Path | None:
    """``path`` (a relative one taken from ``base``) with ``~`` and symlinks resolved, if it is one of
    ``roots`` or lies below one (the roots resolved the same way); None otherwise, whether or not
    the target exists, so a caller's error never tells what exists outside."""
    try:
        full = Path(base or ".").joinpath(Path(path).expanduser()).resolve()
        for root in roots:
            if root and full.is_relative_to(Path(root).expanduser().resolve()):
                return full
    except (OSError, ValueError, RuntimeError):
        return None
    return None
