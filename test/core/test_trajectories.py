"""Trajectories: test-case folders, RE10K files, pose files, anchoring and generated paths."""

import json

import numpy as np
import pytest

from spatia_core import FileFormatError, InputError, Intrinsics, look_at
from spatia_core import testcase as tc
from spatia_core import trajectories as tr

START = look_at([0.5, -0.2, 1.2], [2.0, 0.3, 1.2])  # level camera
TILTED = look_at([0.5, -0.2, 1.5], [2.0, 0.3, 0.9])  # looking 21 degrees down
NAMES = ["orbit", "forward_back", "loop", "look_around"]


def _yaw(poses):
    return np.unwrap(np.arctan2(poses[:, 1, 2], poses[:, 0, 2]))


# -- generated trajectories --------------------------------------------------------------------


@pytest.mark.parametrize("start", [START, TILTED], ids=["level", "tilted"])
@pytest.mark.parametrize("name", NAMES)
def test_generated_paths_are_closed_upright_and_smooth(name, start):
    poses = tr.make_trajectory(name, start, 48)
    assert poses.shape == (48, 4, 4) and poses.dtype == np.float64
    assert np.array_equal(poses[0], start)
    np.testing.assert_allclose(poses[-1], start, atol=1e-6)
    rot = poses[:, :3, :3]
    np.testing.assert_allclose(rot.transpose(0, 2, 1) @ rot, np.broadcast_to(np.eye(3), rot.shape), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(rot), 1.0, atol=1e-9)
    np.testing.assert_allclose(poses[:, 3], np.broadcast_to([0, 0, 0, 1.0], (48, 4)))
    assert (poses[:, 2, 1] < -0.5).all(), "camera y (down) has a downward world component"
    np.testing.assert_allclose(poses[:, 2, 0], 0.0, atol=1e-9, err_msg="no roll: camera x stays horizontal")
    if start is START:
        assert (poses[:, 2, 1] < -0.99).all()
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    assert steps.max() < 0.15
    rel = np.einsum("tji,tjk->tik", rot[:-1], rot[1:])  # R_t^T R_t+1
    angle = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    assert angle.max() < 10.0


def test_orbit_keeps_looking_at_its_target():
    for plane in ("horizontal", "vertical"):
        for side in ("right", "left"):
            poses = tr.orbit(START, 40, radius=0.5, look_distance=1.5, plane=plane, side=side)
            target = START[:3, 3] + 1.5 * START[:3, 2]
            d = target - poses[:, :3, 3]
            cross = np.linalg.norm(np.cross(poses[:, :3, 2], d), axis=1)
            np.testing.assert_allclose(cross, 0.0, atol=1e-9)
            offsets = poses[:, :3, 3] - START[:3, 3]
            right = START[:3, 0]
            sideways = offsets @ right
            assert np.max(np.abs(sideways)) == pytest.approx(1.0, abs=0.01)
            assert (sideways >= -1e-9).all() if side == "right" else (sideways <= 1e-9).all()
            if plane == "horizontal":
                np.testing.assert_allclose(offsets[:, 2], 0.0, atol=1e-12)
            else:
                assert offsets[:, 2].max() == pytest.approx(0.5, abs=0.01)


def test_forward_back_and_look_around_extents():
    fb = tr.forward_back(START, 21, distance=0.8)
    travel = (fb[:, :3, 3] - START[:3, 3]) @ START[:3, 2]
    assert travel.max() == pytest.approx(0.8) and np.argmax(travel) == 10
    np.testing.assert_allclose(fb[:, :3, :3], np.broadcast_to(START[:3, :3], (21, 3, 3)))
    la = tr.look_around(START, 41, yaw_deg=45)
    np.testing.assert_allclose(la[:, :3, 3], np.broadcast_to(START[:3, 3], (41, 3)))
    yaw = np.degrees(_yaw(la) - _yaw(la)[0])
    assert yaw.max() == pytest.approx(45, abs=0.01) and yaw.min() == pytest.approx(-45, abs=0.01)


