"""View-ordered compositing of a capture's views (spatia_core.captures.layers): the nearest photo's
own points first, the memory over them only where clearly nearer, the fallback only in holes."""

import cv2
import numpy as np
import torch

from spatia_core.captures.build import BuildSettings, build_memory, render_view
from spatia_core.captures.layers import composite, render_ordered
from spatia_core.captures.views import View, nearest_order
from spatia_core.geometry import Intrinsics, look_at
from spatia_core.render import SceneProjection

K = Intrinsics(60.0, 60.0, 31.5, 23.5, 64, 48)


def _wall_views(gains=(1.0, 0.8, 0.9)):
    """Three photos of a textured wall 4 m ahead (x = 4), exact depth, each with its own exposure."""
    rng = np.random.default_rng(3)
    # wall colour on a 1 cm grid, y, z in [-2, 2): smooth blobs of ~20 cm, several pixels wide
    texture = cv2.resize(rng.uniform(0.2, 0.9, (20, 20, 3)), (400, 400), interpolation=cv2.INTER_CUBIC)
    views, depths = [], []
    for y, gain in zip((0.0, 0.15, -0.15), gains):
        pose = look_at([0.0, y, 0.0], [4.0, y, 0.0])
        v, u = np.mgrid[0:48, 0:64]
        ray = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones_like(u, float)], -1) @ pose[:3, :3].T
        t = (4.0 - pose[0, 3]) / ray[..., 0]
        hit = pose[:3, 3] + ray * t[..., None]
        iy = np.clip(((hit[..., 1] + 2) * 100).astype(int), 0, 399)
        iz = np.clip(((hit[..., 2] + 2) * 100).astype(int), 0, 399)
        rgb = (np.clip(texture[iy, iz] * gain, 0, 1) * 255 + 0.5).astype(np.uint8)
        views.append(View(rgb, pose, K, f"v{len(views)}"))
        depths.append((t * (ray @ pose[:3, 2])).astype(np.float32))  # z-depth along the optical axis
    return views, depths


def _proj(depth, value):
    d = torch.tensor(depth, dtype=torch.float32)[None]
    return SceneProjection(rgb=torch.full((*d.shape, 3), float(value)), depth=d, mask=d > 0,
                           index=torch.zeros(d.shape, dtype=torch.int64))


def test_composite_draws_over_only_where_clearly_nearer():
    base = _proj([[5.0, 5.0, 5.0, 0.0]], 0.25)
    over = _proj([[4.875, 4.5, 6.0, 7.0]], 0.75)  # 2.5 % nearer, 10 % nearer, farther, into a hole
    out = composite(base, over, 0.03)
    assert out.rgb[0, 0, :, 0].tolist() == [0.25, 0.75, 0.25, 0.75]
    assert out.depth[0, 0].tolist() == [5.0, 4.5, 5.0, 7.0] and bool(out.mask.all())


def test_nearest_order_by_distance_and_angle():
    here = look_at([0, 0, 0], [4, 0, 0])
    poses = [look_at([0, 1.0, 0], [4, 1.0, 0]), look_at([0, 0.2, 0], [0, 4, 0]), look_at([0, 0.3, 0], [4, 0.3, 0])]
    # the second stands nearer than the first but looks 90 degrees away: with a 4 m scene it comes last
    assert nearest_order(poses, here, 4.0) == [2, 0, 1]
    assert nearest_order(poses, here, 0.0) == [1, 2, 0]


def test_training_view_is_reproduced_by_its_own_layer():
    views, depths = _wall_views()
    settings = BuildSettings(fill="none", keep_unverified=True)
    built = build_memory(views, depths, settings)
    assert len(built.layers) == 3 and built.info["scene_depth"] > 3.5
    own = render_view(built, K, views[0].pose, settings)
    alone = render_view(built, K, views[0].pose, BuildSettings(fill="none", layers=0))
    covered = own["mask"]
    assert covered.mean() > 0.95
    # its own points, at its own pose, give back the photo exactly; the memory mixes the exposures
    assert np.array_equal(own["rgb"][covered], views[0].rgb[covered])
    err_alone = np.abs(alone["rgb"].astype(int) - views[0].rgb)[alone["mask"]].mean()
    assert err_alone > 2.0


def test_memory_occludes_the_layer_and_fallback_fills_only_holes():
    views, depths = _wall_views()
    d1 = depths[1].copy()
    d1[18:30, 26:38] = 2.0  # an object 2 m ahead, seen by view 1 only
    depths = [depths[0], d1, depths[2]]
    depths[0] = depths[0].copy()
    depths[0][:, :8] = 0.0  # view 0 has no depth on its left edge
    settings = BuildSettings(fill="none", keep_unverified=True, consistency=False, fallback=True)
    built = build_memory(views, depths, settings)
    pose = views[0].pose
    out, info = render_ordered(built.memory, built.layers, K, pose, built.info["scene_depth"], 1, 0.03, True)
    assert info["order"] == [0] and info["layer_px"] > 0 and info["memory_px"] > 0
    dep = out.depth[0].numpy()
    assert np.median(dep[dep > 0]) > 3.5 and (dep[(dep > 0) & (dep < 2.5)]).size > 50  # the object is drawn
    # the fallback had nothing to draw: the memory covers view 0's left edge from the other views
    assert info["fallback_px"] == 0
    # with one view only, its holes are filled from its own completed depth, nowhere else
    solo = build_memory(views[:1], depths[:1], settings)
    out, info = render_ordered(solo.memory, solo.layers, K, pose, solo.info["scene_depth"], 1, 0.03, True)
    assert info["memory_px"] == 0 and info["fallback_px"] >= 8 * 48 * 0.9
    assert bool(out.mask[0, :, 8:].all())

