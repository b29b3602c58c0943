"""Photos without poses: incremental SfM through pycolmap on the real Strecha Herz-Jesu photos
(downscaled to 640 px), checked against the benchmark's ground-truth cameras after a similarity
(Umeyama) alignment; the model cache, the metric scale factor and bad photo folders."""

import time

import cv2
import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)

from spatia_core.captures import detect_format, read_capture
from spatia_core.captures.sfm import MAX_PHOTOS, read_photos
from spatia_core.captures.strecha import read_strecha
from spatia_core.captures.world import scale_capture
from spatia_core.errors import FileFormatError, InputError

pycolmap = _prereq.require_module("pycolmap", "pycolmap is not installed (requirements.txt)")


@pytest.fixture(scope="module")
def photos(tmp_path_factory, data_dir):
    src = data_dir / "strecha_herzjesu_p8"
    if not src.is_dir():
        _prereq.missing(f"real test data not found at {src}")
    root = tmp_path_factory.mktemp("herzjesu")
    for p in sorted((src / "images").glob("*.jpg")):
        img = cv2.imread(str(p))
        s = 640 / max(img.shape[:2])
        cv2.imwrite(str(root / p.name), cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA))
    t0 = time.perf_counter()
    cap = read_capture(root)  # no poses anywhere: detected as photos, posed by SfM
    return root, cap, time.perf_counter() - t0, read_strecha(src)


def _align(cap, truth):
    """Umeyama similarity of the SfM camera centres onto the ground truth; per-view rotation and
    position errors after it, and the scene extent (largest distance between true centres)."""
    gt = {i.name: i.pose for i in truth.images}
    names = [i.name for i in cap.images]
    src = np.stack([i.pose[:3, 3] for i in cap.images])
    tgt = np.stack([gt[n][:3, 3] for n in names])
    sim = pycolmap.estimate_sim3d(src, tgt)
    m = sim.matrix()
    rot = m[:3, :3] / sim.scale
    pos_err = np.linalg.norm(src @ m[:3, :3].T + m[:3, 3] - tgt, axis=1)
    rot_err = []
    for img in cap.images:
        r = (rot @ img.pose[:3, :3]).T @ gt[img.name][:3, :3]
        rot_err.append(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))
    extent = max(np.linalg.norm(a - b) for a in tgt for b in tgt)
    return sim.scale, np.asarray(rot_err), pos_err, extent


def test_sfm_recovers_strecha_cameras(photos):
    root, cap, seconds, truth = photos
    assert detect_format(root) == "sfm"
    assert cap.format == "sfm" and not cap.metric and len(cap) == 8
    assert any("scale is unknown" in n for n in cap.notes)
    scale, rot_err, pos_err, extent = _align(cap, truth)
    print(f"SfM on 8 photos at 640 px: {seconds:.1f} s, {len(cap.points)} points; after Umeyama (scale {scale:.4f}): "
          f"rotation error max {rot_err.max():.3f} deg, position error max {pos_err.max():.4f} m = "
          f"{100 * pos_err.max() / extent:.2f} % of the {extent:.2f} m camera extent")
    assert rot_err.max() < 2.0
    assert pos_err.max() < 0.01 * extent
    # the focal length SfM found agrees with the calibration at this size
    k_gt = truth.images[0].intrinsics.fx * 640 / truth.images[0].intrinsics.width
    assert cap.images[0].intrinsics.fx == pytest.approx(k_gt, rel=0.02)


def test_sfm_model_is_reused_and_scaled(photos):
    root, cap, _, truth = photos
    t0 = time.perf_counter()
    again = read_photos(root)
    assert time.perf_counter() - t0 < 5.0  # read from .spatia_sfm/, not recomputed
    np.testing.assert_allclose(again.images[3].pose, cap.images[3].pose)
    # world.metric_scale: metres per SfM unit; the Umeyama scale of the scaled capture becomes 1
    scale, *_ = _align(cap, truth)
    metric = scale_capture(cap, scale)
    assert metric.metric and "metric_scale" in metric.notes[-1]
    assert _align(metric, truth)[0] == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(metric.points, cap.points * scale)
    with pytest.raises(InputError, match="metric_scale"):
        scale_capture(cap, -1.0)
    from spatia_core.config import SpatiaConfig

    assert SpatiaConfig().with_overrides(["world.metric_scale=2.5"]).world.metric_scale == 2.5
    with pytest.raises(InputError, match="world.metric_scale"):
        SpatiaConfig().with_overrides({"world.metric_scale": 0})


def test_bad_photo_folders(tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    cv2.imwrite(str(one / "a.png"), np.zeros((32, 32, 3), np.uint8))
    assert detect_format(one) is None
    with pytest.raises(InputError, match="at least 2 photos, found 1"):
        read_photos(one)
    # two photos with nothing in common: SfM registers nothing -> one clear error
    flat = tmp_path / "flat"
    (flat / "images").mkdir(parents=True)
    for i in range(2):
        cv2.imwrite(str(flat / "images" / f"{i}.png"), np.full((48, 64, 3), 40 * i, np.uint8))
    assert detect_format(flat) == "sfm"
    with pytest.raises(FileFormatError, match="registered no photos"):
        read_capture(flat)
    many = tmp_path / "many"
    many.mkdir()
    for i in range(MAX_PHOTOS + 1):
        (many / f"{i:03d}.jpg").write_bytes(b"")
    with pytest.raises(InputError, match=f"101 photos; SfM on the CPU is for at most {MAX_PHOTOS}"):
        read_photos(many)


def test_generate_and_info_on_photos_without_poses(photos, tmp_path, capsys):
    """``spatia generate --world photos/`` (the cached SfM model, photos at 96 px) and what
    ``spatia info`` says about the scale, before and after ``world.metric_scale``."""
    import json

    from spatia_core.cli import main

    root = photos[0]
    out = tmp_path / "gen"
    assert main(["generate", "--world", str(root), "--trajectory", "orbit", "--frames", "2", "--out", str(out),
                 "--set", "world.capture_size=96", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world"] == "capture" and summary["resolution"] == [96, 64]
    assert summary["memory"]["voxels"] > 1000 and "scale unknown" in summary["units"]
    capsys.readouterr()
    assert main(["info", str(out / "memory.ply")]) == 0
    assert "scale unknown" in json.loads(capsys.readouterr().out)["units"]
    assert main(["info", str(root)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format"] == "sfm" and info["photos"] == 8 and not info["metric"]
    assert "set world.metric_scale" in info["units"]
    assert main(["info", str(root), "--metric-scale", "1.77"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["metric"] and info["units"].startswith("metres")
