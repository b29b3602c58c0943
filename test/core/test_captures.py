"""Posed-photo readers (hand-made files with known answers, pycolmap-written models), the
multi-view consistency check, and captures as worlds / evaluation on the real Strecha set."""

import json

import cv2
import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)

from spatia_core.captures import detect_format, parse_holdout, read_capture, scale_intrinsics
from spatia_core.captures.llff import read_llff
from spatia_core.captures.strecha import read_camera_file
from spatia_core.captures.transforms_json import GL_TO_CV, read_transforms_json
from spatia_core.config import WorldConfig
from spatia_core.errors import FileFormatError, InputError
from spatia_core.geometry import Intrinsics, invert_pose, look_at
from spatia_core.geometry_update.fusion import check_consistency, complete_depth, depth_edges
from spatia_core.worlds import resolve_source

POSE = look_at([1.0, 2.0, 0.5], [4.0, 1.0, 0.8])  # OpenCV axes, camera-to-world


def _image(path, w=64, h=48):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8))


# -- Strecha -------------------------------------------------------------------------------------
def test_strecha_camera_file_known_answer(tmp_path):
    rot, c = POSE[:3, :3], POSE[:3, 3]
    lines = ["100 0 31.5", "0 110 23.5", "0 0 1", "0 0 0", *[" ".join(map(str, r)) for r in rot], " ".join(map(str, c)),
             "64 48"]
    (tmp_path / "gt_dense_cameras").mkdir()
    (tmp_path / "gt_dense_cameras" / "a.jpg.camera").write_text("\n".join(lines))
    _image(tmp_path / "images" / "a.jpg")
    assert detect_format(tmp_path) == "strecha"
    cap = read_capture(tmp_path)
    np.testing.assert_allclose(cap.images[0].pose, POSE, atol=1e-12)
    assert cap.images[0].intrinsics == Intrinsics(100, 110, 31.5, 23.5, 64, 48)
    (tmp_path / "bad.camera").write_text("1 2 3")
    with pytest.raises(FileFormatError, match="26 numbers, got 3"):
        read_camera_file(tmp_path / "bad.camera")


# -- transforms.json -----------------------------------------------------------------------------
def test_transforms_json_opengl_to_opencv(tmp_path):
    _image(tmp_path / "images" / "f0.png")
    _image(tmp_path / "images" / "f1.png")
    gl = POSE @ GL_TO_CV  # what nerfstudio writes for our pose (GL_TO_CV is its own inverse)
    data = {"fl_x": 50.0, "fl_y": 52.0, "cx": 32.0, "cy": 24.0, "w": 64, "h": 48, "aabb_scale": 16,
            "frames": [{"file_path": "images/f0.png", "transform_matrix": gl.tolist()},
                       {"file_path": "images/f1", "transform_matrix": gl.tolist(), "fl_x": 60.0}]}
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    assert detect_format(tmp_path) == "transforms_json"
    cap = read_transforms_json(tmp_path)
    np.testing.assert_allclose(cap.images[0].pose, POSE, atol=1e-12)
    # the camera's +z looks at the target, +y points down (world z up)
    assert cap.images[0].pose[2, 1] < 0
    assert cap.images[0].intrinsics == Intrinsics(50, 52, 31.5, 23.5, 64, 48)  # pixel centres at i + 0.5 -> i
    assert cap.images[1].intrinsics.fx == 60.0 and cap.images[1].path.name == "f1.png"
    assert "ignored aabb_scale" in cap.notes
    # NeRF-synthetic style: camera_angle_x, size from the image
    del data["fl_x"], data["fl_y"], data["w"], data["h"], data["cx"], data["cy"]
    data["camera_angle_x"] = 2 * np.arctan(0.5)  # f = w / 2 / tan(angle / 2) = 64
    data["frames"][1].pop("fl_x")
    (tmp_path / "transforms.json").write_text(json.dumps(data))
    k = read_transforms_json(tmp_path / "transforms.json").images[0].intrinsics
    assert (k.fx, k.width, k.height) == pytest.approx((64.0, 64, 48))


