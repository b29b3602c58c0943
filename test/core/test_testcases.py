"""The official release's three test cases through `spatia generate`, with no extra flags.

The projection backend (weight-free) and a tiny random Depth Anything saved in the test stand in
for the generator and the default depth model; offline without the model is one error line and
no output folder. The expected camera is computed from ``intrinsics.txt`` the way the release's
``inference.py`` does it (``fx * width, fy * height, cx * width, cy * height`` at 1248 x 704).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)

from spatia_core.cli import main
from spatia_core.video import read_video

RELEASE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "spatia_release"
CASES = RELEASE / "test_cases"
RELEASE_SIZE = (1248, 704)  # inference.py --width / --height defaults


@pytest.fixture(scope="module")
def cases() -> Path:
    if not CASES.is_dir():
        _prereq.missing(f"the official Spatia release is not at {RELEASE}")
    return CASES


@pytest.fixture(scope="module")
def tiny_depth(tiny_depth_model):
    return tiny_depth_model


def _release_camera(case: Path) -> list[float]:
    """Pixel intrinsics as the release computes them: every number in the file, times W, H, W, H."""
    fx, fy, cx, cy = (float(v) for v in re.findall(r"[-+]?\d*\.\d+(?:[eE][-+]?\d+)?|[-+]?\d+", (case / "intrinsics.txt").read_text()))
    w, h = RELEASE_SIZE
    return [fx * w, fy * h, cx * w, cy * h]


@pytest.mark.parametrize("n", [1, 2, 3])
def test_official_case_runs_without_extra_flags(cases, tiny_depth, tmp_path, n):
    case, out = cases / f"case_{n}", tmp_path / "out"
    assert main(["generate", "--world", str(case), "--trajectory", str(case), "--out", str(out), "--frames", "2",
                 "--no-progress", "--set", f"update.depth_checkpoint={tiny_depth}"]) == 0
    video = read_video(out / "generated.mp4")
    assert video.shape == (2, RELEASE_SIZE[1], RELEASE_SIZE[0], 3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world"] == "testcase" and summary["resolution"] == list(RELEASE_SIZE)
    np.testing.assert_allclose(summary["intrinsics"], _release_camera(case), rtol=1e-9)
    assert summary["memory"]["voxels"] > 1000  # the first image, at its estimated depth
    assert {p.name for p in tmp_path.iterdir()} == {"out"}  # no staging folder left beside it


def test_user_camera_wins_and_multiview_runs(cases, tiny_depth, tmp_path):
    """A size set by the user rescales the case's camera; update.depth=multiview (no single-image
    depth) still starts the case from the mono model's depth."""
    case, out = cases / "case_3", tmp_path / "out"
    assert main(["generate", "--world", str(case), "--trajectory", str(case), "--out", str(out), "--frames", "1",
                 "--no-progress", "--width", "312", "--height", "176", "--set", "update.depth=multiview",
                 "--set", f"update.depth_checkpoint={tiny_depth}"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resolution"] == [312, 176]
    fx, fy, cx, cy = _release_camera(case)  # a quarter of the size; pixel edges stay aligned (half-pixel rule)
    np.testing.assert_allclose(summary["intrinsics"], [fx / 4, fy / 4, (cx + 0.5) / 4 - 0.5, (cy + 0.5) / 4 - 0.5],
                               rtol=1e-9)


def test_offline_without_depth_model_is_one_line_and_no_folder(cases, tmp_path):
    out = tmp_path / "new" / "out"  # neither folder exists: neither may be left behind
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    proc = subprocess.run([sys.executable, "-m", "spatia_core.cli", "generate", "--world", str(cases / "case_1"),
                           "--trajectory", str(cases / "case_1"), "--out", str(out), "--no-progress"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("spatia: error: depth model depth-anything/"), proc.stderr
    assert "HF_HUB_OFFLINE" in lines[0] and "hf download" in lines[0] and "update.depth_checkpoint" in lines[0]
    assert not (tmp_path / "new").exists()


def test_failed_run_keeps_an_existing_folder_as_it_was(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["generate", "--world", "/no/such/world", "--out", str(out), "--no-progress"]) == 2
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    from spatia_core.outputs import staged_folder

    with pytest.raises(RuntimeError), staged_folder(out) as staging:
        (staging / "summary.json").write_text("{}")
        raise RuntimeError("fails half way")
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with staged_folder(out) as staging:
        (staging / "summary.json").write_text("{}")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "summary.json"]


def test_output_camera_is_the_worlds_unless_set():
    from spatia_core import SpatiaConfig
    from spatia_core.geometry import Intrinsics
    from spatia_core.world import make_intrinsics

    world, cfg = Intrinsics.from_normalized(0.82, 1.46, 0.5, 0.5, 1248, 704), SpatiaConfig()
    assert make_intrinsics(cfg, world) == world
    assert make_intrinsics(cfg) == Intrinsics.from_fov(70.0, 640, 480)  # no world camera: the fallback
    assert make_intrinsics(cfg.with_overrides({"camera.width": 624}), world) == world.resized(624, 352)
    assert make_intrinsics(cfg.with_overrides({"camera.fov_deg": 60.0}), world) == Intrinsics.from_fov(60.0, 1248, 704)
    explicit = cfg.with_overrides({"camera.width": 640, "camera.height": 480, "camera.fov_deg": 70.0})
    assert make_intrinsics(explicit, world) == Intrinsics.from_fov(70.0, 640, 480)


def test_official_case_with_the_spatia_backend_runs_release_rounds(cases, tiny_depth, tmp_path):
    """The diffusion backend (a tiny random checkpoint) on case 3: the release layout (a 121-frame
    first round whose frame 0 is the case's image), and generated.mp4 is the release's output video
    (all rounds' latents decoded at once), cut to the trajectory."""
    from spatia_core.generators.spatia.tiny import save_tiny_checkpoint

    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", seed=0)
    case, out = cases / "case_3", tmp_path / "out"
    assert main(["generate", "--world", str(case), "--trajectory", str(case), "--out", str(out), "--frames", "5",
                 "--width", "64", "--height", "32", "--no-progress",
                 "--set", f"update.depth_checkpoint={tiny_depth}", "--set", "update.depth=rendered",
                 "--set", "generator.backend=spatia", "--set", f"generator.checkpoint={ckpt}",
                 "--set", "generator.steps=1", "--set", "generator.guidance_scale=1"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (summary["backend"], summary["layout"], summary["retrieval"]) == ("spatia", "release", "release")
    assert [c["frames"] for c in summary["clips"]] == [4]  # poses 1..4; pose 0 is the image
    video = read_video(out / "generated.mp4")
    assert video.shape == (5, 32, 64, 3)
