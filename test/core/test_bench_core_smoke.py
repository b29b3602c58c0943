"""The benchmarks' load rule (bench/_load.py) and the memory-growth benchmark still run."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from bench._load import LoadReport, LoadWatch  # noqa: E402


def _report(load1, others, cores=2):
    return LoadReport(cores=cores, loadavg_before=[load1, 0.0, 0.0], others_cores_before=others, loadavg_after=None,
                      busy_cores_during=None, own_cores_during=None, others_cores_during=None, seconds=1.0)


def test_busy_rule_and_verdicts():
    """Busy = load average above 0.5 per core, or other processes above half the cores, before
    the start; a met target on a busy machine is never a PASS."""
    quiet, loaded, hogged = _report(0.9, 0.3), _report(1.1, 0.2), _report(0.2, 1.2)
    assert not quiet.busy and loaded.busy and hogged.busy
    assert quiet.verdict(True) == "PASS" and quiet.verdict(False) == "MISS"
    assert loaded.verdict(True) == "NOT A PASS: machine busy (load 1.10)"
    assert loaded.verdict(False).startswith("MISS (machine busy")
    assert _report(3.9, 0.0, cores=8).verdict(True) == "PASS"  # the rule is per core
    unknown = LoadReport(2, None, None, None, None, None, None, 1.0)
    assert unknown.busy and unknown.verdict(True).startswith("NOT A PASS")


def test_load_watch_measures_this_machine():
    """On this machine (Linux /proc): numbers for before and during, this process's own CPU
    counted as the benchmark's, not as other processes'."""
    watch = LoadWatch(sample_s=0.5)
    cpu0, x = time.process_time(), 0
    while time.process_time() - cpu0 < 0.5:  # 0.5 s of this process's CPU, on any machine
        for i in range(100_000):
            x += i * i
    used = time.process_time() - cpu0
    r = watch.end()
    assert r.cores == os.cpu_count() and len(r.loadavg_before) == 3
    assert r.others_cores_before is not None and 0 <= r.others_cores_before <= r.cores
    # CPU seconds counted as this benchmark's (jiffies: 10 ms steps; seconds rounded to 0.1 s)
    assert r.own_cores_during * r.seconds >= 0.5 * used
    # everything busy includes this benchmark: never less than its own, never more than the cores
    assert r.own_cores_during <= r.busy_cores_during <= r.cores
    assert r.others_cores_during >= 0
    assert "load before: loadavg" in r.line() and r.as_dict()["busy"] == r.busy


def test_memory_growth_benchmark_smoke(tmp_path):
    """bench/bench_memory_growth.py fuses frames that add voxels and reports per-bucket median and
    p99 with a load-aware verdict (small: 320x240 frames up to 130k voxels)."""
    out = tmp_path / "growth.json"
    cmd = [sys.executable, str(REPO / "bench" / "bench_memory_growth.py"), "--max-voxels", "130000",
           "--width", "320", "--height", "240", "--step", "1.0", "--voxel", "0.02", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=str(REPO))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(out.read_text())
    assert data["voxels"] >= 130_000 and data["frames"] == len(data["rows"])
    assert all(r["new"] > 0 for r in data["rows"])  # every frame added geometry
    sizes = [r["voxels_before"] for r in data["rows"]]
    assert sizes == sorted(sizes)
    b = data["buckets"][0]
    assert b["from"] == 100_000 and b["frames"] >= 1
    assert b["cpu_ms"]["median"] > 0 and b["cpu_ms"]["p99"] >= b["cpu_ms"]["median"]
    assert data["result"] in ("PASS", "MISS") or data["result"].startswith(("NOT A PASS", "MISS ("))
    assert "load before" in proc.stdout and data["load"]["cores"] == os.cpu_count()
