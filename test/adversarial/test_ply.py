"""Map files (issue 13 rows 2, 5, 6, 15): verified atomic saves, loads that fail leave the memory
as it was, malformed PLY refused, stale temporaries swept, empty maps."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from spatia_core.errors import FileFormatError, SpatiaError
from spatia_core.memory import SpatialMemory, load_ply, read_ply_points, save_ply


def _memory(n: int, seed: int = 0) -> SpatialMemory:
    rng = np.random.default_rng(seed)
    mem = SpatialMemory(voxel_size=0.01)
    mem.insert_points((rng.random((n, 3)) * 4).astype(np.float32), rng.integers(0, 256, (n, 3)).astype(np.uint8))
    return mem


def _ascii_ply(rows: list[str], n: int | None = None) -> str:
    header = ["ply", "format ascii 1.0", f"element vertex {len(rows) if n is None else n}", "property float x",
              "property float y", "property float z", "property uchar red", "property uchar green",
              "property uchar blue", "end_header"]
    return "\n".join(header + rows) + "\n"


# -- row 2: a full disk never replaces the good map by a truncated one ------------------------------
FULL_DISK_SAVE = """
import os
import numpy as np
from spatia_core.errors import FileFormatError
from spatia_core.memory import SpatialMemory, save_ply, read_ply_points

def memory(n):
    rng = np.random.default_rng(n)
    m = SpatialMemory(voxel_size=0.01)
    m.insert_points((rng.random((n, 3)) * 10).astype(np.float32), rng.integers(0, 256, (n, 3)).astype(np.uint8))
    return m

save_ply(memory(2000), "map.ply")
good = open("map.ply", "rb").read()
if FILL:
    st = os.statvfs(".")
    with open("filler.bin", "wb") as fh:
        fh.write(b"\\0" * (st.f_bavail * st.f_frsize - 64 * 1024))
big = memory(80000)  # ~1.4 MB as PLY: more than the disk holds
try:
    save_ply(big, "map.ply")
    raised = None
except FileFormatError as exc:
    raised = str(exc)
result = {"raised": raised, "same": open("map.ply", "rb").read() == good, "readable": len(read_ply_points("map.ply")[0]),
          "temps": sorted(n for n in os.listdir(".") if n.startswith("."))}
"""


def test_save_on_full_disk_refuses_and_keeps_the_old_map(small_disk):
    result = small_disk.run(f"FILL = {small_disk.tmpfs}\n" + FULL_DISK_SAVE)
    assert result["raised"] and "could not save map" in result["raised"], (small_disk.kind, result)
    assert result["same"] and result["readable"] == 2000, result
    assert result["temps"] == [], result


def test_generate_on_full_disk_fails_in_one_line_and_keeps_old_outputs(small_disk, tmp_path):
    out = small_disk.path / "run"
    code = f"""
import os, subprocess, sys
cmd = [sys.executable, "-m", "spatia_core.cli", "generate", "--world", "builtin", "--trajectory", "loop", "--frames", "4",
       "--width", "48", "--height", "36", "--no-progress", "--set", "memory.voxel_size=0.2", "--out", {str(out)!r}]
first = subprocess.run(cmd, capture_output=True, text=True)
before = {{n: open(os.path.join({str(out)!r}, n), "rb").read() for n in sorted(os.listdir({str(out)!r}))}}
if {small_disk.tmpfs}:
    st = os.statvfs(".")
    with open("filler.bin", "wb") as fh:
        fh.write(b"\\0" * (st.f_bavail * st.f_frsize - 8 * 1024))
cmd[cmd.index("4")] = "24"
cmd[cmd.index("48")], cmd[cmd.index("36")] = "640", "480"
cmd[cmd.index("memory.voxel_size=0.2")] = "memory.voxel_size=0.01"
second = subprocess.run(cmd, capture_output=True, text=True)
after = {{n: open(os.path.join({str(out)!r}, n), "rb").read() for n in sorted(os.listdir({str(out)!r}))}}
result = {{"first": first.returncode, "first_err": first.stderr[-500:], "rc": second.returncode, "stderr": second.stderr.strip().splitlines(),
          "same": before == after, "names": sorted(before), "left": sorted(n for n in os.listdir(".") if n.startswith("."))}}
