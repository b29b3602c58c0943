"""Captures on the real Strecha set (8 calibrated photos, no depth), downscaled to stay fast:
the depth range from the data, `spatia eval --world` against the nearest photo, and
`spatia generate --world` detecting the capture."""

import json

import numpy as np
import pytest

from spatia_core.captures import read_capture
from spatia_core.captures.scale import depth_range_from_images
from spatia_core.captures.views import views_from_capture
from spatia_core.cli import main

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # see test/conftest.py


@pytest.fixture
def strecha(data_dir):
    return data_dir / "strecha_herzjesu_p8"


def test_depth_range_from_triangulated_matches(strecha):
    views = views_from_capture(read_capture(strecha), 384)
    (lo, hi), pts = depth_range_from_images([v.rgb for v in views], [(v.pose, v.intrinsics) for v in views])
    # the facade stands 9-20 m from the cameras (their centres are 2.5 m apart along it)
    assert len(pts) > 300 and 2.0 < lo < 9.0 and 20.0 < hi < 80.0
    d = np.linalg.norm(pts - views[3].pose[:3, 3], axis=1)
    assert 8.0 < np.median(d) < 20.0


def test_eval_world_beats_the_nearest_photo(strecha, tmp_path, capsys):
    out = tmp_path / "eval"
    assert main(["eval", "--world", str(strecha), "--holdout", "every:4@2", "--size", "160", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert (out / "heldout.png").is_file() and "nearest photo" in (out / "report.md").read_text()
    assert res["held_out"] == ["0002", "0006"] and res["memory_info"]["views"] == 6  # no held-out view in the memory
    m, b = res["mean"]["memory"], res["mean"]["nearest_photo"]
    assert res["mean"]["coverage"] > 0.4
    assert m["psnr"] > b["psnr"] + 3 and m["ssim"] > b["ssim"]
    assert m["psnr_covered"] > m["psnr"] - 1 and 0 < m["ssim_covered"] <= 1


def test_generate_on_a_capture_world(strecha, tmp_path):
    out = tmp_path / "gen"
    assert main(["generate", "--world", str(strecha), "--trajectory", "orbit", "--frames", "2", "--out", str(out),
                 "--set", "world.capture_size=128", "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world"] == "capture" and summary["resolution"] == [128, 85]
    assert summary["memory"]["voxels"] > 1000 and summary["memory"]["voxel_size"] > 0.01  # sized from the data
    assert np.mean([c["coverage"] for c in summary["clips"]]) > 0.3