@pytest.mark.parametrize("content, message", [
    ("{", "cannot read"),
    ('{"frames": 3}', "needs a 'frames' list"),
    ('{"fl_x": 5, "w": 4, "h": 4, "frames": [{"file_path": "x.png"}]}', "needs file_path and transform_matrix"),
    ('{"fl_x": 5, "w": 4, "h": 4, "frames": [{"file_path": "x.png", "transform_matrix": [[1, 0], [0, 1]]}]}', "4x4"),
])
def test_transforms_json_bad_files(tmp_path, content, message):
    (tmp_path / "transforms.json").write_text(content)
    with pytest.raises(FileFormatError, match=message):
        read_transforms_json(tmp_path)


# -- LLFF ----------------------------------------------------------------------------------------
def test_llff_poses_bounds_known_answer(tmp_path):
    for i in range(2):
        _image(tmp_path / "images" / f"IMG_{i}.JPG", 64, 48)
    r = POSE[:3, :3]
    m = np.c_[r[:, 1], r[:, 0], -r[:, 2], POSE[:3, 3], [48.0, 64.0, 70.0]]  # [down, right, back | t | hwf]
    rows = np.stack([np.r_[m.reshape(-1), 0.5, 9.0]] * 2)
    np.save(tmp_path / "poses_bounds.npy", rows)
    assert detect_format(tmp_path) == "llff"
    cap = read_capture(tmp_path)
    np.testing.assert_allclose(cap.images[0].pose, POSE, atol=1e-12)
    assert cap.images[0].intrinsics == Intrinsics(70, 70, 32, 24, 64, 48)
    assert cap.images[1].depth_range == (0.5, 9.0)
    np.save(tmp_path / "poses_bounds.npy", rows[:1])
    with pytest.raises(FileFormatError, match="1 poses but 2 images"):
        read_llff(tmp_path)
    np.save(tmp_path / "poses_bounds.npy", np.zeros((2, 15)))
    with pytest.raises(FileFormatError, match=r"\(N, 17\)"):
        read_llff(tmp_path)


# -- COLMAP (models written by pycolmap) -----------------------------------------------------------
def _colmap_model(folder, binary: bool, model: str, params):
    pycolmap = _prereq.require_module("pycolmap", "pycolmap is not installed (requirements.txt)")
    rec = pycolmap.Reconstruction()
    cam = pycolmap.Camera.create_from_model_name(1, model, 80.0, 64, 48)
    cam.params = params
    rec.add_camera_with_trivial_rig(cam)
    w2c = invert_pose(POSE)
    img = pycolmap.Image(name="a.png", camera_id=1, image_id=1)
    rec.add_image_with_trivial_frame(img, pycolmap.Rigid3d(pycolmap.Rotation3d(w2c[:3, :3]), w2c[:3, 3]))
    rec.add_point3D(np.array([4.0, 1.0, 0.8]), pycolmap.Track(), np.zeros(3, np.uint8))
    out = folder / "sparse" / "0"
    out.mkdir(parents=True)
    (rec.write_binary if binary else rec.write_text)(str(out))
    _image(folder / "images" / "a.png")
    return rec


@pytest.mark.parametrize("binary", [False, True])
def test_colmap_model_written_by_pycolmap(tmp_path, binary):
    rec = _colmap_model(tmp_path, binary, "PINHOLE", [80.0, 82.0, 32.0, 24.0])
    assert detect_format(tmp_path) == "colmap"
    cap = read_capture(tmp_path)
    im = cap.images[0]
    np.testing.assert_allclose(im.pose, POSE, atol=1e-9)
    # a point projected by COLMAP's own camera model lands 0.5 px further than ours (pixel centres)
    x_world = np.array([4.2, 1.1, 0.9])
    x_cam = invert_pose(POSE)[:3] @ np.r_[x_world, 1.0]
    uv_colmap = np.asarray(rec.cameras[1].img_from_cam(x_cam[None]))[0]
    k = im.intrinsics
    uv_ours = np.array([k.fx * x_cam[0] / x_cam[2] + k.cx, k.fy * x_cam[1] / x_cam[2] + k.cy])
    np.testing.assert_allclose(uv_ours, uv_colmap - 0.5, atol=1e-9)
    assert cap.points.shape == (1, 3) and not cap.metric


