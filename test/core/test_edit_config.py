"""Memory edits change what is rendered; the config schema is strict and round-trips."""

import numpy as np
import pytest

from spatia_core import InputError, Intrinsics, SpatialMemory, look_at
from spatia_core.config import SpatiaConfig
from spatia_core.memory import add_points, recolor_box, remove_box
from spatia_core.render import render_memory


def _two_walls():
    g = np.arange(-1, 1, 0.02) + 0.01
    yy, zz = np.meshgrid(g, g + 1, indexing="ij")
    near = np.stack([np.full(yy.size, 2.01), yy.ravel(), zz.ravel()], 1)
    far = near + [1.0, 0, 0]
    mem = SpatialMemory(voxel_size=0.02)
    mem.insert_points(np.concatenate([near, far]),
                      np.concatenate([np.tile(np.uint8([200, 200, 200]), (len(near), 1)),
                                      np.tile(np.uint8([0, 0, 255]), (len(far), 1))]))
    return mem


def test_edits_change_the_rendered_view():
    mem = _two_walls()
    k = Intrinsics.from_fov(40, 64, 48)
    pose = look_at([0, 0, 1.0], [1, 0, 1.0])
    before = render_memory(mem, k, pose)
    assert (before.rgb[0, 24, 32] - 200 / 255).abs().max() < 1e-3 and before.depth[0, 24, 32] == pytest.approx(2.01, abs=0.02)

    n = recolor_box(mem, [1.9, -1, 0], [2.1, 1, 2], [255, 0, 0])
    assert n == 10000
    red = render_memory(mem, k, pose)
    assert red.rgb[0, 24, 32].tolist() == pytest.approx([1.0, 0.0, 0.0])

    removed = remove_box(mem, [1.9, -0.3, 0.7], [2.1, 0.3, 1.3])
    assert removed > 0
    hole = render_memory(mem, k, pose)
    assert hole.depth[0, 24, 32] == pytest.approx(3.01, abs=0.02), "the far wall shows through the removed part"
    assert hole.rgb[0, 24, 32].tolist() == pytest.approx([0.0, 0.0, 1.0])

    cube = np.stack(np.meshgrid(*[np.arange(0, 0.2, 0.02)] * 3, indexing="ij"), -1).reshape(-1, 3) + [1.5, -0.1, 0.9]
    add_points(mem, cube, np.tile(np.uint8([0, 255, 0]), (len(cube), 1)))
    added = render_memory(mem, k, pose)
    assert added.rgb[0, 24, 32].tolist() == pytest.approx([0.0, 1.0, 0.0])
    assert added.depth[0, 24, 32] < 1.6


def test_bad_edits_raise():
    mem = _two_walls()
    with pytest.raises(InputError):
        remove_box(mem, [1, 1, 1], [0, 0, 0])
    with pytest.raises(InputError):
        recolor_box(mem, [0, 0, 0], [1, 1, np.nan], [1, 1, 1])
    with pytest.raises(InputError):
        recolor_box(mem, [0, 0, 0], [1, 1, 1], [300, 0, 0])


def test_config_round_trip_overrides_and_strictness(tmp_path):
    cfg = SpatiaConfig()
    assert SpatiaConfig.from_dict(cfg.to_dict()) == cfg
    flat = cfg.flatten()
    assert flat["memory.voxel_size"] == 0.01 and flat["retrieval.k"] == 7
    cfg2 = cfg.with_overrides(["memory.voxel_size=0.05", "generator.backend=projection", "camera.intrinsics=[100, 100, 50, 40]"])
    assert cfg2.memory.voxel_size == 0.05 and cfg2.camera.intrinsics == [100, 100, 50, 40]
    path = tmp_path / "c.yaml"
    path.write_text("memory:\n  voxel_size: 1\nretrieval:\n  k: 3\n")
    loaded = SpatiaConfig.from_yaml(path)
    assert loaded.memory.voxel_size == 1.0 and isinstance(loaded.memory.voxel_size, float) and loaded.retrieval.k == 3
    for bad in ({"memory": {"voxel_sise": 1}}, {"memory": {"voxel_size": -1}}, {"retrieval": {"k": 2.5}},
                {"camera": {"intrinsics": [1, 2]}}, {"memory": 3}):
        with pytest.raises(InputError):
            SpatiaConfig.from_dict(bad)
    with pytest.raises(InputError):
        cfg.with_overrides(["nosuch.key=1"])
