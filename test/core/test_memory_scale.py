"""Scale from the data: depth readings outside the memory's limits are reported, never lost silently."""

import logging

import numpy as np

from spatia_core.geometry import Intrinsics
from spatia_core.memory import SpatialMemory


def test_dropped_depth_is_counted_and_warned(caplog):
    k = Intrinsics(50, 50, 15.5, 11.5, 32, 24)
    depth = np.full((24, 32), 20.0, np.float32)  # a scene 20 units away (SfM units, a street)
    depth[:, :8] = 2.0
    depth[0, 0] = 0.0  # no reading: not a drop
    mem = SpatialMemory(voxel_size=0.05, max_depth=10.0)
    with caplog.at_level(logging.WARNING):
        res = mem.insert_frame(np.zeros((24, 32, 3), np.uint8), depth, k, np.eye(4))
    assert res.depth_dropped == 24 * 24 and mem.stats().depth_dropped == 24 * 24
    assert "outside memory depth limits" in caplog.text
    mem.rescale(0.2, 0.0, float("inf"))  # limits from the data: nothing is dropped
    res = mem.insert_frame(np.zeros((24, 32, 3), np.uint8), depth, k, np.eye(4))
    assert res.depth_dropped == 0 and len(mem) > 0 and mem.voxel_size == 0.2
