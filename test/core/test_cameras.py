"""Known-answer tests for spatia_core.cameras (half-pixel resize, projection, pixel index)."""
import numpy as np

from spatia_core.cameras import Intrinsics, pixel_index, project, resized_matrix


def test_resize_keeps_pixel_edges_aligned():
    # 4x2 image, principal point at the exact centre (1.5, 0.5); halving keeps it at the centre.
    k = resized_matrix(Intrinsics(10.0, 10.0, 1.5, 0.5, 4, 2), 2, 1)
    assert np.allclose(k, [[5.0, 0, 0.5], [0, 5.0, 0.0], [0, 0, 1]])


def test_project_known_point_and_pixel_rule():
    k = np.array([[100.0, 0, 50], [0, 100.0, 40], [0, 0, 1]])
    pose = np.eye(4)
    pose[:3, 3] = [1.0, 0, 0]  # camera 1 m along +x, looking down +z
    uv, z = project([[1.0, 0.1, 2.0], [2.0, 0.0, 1.0]], pose, k)
    assert np.allclose(uv, [[50.0, 45.0], [150.0, 40.0]]) and np.allclose(z, [2.0, 1.0])
    assert pixel_index([[0.5, 1.5], [-0.5, 2.49]]).tolist() == [[1, 2], [0, 2]]


def test_backproject_inverts_project_numpy_and_torch():
    import torch

    from spatia_core.cameras import backproject
    from spatia_core.geometry import look_at

    k = Intrinsics(100.0, 110.0, 31.5, 23.5, 64, 48)
    pose = look_at([1.0, 2.0, 0.5], [4.0, 1.0, 0.8])
    depth = np.zeros((48, 64), np.float32)
    depth[10, 20], depth[40, 3], depth[0, 63] = 2.0, 5.5, 0.25
    pts = backproject(depth, k, pose)
    assert pts.dtype == np.float64 and pts.shape == (3, 3)
    # known answer in the camera frame: x = (u - cx) z / fx, y = (v - cy) z / fy
    assert np.allclose(backproject(depth, k)[1], [(20 - 31.5) * 2 / 100, (10 - 23.5) * 2 / 110, 2.0])
    uv, z = project(pts, pose, k.matrix())
    assert np.allclose(uv, [[63, 0], [20, 10], [3, 40]]) and np.allclose(z, [0.25, 2.0, 5.5])  # row-major order
    pts_t = backproject(torch.from_numpy(depth).double(), k, torch.from_numpy(pose))
    assert torch.allclose(pts_t, torch.from_numpy(pts))
    uv_t, z_t = project(pts_t, torch.from_numpy(pose), k.matrix())
    assert pixel_index(uv_t).tolist() == [[63, 0], [20, 10], [3, 40]]
    assert backproject(depth, k, pose, stride=2).shape == (1, 3)  # only (10, 20) is on the even grid
    assert backproject(depth, k, pose, valid=depth > 1).shape == (2, 3)


def test_undistort_moves_a_dot_to_its_pinhole_position():
    import cv2

    from spatia_core.cameras import undistort

    k = Intrinsics(300.0, 300.0, 159.5, 119.5, 320, 240)
    dist = (-0.25, 0.08, 0.001, -0.002, 0.0)
    point = np.array([[[0.35, -0.25, 1.0]]])  # a ray well off-centre
    pinhole = cv2.projectPoints(point, np.zeros(3), np.zeros(3), k.matrix(), None)[0].reshape(2)
    seen = cv2.projectPoints(point, np.zeros(3), np.zeros(3), k.matrix(), np.array(dist))[0].reshape(2)
    assert np.linalg.norm(seen - pinhole) > 5  # the lens moves it by pixels
    img = np.zeros((240, 320), np.uint8)
    cv2.circle(img, tuple(int(round(c)) for c in seen), 2, 255, -1)
    out = undistort(img, k, dist)
    v, u = np.nonzero(out > 64)
    assert np.hypot(u.mean() - pinhole[0], v.mean() - pinhole[1]) < 1.0
    assert (undistort(img, k, ()) == img).all()


def test_read_mask_one_threshold(tmp_path):
    import cv2
    import pytest

    from spatia_core.cameras import read_mask
    from spatia_core.errors import FileFormatError

    m = np.zeros((6, 8, 4), np.uint8)
    m[..., 3] = 255  # an opaque alpha channel is not the mask
    m[1, 2, 0], m[3, 4, 2] = 1, 200  # any non-zero colour is
    cv2.imwrite(str(tmp_path / "m.png"), m)
    got = read_mask(tmp_path / "m.png", (6, 8))
    assert got.dtype == bool and got.sum() == 2 and got[1, 2] and got[3, 4]
    np.save(tmp_path / "m.npy", (np.arange(48).reshape(6, 8) % 5).astype(np.float32))
    assert read_mask(tmp_path / "m.npy").sum() == 48 - 10
    with pytest.raises(FileFormatError, match="mask is 8x6, image is 4x2"):
        read_mask(tmp_path / "m.png", (2, 4))
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(FileFormatError, match="cannot decode"):
        read_mask(tmp_path / "bad.png")
    with pytest.raises(FileFormatError, match="not found"):
        read_mask(tmp_path / "none.png")


def test_intrinsics_resized_uses_the_half_pixel_rule():
    k = Intrinsics(100.0, 100.0, 63.5, 47.5, 128, 96)  # principal point at the exact centre
    r = k.resized(64, 48)
    assert (r.fx, r.cx, r.cy, r.width, r.height) == (50.0, 31.5, 23.5, 64, 48)
    assert np.allclose(r.matrix(), resized_matrix(k, 64, 48))


def test_edit_cli_masks_use_read_mask_rule(tmp_path, capsys):
    """``spatia edit --remove-mask`` selects every non-zero colour pixel (it used ``> 127`` over all
    channels, alpha included): a faint grey mask removes, an opaque black RGBA mask selects nothing."""
    import cv2

    from spatia_core.cli import main
    from spatia_core.memory import SpatialMemory, load_ply, save_ply

    xs, ys = np.meshgrid(np.arange(-0.5, 0.5, 0.02), np.arange(-0.3, 0.3, 0.02))
    pts = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, 2.0)], 1)  # a wall 2 m ahead of the camera
    mem = SpatialMemory(voxel_size=0.02)
    mem.insert_points(pts, np.full((len(pts), 3), 128, np.uint8))
    src = save_ply(mem, tmp_path / "wall.ply")
    n = len(mem)
    faint = np.zeros((48, 64), np.uint8)
    faint[:, :32] = 64  # the left half of the view (x < 0), below the old threshold
    cv2.imwrite(str(tmp_path / "faint.png"), faint)
    black = np.zeros((48, 64, 4), np.uint8)
    black[..., 3] = 255
    cv2.imwrite(str(tmp_path / "black.png"), black)
    view = ["--pose", ",".join(str(v) for v in np.eye(4).ravel()), "--intrinsics", "40,40,31.5,23.5",
            "--depth-range", "0.5,5", "--voxel-size", "0.02"]
    out = tmp_path / "out.ply"
    assert main(["edit", str(src), "--out", str(out), "--remove-mask", str(tmp_path / "faint.png"), *view]) == 0
    left = load_ply(out, SpatialMemory(voxel_size=0.02)).xyz.cpu().numpy()
    assert 0 < len(left) < n and (left[:, 0] > -0.02).all(), "the faint half is removed, the rest stays"
    capsys.readouterr()
    assert main(["edit", str(src), "--out", str(out), "--remove-mask", str(tmp_path / "black.png"), *view]) == 2
    assert "selects no pixel" in capsys.readouterr().err