@pytest.mark.parametrize("facing", ["outward", "tangent"])
@pytest.mark.parametrize("turn", ["left", "right"])
def test_loop_looks_all_around(facing, turn):
    poses = tr.make_trajectory("loop", START, 73, facing=facing, turn=turn, radius=0.5)
    turned = _yaw(poses)
    assert turned[-1] - turned[0] == pytest.approx(2 * np.pi if turn == "left" else -2 * np.pi, abs=1e-6)
    centre = poses[:-1, :3, 3].mean(axis=0)  # the last pose repeats the first
    np.testing.assert_allclose(np.linalg.norm(poses[:-1, :3, 3] - centre, axis=1), 0.5, atol=1e-9)
    np.testing.assert_allclose(poses[:, 2, 3], START[2, 3])


def test_generator_argument_errors():
    with pytest.raises(InputError, match="zigzag"):
        tr.make_trajectory("zigzag", START, 10)
    for bad_n in (1, 0, 2.5, True):
        with pytest.raises(InputError, match="n_frames"):
            tr.make_trajectory("orbit", START, bad_n)
    nan = START.copy()
    nan[0, 3] = np.nan
    for name in NAMES:
        with pytest.raises(InputError, match="NaN"):
            tr.make_trajectory(name, nan, 10)
    with pytest.raises(InputError):
        tr.make_trajectory("orbit", START, 10, radius=-1)
    with pytest.raises(InputError, match="wobble"):
        tr.make_trajectory("orbit", START, 10, wobble=3)
    assert tr.make_trajectory("closed_loop", START, 5).shape == (5, 4, 4)


# -- anchoring and resampling ------------------------------------------------------------------


def test_anchor_preserves_relative_motion():
    src = tr.orbit(look_at([3, 1, 0.5], [0, 0, 0.5]), 9, radius=0.3)
    out = tr.anchor(src, START)
    assert np.array_equal(out[0], START)
    rel_src = np.linalg.inv(src[0]) @ src
    rel_out = np.linalg.inv(out[0]) @ out
    np.testing.assert_allclose(rel_out, rel_src, atol=1e-9)
    scaled = tr.anchor(src, START, scale=2.0)
    np.testing.assert_allclose(
        np.linalg.norm(scaled[:, :3, 3] - START[:3, 3], axis=1),
        2 * np.linalg.norm(out[:, :3, 3] - START[:3, 3], axis=1), atol=1e-9)
    with pytest.raises(InputError):
        tr.anchor(src, START, scale=0)


def test_resample_keeps_end_points():
    poses = tr.look_around(START, 9, yaw_deg=40)
    out = tr.resample(poses, 33)
    assert out.shape == (33, 4, 4)
    assert np.array_equal(out[0], poses[0]) and np.array_equal(out[-1], poses[-1])
    np.testing.assert_allclose(out[::4], poses, atol=1e-9)


# -- test-case folders -------------------------------------------------------------------------


