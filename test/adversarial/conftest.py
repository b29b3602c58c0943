"""Shared pieces of the adversarial suite: a nearly full disk and a crash-point runner.

Full disk: a 1 MiB tmpfs mounted for the test when the process may mount (root with
CAP_SYS_ADMIN, as in our CI container); otherwise the write runs in a subprocess whose
RLIMIT_FSIZE stops any file at the same size (writes past it fail with EFBIG, SIGXFSZ ignored),
which needs no privileges and also stops writes made by C libraries.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

DISK_BYTES = 1 << 20


def _try_mount_tmpfs(where: Path, size: int) -> bool:
    if os.geteuid() != 0:
        return False
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0777", "tmpfs", str(where)],
                       capture_output=True)
    return r.returncode == 0


class SmallDisk:
    """A folder on which files cannot grow past about ``DISK_BYTES`` in total (see module doc)."""

    def __init__(self, path: Path, tmpfs: bool):
        self.path, self.tmpfs = path, tmpfs
        self.kind = "tmpfs of 1 MiB" if tmpfs else "RLIMIT_FSIZE of 1 MiB in a subprocess"

    def fill(self, leave: int) -> None:
        """Leave only about ``leave`` bytes free (tmpfs: a filler file; rlimit: nothing to do)."""
        if not self.tmpfs:
            return
        st = os.statvfs(self.path)
        free = st.f_bavail * st.f_frsize
        with open(self.path / "filler.bin", "wb") as fh:
            fh.write(b"\0" * max(0, free - leave))

    def run(self, code: str) -> dict:
        """Run ``code`` (Python; it sets ``result``, a JSON-able value) in a subprocess with the
        limit applied there (rlimit) or not needed (tmpfs); returns ``result``."""
        out = self.path.parent / f"result-{uuid.uuid4().hex}.json"
        script = "import json\nresult = None\n" + textwrap.dedent(code) + f"\nopen({str(out)!r}, 'w').write(json.dumps(result))\n"

        def limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (DISK_BYTES, DISK_BYTES))

        proc = subprocess.run([sys.executable, "-c", script], cwd=self.path, capture_output=True, text=True,
                              timeout=240, preexec_fn=None if self.tmpfs else limit)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text())


@pytest.fixture
def small_disk(tmp_path):
    where = tmp_path / "disk"
    tmpfs = _try_mount_tmpfs(where, DISK_BYTES)
    if not tmpfs:
        where.mkdir(exist_ok=True)
    try:
        yield SmallDisk(where, tmpfs)
    finally:
        if tmpfs:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)
