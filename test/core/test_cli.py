"""The `spatia` command end to end: built-in world, an official-format test case, bad input."""

import json
import subprocess
import sys

import numpy as np
import pytest

from spatia_core import SpatiaConfig, SpatiaWorld
from spatia_core import testcase as tc
from spatia_core import trajectories as tr
from spatia_core.cli import main
from spatia_core.memory import read_ply_points
from spatia_core.video import read_video

SMALL = ["--set", "camera.width=96", "--set", "camera.height=72", "--set", "memory.voxel_size=0.03", "--no-progress"]


def _psnr(a, b):
    return 10 * np.log10(255.0**2 / max(np.mean((a.astype(float) - b.astype(float)) ** 2), 1e-9))


def test_generate_closed_loop_on_builtin_world(tmp_path, capsys):
    out = tmp_path / "loop"
    assert main(["generate", "--world", "builtin", "--trajectory", "loop", "--frames", "24", "--out", str(out), *SMALL]) == 0
    video, scene = read_video(out / "generated.mp4"), read_video(out / "scene_projection.mp4")
    assert video.shape == scene.shape == (24, 72, 96, 3)
    poses = tr.read_poses(out / "poses_c2w.txt")
    np.testing.assert_allclose(poses[0], poses[-1], atol=1e-6)
    assert _psnr(video[0], video[-1]) > 30, "closed loop: the last frame shows the first view again"
    xyz, rgb, counts = read_ply_points(out / "memory.ply")
    summary = json.loads((out / "summary.json").read_text())
    assert len(xyz) == summary["memory"]["voxels"] > 10000 and counts.max() > 1
    assert summary["backend"] == "projection" and sum(c["frames"] for c in summary["clips"]) == 24
    # clip 2 (frames 16-23) ends facing the start again: its last scored target retrieves the first frame
    assert any(r["frame_id"] == 0 for r in summary["clips"][1]["references"])
    assert main(["info", str(out / "memory.ply")]) == 0
    assert '"points"' in capsys.readouterr().out


def test_generate_from_official_test_case(tmp_path):
    # a test case in the release's format, made from a view of the built-in room
    world = SpatiaWorld(SpatiaConfig().with_overrides({"camera.width": 96, "camera.height": 72, "memory.voxel_size": 0.03}))
    world.reset()
    poses = tr.forward_back(world.init.start_pose, 12, distance=0.6)
    view = world.render(poses[:1]).numpy()
    mask = np.zeros((72, 96), bool)
    mask[30:50, 40:60] = True  # a "dynamic" entity: kept out of the memory
    case = tc.write_testcase(tmp_path / "case", view["rgb"][0], world.intrinsics, poses, ["a cosy room"],
                             mask=mask, depth=view["depth"][0])
    out = tmp_path / "out"
    assert main(["generate", "--world", str(case), "--trajectory", str(case), "--out", str(out), *SMALL]) == 0
    video = read_video(out / "generated.mp4")
    assert video.shape[0] == 12
    img = tc.read_testcase(case).image
    assert _psnr(video[0][~mask], img[~mask]) > 22, "the first frame reproduces the test-case image"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world"] == "testcase"
    # the same case as a trajectory for another world is anchored at that world's start
    out2 = tmp_path / "out2"
    assert main(["generate", "--world", "builtin", "--trajectory", str(case), "--out", str(out2), *SMALL]) == 0


@pytest.mark.parametrize("args, message", [
    (["--world", "/no/such/world"], "does not exist"),
    (["--trajectory", "zigzag"], "neither a known name"),
    (["--set", "memory.voxel_size=-1"], "voxel_size"),
    (["--set", "nosuch.key=1"], "unknown config key"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "spatia_core.cli", "generate", "--out", str(out), *SMALL, *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spatia: error:") and message in lines[0], proc.stderr
    assert not out.exists()


def test_nan_pose_file_and_corrupt_map(tmp_path):
    bad = tmp_path / "poses.txt"
    bad.write_text(" ".join(["nan"] * 16) + "\n")
    out = tmp_path / "out"
    assert main(["generate", "--trajectory", str(bad), "--out", str(out), *SMALL]) == 2
    assert not out.exists(), "a failed run leaves no output folder"
    broken = tmp_path / "broken.ply"
    broken.write_bytes(b"ply\nformat binary_little_endian 1.0\nelement vertex 100\nproperty float x\nend_header\n\x00")
    assert main(["info", str(broken)]) == 2
    assert main(["generate", "--world", str(broken), "--out", str(tmp_path / "o2"), *SMALL]) == 2
