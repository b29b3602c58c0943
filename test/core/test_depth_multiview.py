"""Weight-free plane-sweep depth: synthetic room, real RGB-D sequences, and a memory built from
images + poses only (no sensor depth), rendered at a held-out pose."""

import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)

from spatia_core import SpatialMemory
from spatia_core.config import UpdateConfig
from spatia_core.geometry import Intrinsics
from spatia_core.geometry_update import make_depth_source
from spatia_core.geometry_update.multiview import MultiViewDepth
from spatia_core.render import render_memory
from spatia_core.worlds import read_rgbd_folder

DINING_K = [518.0, 519.0, 325.5, 253.5]  # from the dataset's README


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # see test/conftest.py


def _rel_err(est, gt, textured=None):
    ok = (est > 0) & (gt > 0)
    if textured is not None:
        ok &= textured
    return np.abs(est[ok] - gt[ok]) / gt[ok], ok


def _textured(rgb, thresh=0.01, r=3):
    """Pixels whose 7x7 luminance std is at least ``thresh`` (the sweep's own texture test)."""
    from scipy.ndimage import uniform_filter

    g = (rgb.astype(np.float64) / 255.0) @ [0.299, 0.587, 0.114]
    mu = uniform_filter(g, 2 * r + 1, mode="nearest")
    var = uniform_filter(g * g, 2 * r + 1, mode="nearest") - mu * mu
    return np.sqrt(np.clip(var, 0, None)) >= thresh


def _psnr(a, b):
    mse = np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / mse))


def test_factory_and_input_checks():
    src = make_depth_source(UpdateConfig(depth="multiview"))
    assert isinstance(src, MultiViewDepth)
    k = Intrinsics.from_fov(60, 64, 48)
    with pytest.raises(Exception, match="uint8"):
        src.estimate(np.zeros((1, 48, 64, 3), np.float32), None, np.eye(4)[None], k)
    with pytest.raises(Exception, match="intrinsics"):
        src.estimate(np.zeros((1, 40, 64, 3), np.uint8), None, np.eye(4)[None], k)
    # one frame and no history: no neighbour, no depth (never a guess)
    assert not src.estimate(np.zeros((1, 48, 64, 3), np.uint8), None, np.eye(4)[None], k).any()


def test_synthetic_room_three_views():
    """The procedural room (1 cm points) rendered at 3 poses 8 cm apart, 240x180: depth of the middle
    view vs the rendered depth. Bounds: median error < 5 % (a 0.1 px match error is ~2 % at 3 m
    here, and the rendered reference itself is made of 1 cm splat squares), few gross errors."""
    from spatia_core.worlds.procedural import make_room

    scene = make_room(seed=0, spacing=0.01)
    mem = SpatialMemory(voxel_size=0.01)
    mem.insert_points(scene.points, scene.colors)
    k = Intrinsics.from_fov(70, 240, 180)
    poses = np.stack([scene.start_pose.copy() for _ in range(3)])
    for i, dx in enumerate((-0.08, 0.0, 0.08)):
        poses[i, :3, 3] += dx * poses[i, :3, 0]  # along the camera's x axis
    out = render_memory(mem, k, poses, compile=False).numpy()
    mv = MultiViewDepth(max_size=320, min_depth=0.3, max_depth=12.0)
    # clip = the middle frame; the others arrive as history (the 1-frame-clip case)
    from spatia_core.generators.base import ConditionFrame

    hist = [ConditionFrame(out["rgb"][i], poses[i], k) for i in (0, 2)]
    depth = mv.estimate(out["rgb"][1:2], None, poses[1:2], k, history=hist)[0]
    gt = np.where(out["mask"][1], out["depth"][1], 0)
    err, ok = _rel_err(depth, gt)
    frac = (depth > 0).mean()
    print(f"synthetic room: depth on {frac:.3f} of pixels, median abs rel error {np.median(err):.4f}, "
          f"share of errors > 10 %: {(err > 0.1).mean():.3f}")
    assert frac > 0.3
    assert np.median(err) < 0.05
    assert (err > 0.1).mean() < 0.1
    # where the memory covers a pixel, its rendered depth is returned as it is
    scene_dict = {"rgb": out["rgb"][1:2], "depth": out["depth"][1:2], "mask": out["mask"][1:2]}
    with_mem = mv.estimate(out["rgb"][1:2], scene_dict, poses[1:2], k, history=hist)[0]
    np.testing.assert_array_equal(with_mem[out["mask"][1]], out["depth"][1][out["mask"][1]])