def test_colmap_distortion_and_bad_models(tmp_path):
    _colmap_model(tmp_path / "a", False, "SIMPLE_RADIAL", [80.0, 32.0, 24.0, -0.1])
    im = read_capture(tmp_path / "a").images[0]
    assert im.distortion == (-0.1, 0.0, 0.0, 0.0) and im.intrinsics.fx == im.intrinsics.fy == 80.0
    _colmap_model(tmp_path / "b", False, "OPENCV_FISHEYE", [80.0, 80.0, 32.0, 24.0, 0.1, 0, 0, 0])
    with pytest.raises(FileFormatError, match="OPENCV_FISHEYE is not supported"):
        read_capture(tmp_path / "b")
    bad = tmp_path / "c" / "sparse"
    bad.mkdir(parents=True)
    (bad / "cameras.txt").write_text("1 PINHOLE 64 not_a_number\n")
    (bad / "images.txt").write_text("")
    (bad / "points3D.txt").write_text("")
    with pytest.raises(FileFormatError, match="cannot read COLMAP model"):
        read_capture(tmp_path / "c")


# -- detection, hold-out, intrinsics ---------------------------------------------------------------
def test_world_detection_and_holdout(tmp_path):
    (tmp_path / "transforms.json").write_text("{}")
    assert resolve_source(WorldConfig(source="auto", path=str(tmp_path))) == "capture"
    assert resolve_source(WorldConfig(source="auto", path=str(tmp_path / "transforms.json"))) == "capture"
    (tmp_path / "depth").mkdir()  # an RGB-D folder stays one
    assert resolve_source(WorldConfig(source="auto", path=str(tmp_path))) == "rgbd_folder"
    with pytest.raises(FileFormatError, match="not a posed-photo capture"):
        read_capture(tmp_path / "depth")
    assert parse_holdout("every:8", 20) == [0, 8, 16]
    assert parse_holdout("every:4@2", 8) == [2, 6]
    assert parse_holdout("ids:3,1", 5) == [1, 3]
    for bad in ("every:1", "every:4@4", "ids:9", "half"):
        with pytest.raises(InputError):
            parse_holdout(bad, 8)
    k = scale_intrinsics(Intrinsics(100, 100, 31.5, 23.5, 64, 48), 32, 24)  # the centre stays the centre
    assert (k.fx, k.cx, k.cy) == (50, 15.5, 11.5)


# -- consistency -------------------------------------------------------------------------------------
def _plane_views():
    k = Intrinsics(60, 60, 31.5, 23.5, 64, 48)
    poses = [look_at([0, y, 0], [5, y, 0]) for y in (-0.2, 0.0, 0.2)]
    depths = []
    for p in poses:  # a wall at x = 5 seen head-on: depth 5 everywhere
        depths.append(np.full((48, 64), 5.0, np.float32))
    return k, poses, depths


def test_consistency_removes_floaters_and_keeps_the_surface():
    k, poses, depths = _plane_views()
    depths[1][20:24, 30:34] = 2.5  # a floater in front of the wall in one view
    depths[1][0:4, 0:4] = 0.0  # a hole
    res = check_consistency(depths, poses, [k] * 3, edge_rel=0.0)
    assert (res.depths[1][20:24, 30:34] == 0).all()  # the others see the wall through it
    assert (res.depths[1][30:40, 10:20] == 5.0).all() and (res.confidence[1][30:40, 10:20] == 3).all()
    assert res.stats["dropped_inconsistent"] > 0
    edges = depth_edges(depths[1], 0.05)
    assert edges[19, 30] and edges[20, 30] and not edges[30, 10]
    done, measured = complete_depth(depths[1])
    assert (done > 0).all() and not measured[0, 0] and done[1, 1] == pytest.approx(5.0, rel=1e-3)
    # a completed pixel in front of what the others saw is dropped, one on the surface is kept
    done[0:4, 0:4] = 2.0
    res = check_consistency([depths[0], done, depths[2]], poses, [k] * 3, edge_rel=0.0,
                            measured=[np.ones((48, 64), bool), measured, np.ones((48, 64), bool)])
    assert (res.depths[1][0:4, 0:4] == 0).all()