def _case(tmp_path, **kw):
    k = Intrinsics.from_fov(60, 64, 48)
    img = (np.arange(64 * 48 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)
    poses = tr.make_trajectory("orbit", START, 5)
    return k, img, poses, tc.write_testcase(tmp_path / "case", img, k, poses, ["a room", "turn left"], **kw)


@pytest.mark.parametrize("depth_format", ["npy", "png"])
def test_testcase_round_trip(tmp_path, depth_format):
    mask = np.zeros((48, 64), bool)
    mask[10:20, 5:15] = True
    depth = np.linspace(0.5, 4.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    depth[0, :5] = 0.0
    k, img, poses, folder = _case(tmp_path, mask=mask, depth=depth, depth_format=depth_format)
    case = tc.read_testcase(folder)
    np.testing.assert_allclose(case.poses, poses, atol=1e-12)
    np.testing.assert_allclose(case.w2c @ case.poses, np.broadcast_to(np.eye(4), poses.shape), atol=1e-12)
    for attr in ("fx", "fy", "cx", "cy", "width", "height"):
        assert getattr(case.intrinsics, attr) == pytest.approx(getattr(k, attr))
    assert case.prompts == ["a room", "turn left"] and case.prompt == "a room"
    assert case.mask.dtype == bool and (case.mask == mask).all()
    assert case.depth.dtype == np.float32 and case.depth.shape == (48, 64)
    np.testing.assert_allclose(case.depth, depth, atol=0 if depth_format == "npy" else 5e-4)
    assert case.image.dtype == np.uint8 and case.image.shape == (48, 64, 3)
    assert np.abs(case.image.astype(int) - img).mean() < 8  # jpeg
    assert case.folder == folder


def test_testcase_official_variants(tmp_path):
    """Whitespace intrinsics, 3x4 w2c lines, a single prompt, no optional files."""
    k, img, poses, folder = _case(tmp_path)
    fx, fy, cx, cy = k.normalized()
    (folder / "intrinsics.txt").write_text(f"{fx} {fy} {cx} {cy}\n")
    w2c = np.linalg.inv(poses)
    (folder / "w2c.txt").write_text("\n".join(json.dumps(m[:3].tolist()) for m in w2c) + "\n\n")
    (folder / "prompt.txt").write_text("a quiet living room\n")
    case = tc.read_testcase(folder)
    np.testing.assert_allclose(case.poses, poses, atol=1e-9)
    assert case.intrinsics.fx == pytest.approx(k.fx)
    assert case.prompts == ["a quiet living room"] and case.mask is None and case.depth is None
    (folder / "intrinsics.txt").write_text(json.dumps(k.matrix().tolist()))  # pixel K also accepted
    assert tc.read_testcase(folder).intrinsics.cx == pytest.approx(k.cx)


def test_testcase_errors_name_the_file_and_line(tmp_path):
    k, img, poses, folder = _case(tmp_path)
    lines = (folder / "w2c.txt").read_text().splitlines()
    (folder / "w2c.txt").write_text(lines[0] + "\n[[1, 2, 3]]\n")
    with pytest.raises(FileFormatError, match=r"w2c\.txt:2"):
        tc.read_testcase(folder)
    (folder / "w2c.txt").write_text(lines[0] + "\n" + lines[1] + "\n[[1, 0, 0, 0], [0, 1, 0,\n")
    with pytest.raises(FileFormatError, match=r"w2c\.txt:3"):
        tc.read_testcase(folder)
    nan = np.eye(4).tolist()
    nan[0][3] = float("nan")
    (folder / "w2c.txt").write_text(lines[0] + "\n" + json.dumps(nan) + "\n")
    with pytest.raises(FileFormatError, match=r"w2c\.txt:2.*NaN"):
        tc.read_testcase(folder)
    skew = np.eye(4)
    skew[0, 1] = 0.5
    (folder / "w2c.txt").write_text(json.dumps(skew.tolist()) + "\n")
    with pytest.raises(FileFormatError, match="orthonormal"):
        tc.read_testcase(folder)
    (folder / "w2c.txt").unlink()
    with pytest.raises(FileFormatError, match=r"w2c\.txt"):
        tc.read_testcase(folder)
    (folder / "w2c.txt").write_text(lines[0] + "\n")
    (folder / "intrinsics.txt").write_text("[0.5, 0.5, 0.5]")
    with pytest.raises(FileFormatError, match="intrinsics.txt"):
        tc.read_testcase(folder)
    (folder / "intrinsics.txt").write_text("[0.5, 0.5, 0.5, 0.5]")
    (folder / "mask.png").write_bytes(b"not a png")
    with pytest.raises(FileFormatError, match="mask.png"):
        tc.read_testcase(folder)
    (folder / "mask.png").unlink()
    (folder / "img.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(FileFormatError, match="img.jpg"):
        tc.read_testcase(folder)
    (folder / "img.jpg").unlink()
    with pytest.raises(FileFormatError, match="img.jpg"):
        tc.read_testcase(folder)
    with pytest.raises(FileFormatError, match="not found"):
        tc.read_testcase(tmp_path / "nowhere")


def test_write_testcase_rejects_bad_input(tmp_path):
    k = Intrinsics.from_fov(60, 32, 24)
    img = np.zeros((24, 32, 3), np.uint8)
    with pytest.raises(InputError):
        tc.write_testcase(tmp_path, img.astype(np.float32), k, START, "p")
    with pytest.raises(InputError):
        tc.write_testcase(tmp_path, img, k, START, "p", mask=np.zeros((5, 5), bool))
    with pytest.raises(InputError):
        tc.write_testcase(tmp_path, img, k, START, "two\nlines")
    nan = START.copy()
    nan[1, 1] = np.nan
    with pytest.raises(InputError, match="NaN"):
        tc.write_testcase(tmp_path, img, k, nan, "p")


# -- RE10K and pose files ----------------------------------------------------------------------


def test_all_re10k_files_load(data_dir):
    files = sorted((data_dir / "re10k_trajectories").glob("*.txt"))
    assert len(files) == 10
    for f in files:
        traj = tr.read_re10k(f)
        assert traj.poses.shape == (16, 4, 4) and traj.url.startswith("http")
        rot = traj.poses[:, :3, :3]
        np.testing.assert_allclose(rot.transpose(0, 2, 1) @ rot, np.broadcast_to(np.eye(3), rot.shape), atol=1e-12)
        assert np.all(np.diff(traj.timestamps_us) > 0)
        fx, fy, cx, cy = traj.intrinsics.T
        assert ((fx > 0.2) & (fx < 2) & (fy > 0.2) & (fy < 2)).all()
        np.testing.assert_allclose(cx, 0.5, atol=0.1)
        np.testing.assert_allclose(cy, 0.5, atol=0.1)
        np.testing.assert_allclose(fx / fy, 9 / 16, rtol=0.03)  # square pixels on 16:9 video
        k = traj.intrinsics_at(640, 360)
        assert k.fx == pytest.approx(k.fy, rel=0.03)
        steps = np.linalg.norm(np.diff(traj.poses[:, :3, 3], axis=0), axis=1)
        assert steps.max() < 1.0
        anchored = tr.load_trajectory(str(f), START, 0)
        assert np.array_equal(anchored[0], START)
        np.testing.assert_allclose(np.linalg.inv(anchored[0]) @ anchored, np.linalg.inv(traj.poses[0]) @ traj.poses,
                                   atol=1e-9)


def test_re10k_errors(tmp_path):
    f = tmp_path / "bad.txt"
    good = "1000 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0"
    f.write_text(f"https://example.com/v\n{good}\n1001 0.5 0.9 0.5 0.5 0 0 1 0 0\n")
    with pytest.raises(FileFormatError, match=r"bad\.txt:3.*19"):
        tr.read_re10k(f)
    with_nan = good.replace("1000", "1001").replace(" 1 0 0 0 0 1", " 1 0 0 0 0 nan", 1)
    f.write_text(f"https://example.com/v\n{good}\n{with_nan}\n")
    with pytest.raises(FileFormatError, match=r"bad\.txt:3"):
        tr.read_re10k(f)
    f.write_text("https://example.com/v\n")
    with pytest.raises(FileFormatError, match="no camera frames"):
        tr.read_re10k(f)
    with pytest.raises(FileFormatError, match="not found"):
        tr.read_re10k(tmp_path / "missing.txt")


def test_pose_file_round_trip_and_errors(tmp_path):
    poses = tr.make_trajectory("look_around", TILTED, 7)
    path = tr.write_poses(tmp_path / "p.txt", poses)
    assert np.array_equal(tr.read_poses(path), poses)  # 17 significant digits: exact
    text = path.read_text().splitlines()
    path.write_text("\n".join([text[0], "  # a comment", text[1] + "  # trailing", "", *text[2:]]) + "\n")
    np.testing.assert_allclose(tr.read_poses(path), poses, atol=1e-15)
    np.testing.assert_allclose(tr.load_trajectory(str(path), START, 0), poses, atol=1e-15)
    path.write_text(text[1] + "\n1 2 3\n")
    with pytest.raises(FileFormatError, match=r"p\.txt:2"):
        tr.read_poses(path)
    path.write_text("# nothing\n")
    with pytest.raises(FileFormatError, match="no poses"):
        tr.read_poses(path)


def test_load_trajectory_dispatch(tmp_path):
    np.testing.assert_allclose(tr.load_trajectory("orbit", START, 12), tr.orbit(START, 12))
    assert tr.load_trajectory("loop", START).shape == (tr.DEFAULT_N_FRAMES, 4, 4)
    _, _, poses, folder = _case(tmp_path)
    np.testing.assert_allclose(tr.load_trajectory(folder, TILTED, 99), poses, atol=1e-12)  # as given
    with pytest.raises(InputError, match="neither a known name"):
        tr.load_trajectory(str(tmp_path / "missing.txt"), START, 5)
    with pytest.raises(InputError, match="start pose"):
        tr.load_trajectory("orbit", None, 5)
