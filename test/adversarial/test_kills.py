"""``kill -9`` at random moments of every write path (issue 13 rows 12, 13, 15 and the save of row 2):
each file is whole, old or new, never a mix, and killed writers' temporaries are swept."""

from __future__ import annotations

from kill_drivers import run_random_kills

TORCH = "import torch\ntorch.set_num_threads(1)\nimport numpy as np\n"


def test_kill_during_map_saves():
    imports = TORCH + """
from spatia_core.memory import SpatialMemory, save_ply, read_ply_points
def memory(n, seed):
    rng = np.random.default_rng(seed)
    m = SpatialMemory(voxel_size=0.01)
    m.insert_points((rng.random((n, 3)) * 5).astype(np.float32), rng.integers(0, 256, (n, 3)).astype(np.uint8))
    return m
mems = [memory(40000, 1), memory(60000, 2)]
"""
    setup = """
save_ply(mems[0], d / "map.ply")
versions = [(d / "map.ply").read_bytes()]
save_ply(mems[1], d / "map.ply")
versions.append((d / "map.ply").read_bytes())
"""
    body = 'save_ply(mems[n % 2], d / "map.ply")'
    check = """
ok = (d / "map.ply").read_bytes() in versions
read_ply_points(d / "map.ply")
temps_after_kill = len([p for p in d.iterdir() if p.name.startswith(".")])
save_ply(mems[0], d / "map.ply")  # the next save sweeps the killed one's temporary
outcome = [ok, temps_after_kill, len([p for p in d.iterdir() if p.name.startswith(".")])]
"""
    results = run_random_kills("save", setup, body, check, trials=20, max_delay=0.3, imports=imports)
    assert all(ok for ok, _, _ in results), results
    assert all(left == 0 for _, _, left in results), results


def test_kill_during_pose_file_writes():
    imports = "import numpy as np\nfrom spatia_core.trajectories import write_poses, read_poses, orbit\n"
    setup = """
poses = [np.tile(np.eye(4), (k, 1, 1)) for k in (3000, 5000)]
for p in poses:
    p[:, 0, 3] = np.arange(len(p)) * 0.001
write_poses(d / "poses_c2w.txt", poses[0])
"""
    body = 'write_poses(d / "poses_c2w.txt", poses[(n + 1) % 2])'
    check = """
try:
    outcome = len(read_poses(d / "poses_c2w.txt"))
except Exception as exc:
    outcome = repr(exc)[:200]
"""
    results = run_random_kills("poses", setup, body, check, trials=20, max_delay=0.2, imports=imports)
    assert all(r in (3000, 5000) for r in results), results


def test_kill_during_output_commit_leaves_all_old_or_all_new():
    imports = "from spatia_core.outputs import staged_folder\n"
    setup = """
out = d / "out"
out.mkdir()
for j in range(300):
    (out / f"f{j:03d}.txt").write_text("old")
(out / "keep.txt").write_text("mine")
"""
    body = """
with staged_folder(out) as st:
    for j in range(300):
        (st / f"f{j:03d}.txt").write_text(f"new{n}")
"""
    check = """
kinds = {p.read_text() for p in out.iterdir() if p.name.startswith("f")}
count = len([p for p in out.iterdir() if p.name.startswith("f")])
with staged_folder(out) as st:
    (st / "x.txt").write_text("x")
left = [p.name for p in d.iterdir() if p.name.startswith(".")]
outcome = [len(kinds), count, (out / "keep.txt").is_file(), left]
"""
    results = run_random_kills("commit", setup, body, check, trials=20, max_delay=0.15, imports=imports)
    for kinds, count, keep, left in results:
        assert kinds == 1 and count == 300 and keep, results  # one version of the 300 files, the user's file kept
        assert left == [], results  # the killed run's staging folder is gone after the next run


def test_kill_during_edits_keeps_map_and_undo_consistent():
    imports = TORCH + """
from spatia_core.cli import main
from spatia_core.memory import SpatialMemory, save_ply, read_ply_points
import json
"""
    setup = """
m = SpatialMemory(voxel_size=0.01)
r = np.random.default_rng(i)
m.insert_points((r.random((3000, 3)) * 2).astype(np.float32), r.integers(0, 256, (3000, 3)).astype(np.uint8))
save_ply(m, d / "room.ply")
v0 = (d / "room.ply").read_bytes()
"""
    body = """
box = f"{(n % 4) * 0.5},0,0,{(n % 4) * 0.5 + 0.4},2,2"
main(["edit", str(d / "room.ply"), "--out", str(d / "room.ply"), "--keep", "500", "--remove-box", box])
"""
    check = """
sys.stdout = open(os.devnull, "w")
read_ply_points(d / "room.ply")
steps = 0
while main(["edit", str(d / "room.ply"), "--undo"]) == 0 and steps < 500:
    steps += 1
sys.stdout = sys.__stdout__
outcome = [(d / "room.ply").read_bytes() == v0, steps]
"""
    results = run_random_kills("edit", setup, body, check, trials=12, max_delay=1.0, imports=imports)
    assert all(back for back, _ in results), results  # undo always walks back to the first map: no entry lost


def test_commit_into_an_existing_folder_is_one_exchange(tmp_path):
    """On Linux the new and old folders swap in one renameat2(RENAME_EXCHANGE); the user's other
    files are carried over (hard links), so nothing is ever half moved."""
    import sys

    import pytest

    from spatia_core.outputs import staged_folder

    if not sys.platform.startswith("linux"):
        pytest.skip("RENAME_EXCHANGE is Linux only; elsewhere entries are moved one by one")
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.txt").write_text("old")
    (out / "mine.txt").write_text("mine")
    inode = out.stat().st_ino
    with staged_folder(out) as st:
        (st / "a.txt").write_text("new")
        (st / "b.txt").write_text("b")
    assert out.stat().st_ino != inode, "the folder was not swapped in one step"
    assert {p.name: p.read_text() for p in out.iterdir()} == {"a.txt": "new", "b.txt": "b", "mine.txt": "mine"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]