"""
    result = small_disk.run(code)
    assert result["first"] == 0, result
    assert result["rc"] == 2, (small_disk.kind, result)
    assert len(result["stderr"]) == 1 and result["stderr"][0].startswith("spatia: error:"), result
    assert result["same"] and "memory.ply" in result["names"], result
    assert result["left"] == [], result


# -- row 5: a failed load leaves the memory untouched ------------------------------------------------
@pytest.mark.parametrize("coord", ["1e30", "-3e9", "4e4"])
def test_failed_load_leaves_the_memory_untouched(tmp_path, coord):
    path = tmp_path / "far.ply"
    path.write_text(_ascii_ply(["0 0 0 10 20 30", f"{coord} 1 1 10 20 30"]))
    mem = _memory(500)
    before = [a.copy() for a in mem.to_numpy()]
    with pytest.raises(SpatiaError):
        load_ply(path, mem)
    after = mem.to_numpy()
    assert len(mem) == 500 and all(np.array_equal(a, b) for a, b in zip(before, after))


# -- row 6: malformed ASCII PLY (Open3D stops half-way and keeps garbage) is refused -----------------
GOOD_ROWS = [f"{i * 0.1:.3f} {i * 0.2:.3f} 1.000 10 20 30" for i in range(10)]


@pytest.mark.parametrize("rows,n", [
    (GOOD_ROWS[:5] + ["0.5 abc 1.0 10 20 30"] + GOOD_ROWS[6:], None),  # a word in a number's place
    (GOOD_ROWS[:5] + ["0.5 1.0"] + GOOD_ROWS[6:], None),  # a short row
    (GOOD_ROWS[:5] + ["0.5 1.0", "1.0 10 20 30"] + GOOD_ROWS[6:-1], None),  # a row split in two
    (GOOD_ROWS[:5] + ["0.5 1.0 1.0 10 20 30 99"] + GOOD_ROWS[6:], None),  # a long row
    (GOOD_ROWS[:7], 10),  # fewer rows than declared
], ids=["word", "short-row", "split-row", "long-row", "missing-rows"])
def test_malformed_ascii_ply_is_refused(tmp_path, rows, n):
    path = tmp_path / "bad.ply"
    path.write_text(_ascii_ply(rows, n))
    with pytest.raises(FileFormatError):
        read_ply_points(path)
    mem = _memory(100)
    with pytest.raises(FileFormatError):
        load_ply(path, mem)
    assert len(mem) == 100


def test_good_ascii_ply_still_reads(tmp_path):
    path = tmp_path / "good.ply"
    path.write_text(_ascii_ply(GOOD_ROWS))
    xyz, rgb, counts = read_ply_points(path)
    np.testing.assert_allclose(xyz[:, 1], np.arange(10) * 0.2, atol=1e-6)
    assert rgb.tolist()[0] == [10, 20, 30] and counts is None


@pytest.mark.parametrize("cut", [0.3, 0.7, 0.999])
def test_truncated_binary_ply_is_refused(tmp_path, cut):
    path = tmp_path / "map.ply"
    save_ply(_memory(300), path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(FileFormatError):
        read_ply_points(path)


# -- row 15: temporaries of killed saves are swept; empty maps save and load ---------------------
def test_stale_temporaries_of_killed_saves_are_removed(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale_new = tmp_path / f".map.ply.{dead.pid}.0123abcd.tmp.ply"
    stale_old = tmp_path / f".map.{dead.pid}.tmp.ply"  # the name older versions used
    live = tmp_path / f".map.ply.{os.getppid()}.0123abcd.tmp.ply"  # a live process's save in progress
    other = tmp_path / f".other.ply.{dead.pid}.0123abcd.tmp.ply"  # another map's: not ours to remove
    for p in (stale_new, stale_old, live, other):
        p.write_bytes(b"x" * 1000)
    save_ply(_memory(50), tmp_path / "map.ply")
    assert not stale_new.exists() and not stale_old.exists()
    assert live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["map.ply"]


def test_empty_map_saves_and_loads(tmp_path):
    path = save_ply(SpatialMemory(voxel_size=0.01), tmp_path / "empty.ply")
    mem = _memory(20)
    load_ply(path, mem)
    assert len(mem) == 0
    with pytest.raises(FileFormatError):  # an empty object is still no object
        read_ply_points(path)


def test_saved_map_round_trips_exactly(tmp_path):
    mem = _memory(3000, seed=4)
    path = save_ply(mem, tmp_path / "m.ply")
    back = load_ply(path, SpatialMemory(voxel_size=0.01))
    for a, b in zip(mem.to_numpy(), back.to_numpy()):
        np.testing.assert_array_equal(a, b)
