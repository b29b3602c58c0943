"""Monocular depth through transformers (tiny random Depth Anything), its alignment, MapAnything's error,
and a world started from a single test-case image."""

import numpy as np
import pytest

from spatia_core import SpatialMemory
from spatia_core.config import UpdateConfig, WorldConfig
from spatia_core.errors import BackendUnavailableError, InputError
from spatia_core.geometry import Intrinsics, look_at
from spatia_core.geometry_update import make_depth_source
from spatia_core.geometry_update.mapanything import mapanything_available
from spatia_core.geometry_update.mono import MonoDepth, fit_scale_shift


@pytest.fixture(scope="module")
def tiny_model_dir(tiny_depth_model):
    return tiny_depth_model


def _image(h=48, w=64, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def test_loads_from_folder_and_predicts_at_image_size(tiny_model_dir):
    src = make_depth_source(UpdateConfig(depth="mono", depth_checkpoint=str(tiny_model_dir)))
    assert isinstance(src, MonoDepth) and src.kind == "relative"  # Depth Anything's default config
    pred = src.predict(_image())
    assert pred.shape == (48, 64) and pred.dtype == np.float32 and np.isfinite(pred).all()
    k = Intrinsics.from_fov(60, 64, 48)
    frames = np.stack([_image(seed=1), _image(seed=2)])
    poses = np.stack([np.eye(4)] * 2)
    # memory shows the left half of each frame at 2 m: that part is returned as it is
    mask = np.zeros((2, 48, 64), bool)
    mask[:, :, :32] = True
    scene = {"rgb": frames, "depth": np.where(mask, 2.0, 0.0).astype(np.float32), "mask": mask}
    depth = src.estimate(frames, scene, poses, k)
    assert depth.shape == (2, 48, 64) and depth.dtype == np.float32
    np.testing.assert_array_equal(depth[mask], 2.0)
    assert np.all(np.isfinite(depth)) and np.all(depth >= 0)


def test_fit_recovers_known_affine_with_outliers():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0.1, 2.0, (60, 80))
    target = 0.7 * pred + 0.25
    bad = rng.random(pred.shape) < 0.15  # 15 % gross outliers
    target[bad] += rng.uniform(-3, 3, bad.sum())
    s, t = fit_scale_shift(pred, target)
    assert abs(s - 0.7) < 1e-3 and abs(t - 0.25) < 1e-3
    with pytest.raises(InputError):
        fit_scale_shift(np.ones(10), np.ones(10))


def test_alignment_in_inverse_depth_recovers_metric_depth(tiny_model_dir):
    """A relative model's output is inverse depth up to an affine map: aligning it to a sparse
    metric depth (every 4th pixel) must give back the true depth everywhere."""
    src = MonoDepth(str(tiny_model_dir))
    rng = np.random.default_rng(1)
    true_depth = rng.uniform(0.8, 6.0, (48, 64)).astype(np.float32)
    pred = ((1.0 / true_depth - 0.05) / 0.4).astype(np.float32)  # 1/d = 0.4 * pred + 0.05
    sparse = np.zeros_like(true_depth)
    sparse[::2, ::2] = true_depth[::2, ::2]
    out = src.align(pred, sparse)
    np.testing.assert_allclose(out, true_depth, rtol=1e-3)
    # a scalar median hint fixes the scale (shift 0): the median depth equals the hint
    out = src.align(1.0 / true_depth, 3.0)
    assert abs(np.median(out) - 3.0) < 1e-3
    metric = MonoDepth(str(tiny_model_dir), kind="metric")
    out = metric.align(0.5 * true_depth - 0.1, np.where(rng.random(true_depth.shape) < 0.3, true_depth, 0))
    np.testing.assert_allclose(out, true_depth, rtol=1e-3)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(BackendUnavailableError, match="config.json"):
        make_depth_source(UpdateConfig(depth="mono", depth_checkpoint=str(tmp_path / "nope")))
    with pytest.raises(BackendUnavailableError, match="depth_checkpoint"):
        make_depth_source(UpdateConfig(depth="mono", depth_checkpoint=""))


@pytest.mark.skipif(mapanything_available(), reason="mapanything is installed")
def test_mapanything_missing_is_a_clear_error(tmp_path):
    with pytest.raises(BackendUnavailableError, match="optional package 'mapanything'"):
        make_depth_source(UpdateConfig(depth="mapanything", depth_checkpoint=str(tmp_path)))


def test_world_from_single_testcase_image(tiny_model_dir, tmp_path):
    """Official test-case format without a depth file: depth comes from the mono source."""
    from spatia_core.testcase import write_testcase
    from spatia_core.worlds import load_world

    img = _image(96, 128, seed=3)
    k = Intrinsics.from_fov(70, 128, 96)
    poses = np.stack([look_at([0, 0, 1.2], [2, 0, 1.2]), look_at([0.2, 0, 1.2], [2, 0, 1.2])])
    folder = write_testcase(tmp_path / "case", img, k, poses, ["a room"])
    cfg = WorldConfig(source="testcase", path=str(folder))
    with pytest.raises(BackendUnavailableError, match="update.depth"):
        load_world(cfg, SpatialMemory(voxel_size=0.02))
    src = MonoDepth(str(tiny_model_dir), default_median_depth=2.5, max_depth=1e9)  # no far cut: exact median
    mem = SpatialMemory(voxel_size=0.02)
    init = load_world(cfg, mem, depth_source=src)
    depth = init.frames[0].depth
    # a random model's disparity is often 0 (its head ends in a ReLU): those pixels stay unknown
    assert depth.shape == (96, 128) and (depth > 0).sum() > 200
    assert abs(np.median(depth[depth > 0]) - 2.5) < 0.05  # a relative model is scaled to the median hint
    assert len(mem.xyz) > 100 and init.prompts == ["a room"]
