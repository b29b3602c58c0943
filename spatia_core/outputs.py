"""Output folders that appear whole or not at all.

A command writes into a hidden sibling of its output folder; only when it finishes are the files
moved into place, so a failed or interrupted run leaves nothing behind (and never deletes a
folder that was there before it).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import FileFormatError


@contextmanager
def staged_folder(out: str | os.PathLike) -> Iterator[Path]:
    """Yield a new hidden folder beside ``out``; on success its files end up in ``out``.

    If ``out`` does not exist the staging folder is renamed to it (one atomic rename). If it is an
    existing folder, the new entries replace entries of the same name and the others stay; on
    Linux that is one atomic exchange of the two folders as well (see :func:`_exchange_into`), so
    a killed run never leaves a mix of old and new outputs. Staging folders of killed runs are
    removed. On any exception (Ctrl-C included) the staging folder and
    the parent folders this call created are removed and the exception propagates.

    Raises:
        FileFormatError: ``out`` is an existing file, or its parent cannot be created.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileFormatError(f"output {out} exists and is not a folder")
    parent = out.absolute().parent
    created = []  # parents this call makes, deepest first
    p = parent
    while not p.exists():
        created.append(p)
        p = p.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = parent / f".{out.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        staging.mkdir()  # plain mkdir: the umask's permissions, like the folder it becomes
    except OSError as exc:
        _remove_empty(created)
        raise FileFormatError(f"cannot create output folder {out}: {exc}") from None
    _sweep_stale_staging(parent, out.name)
    try:
        yield staging
        if out.is_dir():
            if _exchange_into(staging, out):
                shutil.rmtree(staging, ignore_errors=True)  # now the old folder
            else:
                for item in staging.iterdir():
                    os.replace(item, out / item.name)
                staging.rmdir()
        else:
            os.replace(staging, out)
        fsync_dir(parent)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise


_MAX_KEPT = 1000  # more entries of an existing folder to carry over than this: move the new ones in instead


def _exchange_into(staging: Path, out: Path) -> bool:
    """Make ``out`` hold the new entries plus its other old ones in one atomic step.

    The old entries that staging does not replace are hard-linked into staging (plain files and
    links only), then the two folders swap names with ``renameat2(RENAME_EXCHANGE)``: a kill at
    any moment leaves ``out`` all old or all new. Returns False, having changed nothing in
    ``out``, where that is not possible (not Linux, a file system without it, sub-folders to carry
    over, ``out`` holds the working directory); the caller then moves the entries one by one.
    """
    import ctypes

    try:
        real = out.resolve()
        if Path.cwd().resolve().is_relative_to(real):
            return False
        keep = [e for e in os.scandir(out) if not (staging / e.name).exists() and not (staging / e.name).is_symlink()]
        if len(keep) > _MAX_KEPT or any(e.is_dir(follow_symlinks=False) for e in keep):
            return False
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = getattr(libc, "renameat2", None)
        if renameat2 is None:
            return False
        for e in keep:
            if e.is_symlink():
                os.symlink(os.readlink(e.path), staging / e.name)
            else:
                os.link(e.path, staging / e.name)
        shutil.copymode(out, staging)
    except OSError:
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(staging), at_fdcwd, os.fsencode(out), rename_exchange) != 0:
        for e in keep:  # leave staging as the caller made it
            (staging / e.name).unlink(missing_ok=True)
        return False
    return True


def _sweep_stale_staging(parent: Path, name: str) -> None:
    """Remove staging folders of ``name`` left by killed runs (``.NAME.PID.HEX.tmp``, PID gone)."""
    pattern = re.compile(rf"\.{re.escape(name)}\.(\d+)\.[0-9a-f]{{8}}\.tmp$")
    try:
        entries = list(os.scandir(parent))
    except OSError:
        return
    for entry in entries:
        m = pattern.match(entry.name)
        if m and not _alive(int(m.group(1))) and entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


def temp_name(path: str | os.PathLike, suffix: str = ".tmp") -> Path:
    """A hidden temporary sibling of ``path``, unique per process and call:
    ``.NAME.PID.HEX.tmp`` (``suffix`` may add an extension, e.g. ``.tmp.ply``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale_temps(path: str | os.PathLike, suffix: str = ".tmp") -> list[Path]:
    """Remove the temporaries :func:`temp_name` made for ``path`` in processes that are gone.

    Only names of that exact pattern are touched (a killed save leaves its temp file behind;
    a live writer's is left alone). Returns the paths removed.
    """
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)(?:\.[0-9a-f]{{8}})?{re.escape(suffix)}$")
    removed = []
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.match(entry.name)
        if m and not _alive(int(m.group(1))) and entry.is_file(follow_symlinks=False):
            try:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
            except OSError:
                pass
    return removed


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (best effort where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a fsynced temporary file, check its size, rename it.

    A crash leaves the old file or the new one, never a mix; a short write (a full disk) raises
    :class:`FileFormatError` and leaves the old file in place.
    """
    path = Path(path)
    sweep_stale_temps(path)
    tmp = temp_name(path)
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if tmp.stat().st_size != len(data):
            raise OSError(f"short write ({tmp.stat().st_size} of {len(data)} bytes)")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except OSError as exc:
        raise FileFormatError(f"could not write {path}: {exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
    return path


__all__ = ["atomic_write_bytes", "fsync_dir", "staged_folder", "sweep_stale_temps", "temp_name"]
