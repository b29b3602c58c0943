"""Trajectories: test-case folders, RE10K files, generated paths."""

import json

import numpy as np
import pytest

from spatia_core import FileFormatError, InputError, Intrinsics, look_at
from spatia_core import trajectories as tr

START = look_at([0.5, -0.2, 1.2], [2.0, 0.3, 1.2])


@pytest.mark.parametrize("name", ["orbit", "forward_back", "loop", "look_around"])
def test_generated_paths_are_closed_upright_and_smooth(name):
    poses = tr.make_trajectory(name, START, 48)
    assert poses.shape == (48, 4, 4)
    np.testing.assert_allclose(poses[0], START, atol=1e-9)
    np.testing.assert_allclose(poses[-1], START, atol=1e-6)
    assert (poses[:, 2, 1] < -0.99).all(), "camera y (down) points down in the world"
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    assert steps.max() < 0.15
    for p in poses:
        np.testing.assert_allclose(p[:3, :3].T @ p[:3, :3], np.eye(3), atol=1e-9)
    with pytest.raises(InputError):
        tr.make_trajectory("zigzag", START, 10)


def test_loop_looks_all_around():
    yaws = [np.arctan2(p[1, 2], p[0, 2]) for p in tr.make_trajectory("loop", START, 73)]
    turned = np.unwrap(yaws)
    assert turned[-1] - turned[0] == pytest.approx(2 * np.pi, abs=1e-6)


def test_testcase_round_trip(tmp_path):
    k = Intrinsics.from_fov(60, 64, 48)
    img = (np.arange(64 * 48 * 3) % 251).astype(np.uint8).reshape(48, 64, 3)
    poses = tr.make_trajectory("orbit", START, 5)
    mask = np.zeros((48, 64), bool)
    mask[10:20, 5:15] = True
    depth = np.full((48, 64), 2.5, np.float32)
    tr.write_testcase(tmp_path, img, k, poses, ["a room", "turn left"], mask=mask, depth=depth)
    case = tr.read_testcase(tmp_path)
    np.testing.assert_allclose(case.poses, poses, atol=1e-9)
    assert case.intrinsics.fx == pytest.approx(k.fx) and case.intrinsics.cy == pytest.approx(k.cy)
    assert case.prompts == ["a room", "turn left"]
    assert (case.mask == mask).all() and np.allclose(case.depth, 2.5)
    assert np.abs(case.image.astype(int) - img).mean() < 8  # jpeg


def test_testcase_errors_name_the_line(tmp_path):
    k = Intrinsics.from_fov(60, 32, 24)
    tr.write_testcase(tmp_path, np.zeros((24, 32, 3), np.uint8), k, np.stack([START, START]), "p")
    lines = (tmp_path / "w2c.txt").read_text().splitlines()
    (tmp_path / "w2c.txt").write_text(lines[0] + "\n[[1, 2, 3]]\n")
    with pytest.raises(FileFormatError, match="w2c.txt:2"):
        tr.read_testcase(tmp_path)
    nan = np.eye(4).tolist()
    nan[0][3] = float("nan")
    (tmp_path / "w2c.txt").write_text(json.dumps(nan).replace("NaN", "NaN") + "\n")
    with pytest.raises(FileFormatError, match="NaN"):
        tr.read_testcase(tmp_path)
    (tmp_path / "w2c.txt").unlink()
    with pytest.raises(FileFormatError, match="w2c.txt"):
        tr.read_testcase(tmp_path)


def test_all_re10k_files_load(data_dir):
    files = sorted((data_dir / "re10k_trajectories").glob("*.txt"))
    assert len(files) == 10
    for f in files:
        traj = tr.read_re10k(f)
        assert traj.poses.shape == (16, 4, 4) and traj.url.startswith("http")
        assert ((traj.intrinsics > 0.2) & (traj.intrinsics < 2)).all()
        anchored = tr.load_trajectory(str(f), START, 0)
        np.testing.assert_allclose(anchored[0], START, atol=1e-6)  # the file has 9 digits


def test_pose_file_round_trip(tmp_path):
    poses = tr.make_trajectory("look_around", START, 7)
    tr.write_poses(tmp_path / "p.txt", poses)
    np.testing.assert_allclose(tr.load_trajectory(str(tmp_path / "p.txt"), START, 0), poses, atol=1e-8)
    with pytest.raises(InputError):
        tr.load_trajectory(str(tmp_path / "missing.txt"), START, 5)