@pytest.fixture(scope="module")
def primesense():
    from pathlib import Path

    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    _prereq.require(data.is_dir(), f"real test data not found at {data}")
    frames = read_rgbd_folder(data / "rgbd_primesense_open3d")
    train = [0, 1, 3, 4]
    mv = MultiViewDepth(max_size=320, max_neighbors=2)
    depth = mv.estimate(np.stack([frames[i].rgb for i in train]), None, np.stack([frames[i].pose for i in train]),
                        frames[0].intrinsics)
    return frames, train, depth


def test_primesense_depth_vs_sensor(primesense):
    """Median abs rel error vs the sensor on textured pixels where both have depth.

    Bound 5 %: measured ~1.5 %. At 320x240 a 4 cm baseline gives ~7 px of disparity at 1.5 m, so
    a 0.2 px matching error is ~3 %; the Kinect-style sensor itself is good to ~1 % at these
    ranges, and its depth is registered to the colour image by the device (small misalignment at
    edges). 5 % leaves room for both while catching any real regression (scale/pose bugs give
    tens of percent).
    """
    frames, train, depth = primesense
    errs, fracs = [], []
    for j, i in enumerate(train):
        err, ok = _rel_err(depth[j], frames[i].depth, _textured(frames[i].rgb))
        errs.append(err)
        fracs.append((depth[j] > 0).mean())
        print(f"primesense frame {i}: depth on {fracs[-1]:.3f} of pixels, median abs rel error {np.median(err):.4f}")
    err = np.concatenate(errs)
    print(f"primesense all: median abs rel error {np.median(err):.4f}, mean fraction with depth {np.mean(fracs):.3f}")
    assert np.median(err) <= 0.05
    assert np.mean(fracs) >= 0.25


def test_primesense_memory_from_images_and_poses(primesense):
    """Frames 0, 1, 3, 4 fused with multiview depth only, rendered at frame 2's pose.

    Floors: coverage >= 0.5 and PSNR >= 20 dB on covered pixels. With sensor depth (all frames)
    the same scene renders at > 22 dB and > 85 % coverage (test_real_data); multi-view depth
    leaves untextured walls empty (coverage drops) and adds some depth noise (PSNR a little
    lower), but the pixels it does cover must be the right colour.
    """
    frames, train, depth = primesense
    mem = SpatialMemory(voxel_size=0.01)
    for j, i in enumerate(train):
        mem.insert_frame(frames[i].rgb, depth[j], frames[i].intrinsics, frames[i].pose)
    held = frames[2]
    out = render_memory(mem, held.intrinsics, held.pose, compile=False).numpy()
    covered = out["mask"][0]
    psnr = _psnr(out["rgb"][0][covered], held.rgb[covered])
    err, _ = _rel_err(np.where(covered, out["depth"][0], 0), held.depth)
    print(f"primesense frame 2 from multiview depth of 0,1,3,4: coverage {covered.mean():.3f}, "
          f"PSNR {psnr:.2f} dB, rendered depth median rel error {np.median(err):.4f}")
    assert covered.mean() >= 0.5
    assert psnr >= 20.0


def test_dining_depth_vs_sensor(data_dir):
    """Dining frames 4 and 5 (23 cm apart): median abs rel error vs the sensor on textured pixels.

    Bound 10 % (measured ~5-6 %): the other frames of this sequence are 0.4-2 m and 5-25 degrees
    apart, too far for fronto-parallel window matching on its dim, low-contrast images, and its
    SLAM poses / depth registration are several pixels off (see test_real_data), which costs
    accuracy at a 23 cm baseline (1 px at 3 m is ~6 % depth at 260 px focal length).
    """
    frames = read_rgbd_folder(data_dir / "rgbd_dining_slambook2", intrinsics=DINING_K)
    mv = MultiViewDepth(max_size=320, max_neighbors=1, min_depth=0.5, max_depth=10.0, max_planes=160)
    pick = [3, 4]
    depth = mv.estimate(np.stack([frames[i].rgb for i in pick]), None, np.stack([frames[i].pose for i in pick]),
                        frames[pick[0]].intrinsics)
    errs = []
    for j, i in enumerate(pick):
        err, _ = _rel_err(depth[j], frames[i].depth, _textured(frames[i].rgb))
        errs.append(err)
        print(f"dining frame {i + 1}: depth on {(depth[j] > 0).mean():.3f} of pixels, "
              f"median abs rel error {np.median(err):.4f}")
    err = np.concatenate(errs)
    print(f"dining frames 4+5: median abs rel error {np.median(err):.4f}")
    assert np.median(err) <= 0.10
    assert (depth > 0).mean() >= 0.05
