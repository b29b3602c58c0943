"""``spatia edit`` and its undo journal (issue 13 rows 1 and 13): crafted journals cannot reach
outside the journal folder, and a kill at any write of an edit or an undo loses no map and no
undo entry."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from spatia_core.cli import main
from spatia_core.memory import SpatialMemory, read_ply_points, save_ply

from kill_drivers import run_crash_points


def _map(path, n=400, seed=0):
    rng = np.random.default_rng(seed)
    mem = SpatialMemory(voxel_size=0.01)
    mem.insert_points((rng.random((n, 3)) * 2).astype(np.float32), rng.integers(0, 256, (n, 3)).astype(np.uint8))
    return save_ply(mem, path)


def _edit(path, *ops, keep=5):
    return main(["edit", str(path), "--out", str(path), "--keep", str(keep), *ops])


# -- row 1: journal backup names are journal file names, nothing else ------------------------------
@pytest.mark.parametrize("name", ["../outside.ply", "ABSOLUTE", "0001.ply/../../outside.ply", "sub/0001.ply", "x.ply"])
def test_undo_refuses_backup_names_outside_the_journal(tmp_path, capsys, name):
    room = _map(tmp_path / "room.ply")
    assert _edit(room, "--remove-box", "0,0,0,1,1,1") == 0
    outside = _map(tmp_path / "outside.ply", n=50, seed=9)
    victim = outside.read_bytes()
    journal = tmp_path / "room.ply.edits" / "journal.json"
    data = json.loads(journal.read_text())
    data["entries"][-1]["backup"] = str(outside) if name == "ABSOLUTE" else name
    journal.write_text(json.dumps(data))
    edited = room.read_bytes()
    capsys.readouterr()
    assert main(["edit", str(room), "--undo"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("spatia: error:") and "journal" in err[0], err
    assert room.read_bytes() == edited, "the map was overwritten from outside the journal"
    assert outside.read_bytes() == victim, "a file outside the journal was deleted or changed"


def test_pruning_refuses_backup_names_outside_the_journal(tmp_path):
    room = _map(tmp_path / "room.ply")
    assert _edit(room, "--remove-box", "0,0,0,0.5,0.5,0.5") == 0
    outside = _map(tmp_path / "victim.ply", n=50, seed=9)
    journal = tmp_path / "room.ply.edits" / "journal.json"
    data = json.loads(journal.read_text())
    data["entries"][0]["backup"] = "../victim.ply"
    journal.write_text(json.dumps(data))
    assert _edit(room, "--remove-box", "1,1,1,2,2,2", keep=1) == 2
    assert outside.is_file(), "pruning deleted a file outside the journal"


def test_symlinked_backup_is_not_followed(tmp_path):
    room = _map(tmp_path / "room.ply")
    assert _edit(room, "--remove-box", "0,0,0,1,1,1") == 0
    outside = _map(tmp_path / "secret.ply", n=50, seed=3)
    folder = tmp_path / "room.ply.edits"
    entry = json.loads((folder / "journal.json").read_text())["entries"][-1]["backup"]
    (folder / entry).unlink()
    os.symlink(outside, folder / entry)
    edited = room.read_bytes()
    assert main(["edit", str(room), "--undo"]) == 2
    assert room.read_bytes() == edited and outside.is_file()


def test_undo_walks_back_through_edits(tmp_path):
    room = _map(tmp_path / "room.ply")
    versions = [room.read_bytes()]
    for box in ("0,0,0,0.5,0.5,2", "0.5,0.5,0,1,1,2", "1,1,0,2,2,2"):
        assert _edit(room, "--remove-box", box) == 0
        versions.append(room.read_bytes())
    for expected in reversed(versions[:-1]):
        assert main(["edit", str(room), "--undo"]) == 0
        assert room.read_bytes() == expected
    assert main(["edit", str(room), "--undo"]) == 2  # nothing left to undo
    assert [p.name for p in (tmp_path / "room.ply.edits").iterdir()] == ["journal.json"]


# -- row 13: kills at every write of an edit and of an undo ------------------------------------------
SETUP = """
m = SpatialMemory(voxel_size=0.01)
rng = np.random.default_rng(1)
m.insert_points((rng.random((300, 3)) * 2).astype(np.float32), rng.integers(0, 256, (300, 3)).astype(np.uint8))
save_ply(m, d / "room.ply")
v0 = (d / "room.ply").read_bytes()
for box in PRIOR:
    assert main(["edit", str(d / "room.ply"), "--out", str(d / "room.ply"), "--keep", "2", "--remove-box", box]) == 0
before = (d / "room.ply").read_bytes()
"""

EDIT = """main(["edit", str(d / "room.ply"), "--out", str(d / "room.ply"), "--keep", "2", "--remove-box", "0,0,0,1,1,2"])"""
UNDO = """main(["edit", str(d / "room.ply"), "--undo"])"""

# After the crash: the map is whole and old or new; then undo until nothing is left and record the
# sequence of maps seen, which must walk back through every edit that reached the map.
CHECK = """
now = (d / "room.ply").read_bytes()
read_ply_points(d / "room.ply")
state = "old" if now == before else "new"
trail = [now]
sys.stdout = open(os.devnull, "w")
for _ in range(6):
    if main(["edit", str(d / "room.ply"), "--undo"]) != 0:
        break
    if (d / "room.ply").read_bytes() != trail[-1]:
        trail.append((d / "room.ply").read_bytes())
sys.stdout = sys.__stdout__
outcome = [state, len(trail), trail[-1] == v0]
"""


@pytest.mark.parametrize("prior", [0, 2], ids=["first-edit", "with-pruning"])
def test_kill_at_every_write_of_an_edit_loses_nothing(prior):
    boxes = ["1,1,0,2,2,2", "0,1,0,1,2,2"][:prior]
    results = run_crash_points("edit", f"PRIOR = {boxes!r}\n" + SETUP, EDIT, CHECK)
    assert results[-1]["exit"] == 0 and len(results) >= 4, results  # backup, journal, map (, pruning)
    for r in results:
        state, maps_seen, back_to_start = r["outcome"]
        if state == "new":  # the edit reached the map: its undo entry is there, before or after pruning (--keep 2)
            entries = prior + 1 if r["crashed"] else min(prior + 1, 2)
            assert maps_seen == 1 + entries, r
            assert back_to_start == (prior + 1 <= 2 or r["crashed"]), r
        else:  # the map is the old one: the interrupted edit adds no undo step, the older ones remain
            assert maps_seen == 1 + prior and back_to_start, r


@pytest.mark.parametrize("prior", [1, 2])
def test_kill_at_every_write_of_an_undo_loses_nothing(prior):
    boxes = ["1,1,0,2,2,2", "0,1,0,1,2,2"][:prior]
    results = run_crash_points("undo", f"PRIOR = {boxes!r}\n" + SETUP, UNDO, CHECK)
    assert results[-1]["exit"] == 0 and len(results) >= 3, results  # map, journal
    for r in results:
        state, maps_seen, back_to_start = r["outcome"]
        assert back_to_start, r  # every undo step still reaches the original map
        assert maps_seen == (prior + 1 if state == "old" else prior), r
