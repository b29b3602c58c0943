"""Output folders that appear whole or not at all.

A command writes into a hidden sibling of its output folder; only when it finishes are the files
moved into place, so a failed or interrupted run leaves nothing behind (and never deletes a
folder that was there before it).
"""

from __future__ import annotations

import os
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
    existing folder, the new entries are moved into it one by one, replacing entries of the same
    name and leaving the others alone. On any exception (Ctrl-C included) the staging folder and
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
    try:
        yield staging
        if out.is_dir():
            for item in staging.iterdir():
                os.replace(item, out / item.name)
            staging.rmdir()
        else:
            os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        _remove_empty(created)
        raise


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            break


__all__ = ["staged_folder"]
