"""Padding frames (spatia_core.captures.padding): a flat border that shows no scene is found,
kept out of the memory and out of the scores; photos without one are left alone."""

import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)

from spatia_core.captures.build import BuildSettings, build_memory
from spatia_core.captures.padding import box_mask, content_box, crop
from spatia_core.captures.views import View
from spatia_core.geometry import Intrinsics

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # see test/conftest.py


def framed(h=60, w=80, sides=(5, 5, 6, 7), colour=255, seed=0):
    """A textured image inside a flat frame of widths (top, bottom, left, right), with one
    blended pixel between them as registered RGB-D images have."""
    rng = np.random.default_rng(seed)
    img = rng.integers(20, 200, (h, w, 3), dtype=np.uint8)
    t, b, l, r = sides
    img[t, :] = img[h - b - 1, :] = (img[t, :] // 2 + colour // 2)  # the blended edge
    img[:, l] = img[:, w - r - 1] = (img[:, l] // 2 + colour // 2)
    img[:t], img[h - b:], img[:, :l], img[:, w - r:] = colour, colour, colour, colour
    return img


def test_frame_found_with_its_blended_edge():
    assert content_box(framed()) == (7, 53, 8, 71)  # 5/5/6/7 px of white, then 2 px more for the blend
    assert content_box(framed(colour=0, sides=(1, 2, 3, 4))) == (3, 56, 5, 74)  # black frames too
    assert content_box(framed(), margin=0) == (5, 55, 6, 73)


def test_no_frame_no_box():
    img = framed()
    assert content_box(np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)) is None
    sky = img.copy()
    sky[:, :7] = sky[:, -8:] = 90  # white only at the top and bottom (sky, snow): not a frame
    assert content_box(sky) is None
    assert content_box(np.full((60, 80, 3), 255, np.uint8)) is None  # flat: no image inside
    assert content_box(framed(sides=(25, 25, 6, 7))) is None  # keeps less than half: not a frame


def test_mask_and_crop_agree():
    box = content_box(framed())
    m = box_mask((60, 80), box)
    assert m.sum() == (box[1] - box[0]) * (box[3] - box[2]) and crop(framed(), box).shape == (46, 63, 3)
    assert box_mask((4, 5), None).all() and crop(np.zeros((4, 5)), None).shape == (4, 5)


def test_frame_pixels_enter_neither_memory_nor_completed_depth():
    """Depth everywhere (a sweep matches a flat border at any depth): nothing of the frame is fused,
    and the layer's completed depth (the rendering's fallback) stays out of the frame."""
    img = framed()
    k = Intrinsics(60.0, 60.0, 40.0, 30.0, 80, 60)
    view = View(img, np.eye(4), k, "0", content_box=content_box(img))
    depth = np.full((60, 80), 2.0, np.float32)
    built = build_memory([view], [depth], BuildSettings(consistency=False, keep_unverified=True, complete=True))
    inside = box_mask((60, 80), view.content_box)
    layer = built.layers[0]
    assert (layer.depth[~inside] == 0).all() and (layer.depth[inside] > 0).all()
    assert (layer.completed_depth()[~inside] == 0).all()
    assert len(built.memory) > 0 and not (built.memory.rgb >= 250 / 255).all(dim=1).any()  # no white voxel


def test_dining_held_out_views_beat_the_nearest_photo(data_dir, tmp_path):
    """The real RGB-D set with a 5-7 px white frame (slambook2 dining): held out 2 of 5 frames,
    the memory from the other 3 beats the nearest photo on PSNR, SSIM and LPIPS inside the frame."""
    import json

    from spatia_core.cli import main
    from spatia_core.evaluation.metrics import LPIPS

    if not LPIPS().available():
        _prereq.missing("LPIPS weights not fetched (scripts/fetch_eval_weights.py)")
    out = tmp_path / "eval"
    assert main(["eval", "--world", str(data_dir / "rgbd_dining_slambook2"), "--holdout", "ids:1,3",
                 "--set", "world.intrinsics=[518.0,519.0,325.5,253.5]", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert [v["content_box"] for v in res["views"]] == [[7, 473, 8, 631]] * 2
    m, b = res["mean"]["memory"], res["mean"]["nearest_photo"]
    assert m["psnr"] > b["psnr"] + 2 and m["ssim"] > b["ssim"] + 0.05 and m["lpips"] < b["lpips"] - 0.05
    assert res["mean"]["train_psnr"] > 25
