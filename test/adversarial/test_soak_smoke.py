"""bench/bench_soak.py --short: 30 s of the soak (memory and frame-bank caps reached, CSV rows)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_short_soak_reaches_both_caps_and_logs_rows(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "bench" / "bench_soak.py"), "--short", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=240, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = list(csv.DictReader((tmp_path / "soak.csv").open()))
    assert len(rows) >= 10 and summary["rows"] == len(rows)
    assert summary["caps_reached"] and summary["frames_with_eviction"] > 0
    # the caps hold: never more voxels or bank frames than allowed, in any row
    assert max(int(r["voxels"]) for r in rows) <= summary["memory_cap_voxels"]
    assert max(int(r["bank_frames"]) for r in rows) <= summary["bank_cap_frames"]
    assert len({int(r["room"]) for r in rows}) >= 3, "the camera moved through rooms the memory did not hold"
    assert all(float(r["image_rate_hz"]) > 0 for r in rows)
