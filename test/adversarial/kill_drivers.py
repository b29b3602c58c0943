"""Kill drivers for the adversarial tests: SIGKILL a write at its crash points or at random moments,
in a fresh interpreter, and collect what the check found (imported by the tests as a plain module;
``conftest`` would clash with the other test folders' conftest modules)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def run_crash_points(scenario: str, setup: str, action: str, check: str, calls: str = "os.replace",
                     max_points: int = 40) -> list[dict]:
    """Crash ``action`` at every call of ``calls`` (before the call), one forked child per point.

    One subprocess imports the project once, then for crash point k = 1, 2, ... it runs ``setup``
    (Python, in a fresh folder ``d``), forks a child that runs ``action`` with ``calls`` patched
    to ``os._exit(137)`` on its k-th call, and after the child ends runs ``check`` (it sets
    ``outcome``, a string). Stops at the first k where the action ran to completion. Returns
    ``[{"point": k, "crashed": bool, "outcome": ...}, ...]``.
    """
    module, _, name = calls.rpartition(".")

    def block(code: str, depth: int) -> str:
        return textwrap.indent(textwrap.dedent(code).strip("\n"), " " * depth) + "\n"

    driver = (
        "import importlib, json, os, shutil, sys, tempfile\n"
        "from pathlib import Path\n"
        "import numpy as np\n"
        "import torch\n"
        "torch.set_num_threads(1)\n"
        "from spatia_core.cli import main\n"
        "from spatia_core.memory import SpatialMemory, save_ply, load_ply, read_ply_points\n"
        "import spatia_core.memory.edit_cli, spatia_core.memory.ply, spatia_core.outputs, spatia_core.trajectories\n"
        f"root = Path(tempfile.mkdtemp(prefix='crash-{scenario}-'))\n"
        "results = []\n"
        f"for k in range(1, {max_points} + 1):\n"
        "    d = root / str(k)\n"
        "    d.mkdir()\n"
        + block(setup, 4) +
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        f"        mod = importlib.import_module({module!r})\n"
        f"        real, seen = getattr(mod, {name!r}), [0]\n"
        "        def patched(*a, **kw):\n"
        "            seen[0] += 1\n"
        "            if seen[0] == k:\n"
        "                os._exit(137)\n"
        "            return real(*a, **kw)\n"
        f"        setattr(mod, {name!r}, patched)\n"
        "        sys.stdout = open(os.devnull, 'w')\n"
        "        try:\n"
        + block(action, 12) +
        "        except BaseException:\n"
        "            os._exit(3)\n"
        "        os._exit(0)\n"
        "    _, status = os.waitpid(pid, 0)\n"
        "    code = os.waitstatus_to_exitcode(status)\n"
        "    outcome = None\n"
        + block(check, 4) +
        "    results.append({'point': k, 'crashed': code == 137, 'exit': code, 'outcome': outcome})\n"
        "    if code != 137:\n"
        "        break\n"
        "shutil.rmtree(root, ignore_errors=True)\n"
        "print('RESULTS' + json.dumps(results))\n"
    )
    return _run_driver(driver)


def run_random_kills(scenario: str, setup: str, body: str, check: str, trials: int = 20, max_delay: float = 0.05,
                     imports: str = "") -> list:
    """SIGKILL a child that repeats ``body`` forever, at a random moment, ``trials`` times.

    One subprocess runs ``imports`` once; per trial it runs ``setup`` in a fresh folder ``d``
    (``i`` is the trial number), forks a child that signals it is ready and then loops on
    ``body`` (``n`` counts the passes), kills it after a random delay in [0, ``max_delay``] s
    (the delay is the stimulus, not a wait for a condition) and runs ``check``, which sets
    ``outcome``. Returns the outcomes.
    """

    def block(code: str, depth: int) -> str:
        return textwrap.indent(textwrap.dedent(code).strip("\n"), " " * depth) + "\n"

    driver = (
        "import json, os, random, shutil, signal, sys, tempfile, time\n"
        "from pathlib import Path\n"
        + block(imports, 0) +
        f"root = Path(tempfile.mkdtemp(prefix='kill-{scenario}-'))\n"
        "rng = random.Random(13)\n"
        "results = []\n"
        f"for i in range({trials}):\n"
        "    d = root / str(i)\n"
        "    d.mkdir()\n"
        + block(setup, 4) +
        "    r, w = os.pipe()\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        os.close(r)\n"
        "        sys.stdout = open(os.devnull, 'w')\n"
        "        n = 0\n"
        "        os.write(w, b'x')\n"
        "        try:\n"
        "            while True:\n"
        + block(body, 16) +
        "                n += 1\n"
        "        finally:\n"
        "            os._exit(3)\n"
        "    os.close(w)\n"
        "    assert os.read(r, 1) == b'x'\n"
        "    os.close(r)\n"
        f"    time.sleep(rng.uniform(0, {max_delay}))\n"
        "    os.kill(pid, signal.SIGKILL)\n"
        "    _, status = os.waitpid(pid, 0)\n"
        "    outcome = None\n"
        + block(check, 4) +
        "    results.append(outcome)\n"
        "shutil.rmtree(root, ignore_errors=True)\n"
        "print('RESULTS' + json.dumps(results))\n"
    )
    return _run_driver(driver)


def _run_driver(driver: str) -> list:
    """Run a kill-driver script in a fresh interpreter and return the results it prints."""
    # one thread: a forked child must not inherit a busy OpenMP pool (it would wait on it forever)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS"))
    return json.loads(line[len("RESULTS"):])
