"""Check-then-open races (issue 13 row 11, TOCTOU): a map or world file swapped for a symlink to
outside the allowed folder between the confinement check and the open is never read.

A thread swaps ``maps/m.ply`` between a regular file (a map near the origin) and a symlink to a
file outside ``sim.map_dir`` (a map at x = 5), atomically (``os.replace``) and as fast as it can,
while loads run through the real paths: ``WorldSimulator.load_map``, ``edit("add_ply")`` and a
``ply`` world loaded from :func:`spatia_core.paths.open_inside` (what ``reset_world`` runs). Every
load either reads the inside map or is refused; none ever holds the outside points. A control
run of the old way (check with ``resolve_inside``, then load by name) shows the race is real.
"""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

from spatia_core.config import SpatiaConfig, WorldConfig
from spatia_core.errors import SpatiaError
from spatia_core.memory import SpatialMemory, load_ply, save_ply
from spatia_core.paths import open_inside, resolve_inside

OUTSIDE_X = 5.0


def _map(path, x):
    mem = SpatialMemory(voxel_size=0.05)
    g = np.stack(np.meshgrid(np.arange(10), np.arange(10), np.arange(4), indexing="ij"), -1).reshape(-1, 3) * 0.05
    mem.insert_points((g + [x, 0.0, 0.0]).astype(np.float32), np.full((len(g), 3), 200, np.uint8))
    save_ply(mem, path)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from spatia_core.simulator import WorldSimulator

    root = tmp_path_factory.mktemp("race")
    maps = root / "maps"
    maps.mkdir()
    _map(maps / "good.ply", 0.0)
    _map(root / "secret.ply", OUTSIDE_X)
    cfg = SpatiaConfig().with_overrides({"camera.width": 32, "camera.height": 24, "memory.voxel_size": 0.05,
                                         "sim.map_dir": str(maps)})
    return WorldSimulator(cfg), maps, root / "secret.ply"


class Swapper:
    """Swaps ``maps/m.ply`` between a regular inside file and a symlink to ``secret`` until stopped."""

    def __init__(self, maps, secret):
        self.maps, self.secret, self.stop, self.swaps = maps, secret, threading.Event(), 0
        if os.path.lexists(maps / "m.ply"):
            os.unlink(maps / "m.ply")
        os.link(maps / "good.ply", maps / "m.ply")
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        link, copy, target = self.maps / ".link", self.maps / ".copy", self.maps / "m.ply"
        while not self.stop.is_set():
            for p in (link, copy):
                if os.path.lexists(p):
                    os.unlink(p)
            os.symlink(self.secret, link)
            os.replace(link, target)  # now a symlink to outside
            os.link(self.maps / "good.ply", copy)
            os.replace(copy, target)  # now a regular file inside again
            self.swaps += 1

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


def _run_loads(load, seconds=4.0, least=40):
    """Call ``load()`` (returns the loaded points' max x, or raises) until ``seconds`` pass and at
    least ``least`` calls were made; the counts of inside loads, refusals and outside reads."""
    inside = refused = outside = calls = 0
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds or calls < least:
        calls += 1
        try:
            top = load()
        except SpatiaError:
            refused += 1
            continue
        if top >= OUTSIDE_X - 0.1:
            outside += 1
        else:
            inside += 1
    return {"inside": inside, "refused": refused, "outside": outside}


def _max_x(mem) -> float:
    return float(mem.xyz[:, 0].max()) if len(mem) else -1.0


def test_swapped_symlink_is_never_read(world):
    sim, maps, secret = world
    ref = SpatialMemory(voxel_size=0.05)

    def load_map():
        sim.load_map("m.ply")
        return _max_x(sim.world.memory)

    def add_ply():
        sim.world.memory.clear()
        sim.edit("add_ply", filename="m.ply", object_pose=np.eye(4))
        return _max_x(sim.world.memory)

    def ply_world():
        from spatia_core.worlds import load_world

        with open_inside("m.ply", [maps], base=maps) as pinned:
            if pinned is None:
                raise SpatiaError("refused")
            load_world(WorldConfig(source="ply", path=str(pinned)), ref)
        return _max_x(ref)

    with Swapper(maps, secret) as swapper:
        results = {name: _run_loads(fn) for name, fn in (("load_map", load_map), ("add_ply", add_ply),
                                                          ("ply_world", ply_world))}
    assert swapper.swaps > 100, swapper.swaps
    for name, r in results.items():
        assert r["outside"] == 0, (name, results)
        assert r["inside"] > 0 and r["refused"] > 0, (name, results)  # both states of the file were met


def test_control_check_then_open_by_name_reads_outside(world):
    """The same race against the old way (check, then open by name) does read the outside file:
    the swapper really opens the window the test above checks is closed."""
    _, maps, secret = world
    mem = SpatialMemory(voxel_size=0.05)

    def old_way():
        full = resolve_inside("m.ply", [maps], base=maps)
        if full is None:
            raise SpatiaError("refused")
        time.sleep(0.001)  # the check-to-open gap of a loader doing other work first
        load_ply(full, mem)
        return _max_x(mem)

    with Swapper(maps, secret):
        deadline, result = time.monotonic() + 30, {"outside": 0}
        while time.monotonic() < deadline and not result["outside"]:
            result = _run_loads(old_way, seconds=2.0, least=20)
    assert result["outside"] > 0, result


def test_fifo_and_missing_files_are_refused_without_blocking(tmp_path):
    (tmp_path / "maps").mkdir()
    os.mkfifo(tmp_path / "maps" / "pipe.ply")
    with open_inside("pipe.ply", [tmp_path / "maps"], base=tmp_path / "maps") as pinned:
        assert pinned is None  # a FIFO would block a reader forever
    with pytest.raises(SpatiaError, match="no such file"):
        with open_inside("nope.ply", [tmp_path / "maps"], base=tmp_path / "maps"):
            pass
    with open_inside("/etc/hostname", [tmp_path / "maps"]) as pinned:
        assert pinned is None
