"""Confining a requested path to configured folders (symlinks resolved), and opening it without a
check-then-open race.

:func:`resolve_inside` answers whether a path, with ``~`` and symlinks resolved, lies inside one
of the allowed folders. Checking and then opening by name leaves a window: between the check and
the open the file can be swapped for a symlink to somewhere outside, which the open follows.
:func:`open_inside` closes it (Linux): it resolves and checks, then opens the resolved path one
component at a time from ``/`` with ``openat`` (``dir_fd``) and ``O_NOFOLLOW`` at every component,
so a symlink appearing anywhere on the path after the check makes the open fail (``ELOOP``) instead
of being followed; a FIFO or device swapped in is refused too (non-blocking open, then ``fstat``
must show a regular file or a folder). The loaders then read the *opened* object, never the name
again: they are handed a path that ends in the same file name but is a link, in a private 0700
temporary folder, to ``/proc/<pid>/fd/<fd>``, which the kernel resolves to the opened inode itself
(the loaders, Open3D included, open by name and look at the suffix). Elsewhere (no ``/proc``) the
opened descriptor's ``(st_dev, st_ino)`` is compared with the resolved path's ``os.stat`` and the
resolved path is handed over, which narrows the window but cannot close it.

Not covered: files *inside* an opened folder world (a capture or RGB-D folder) are looked up below
the pinned folder by the loaders, without these checks; a hard link inside an allowed folder is a
file of that folder.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from .errors import FileFormatError, SpatiaError


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


def _open_nofollow(real: Path) -> int:
    """A read-only descriptor of the absolute, already resolved ``real``, opened component by
    component from ``/`` without following any symlink (OSError ``ELOOP`` if one is met)."""
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        parts = real.parts[1:]
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_NONBLOCK if last else os.O_DIRECTORY)
            nxt = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nxt
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextmanager
def open_inside(path: str | os.PathLike, roots: Iterable[str | os.PathLike],
                base: str | os.PathLike | None = None) -> Iterator[Path | None]:
    """Open ``path`` if it lies inside ``roots`` (as :func:`resolve_inside`) and yield a path that
    reads exactly the opened file or folder for as long as the context lasts (see the module doc).

    Yields None where :func:`resolve_inside` gives None and where the path changed into a symlink
    (or a non-regular file) after the check, so a caller can give one uniform refusal. Raises
    :class:`FileFormatError` for a target inside the roots that does not exist or cannot be read.
    """
    real = resolve_inside(path, roots, base)
    if real is None:
        yield None
        return
    try:
        fd = _open_nofollow(real)
    except FileNotFoundError:
        raise FileFormatError(f"no such file: {real}") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):  # swapped for a symlink meanwhile
            yield None
            return
        raise FileFormatError(f"cannot open {real}: {exc.strerror or exc}") from None
    private, proc_fd = None, Path(f"/proc/{os.getpid()}/fd")  # per call: the pid changes in a fork
    try:
        st = os.fstat(fd)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
            yield None
            return
        if (proc_fd / str(fd)).exists():
            private = Path(tempfile.mkdtemp(prefix="spatia_open_"))  # 0700: no one else can swap the link
            pinned = private / real.name
            os.symlink(proc_fd / str(fd), pinned)
            try:
                yield pinned
            except SpatiaError as exc:  # errors name the file asked for, not the private link
                if str(pinned) not in str(exc):
                    raise
                raise type(exc)(str(exc).replace(str(pinned), str(real))) from None
        else:  # no /proc: the descriptor must still be what the name shows (narrows, cannot close, the race)
            now = os.stat(real, follow_symlinks=False)
            yield real if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) else None
    finally:
        os.close(fd)
        if private is not None:
            shutil.rmtree(private, ignore_errors=True)


__all__ = ["resolve_inside", "open_inside"]
