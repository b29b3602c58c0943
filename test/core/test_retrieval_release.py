"""The release's reference selection (spatia_core.retrieval_release) vs the release's own code.

The oracle is the official release, loaded by path: ``utils/frustum_culling.py`` as a module
(its Triton kernel is absent on the CPU; ``frustum_frontmost_mask_triton`` then falls back to the
torch ``frustum_frontmost_mask``, which follows the same rules), and from ``inference.py`` the
functions ``select_reference_frames`` and ``get_round_range``, compiled from its source alone
(the script's heavy imports are not needed: Open3D's reader and the pipeline are stubbed).
"""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)
import torch

from spatia_core.geometry import look_at
from spatia_core.retrieval_release import (
    frontmost_point_masks,
    match_masks_release,
    release_candidate_indices,
    release_stride,
    release_target_indices,
    select_references_release,
)

RELEASE = Path(__file__).resolve().parents[3] / "shared" / "reference" / "spatia_release"
H, W = 48, 64
NORM_K = (0.81, 1.07, 0.493, 0.517)  # normalised [fx fy cx cy], as the release reads them
PIXEL_K = [NORM_K[0] * W, NORM_K[1] * H, NORM_K[2] * W, NORM_K[3] * H]  # the release's product


def _require_release() -> Path:
    if not RELEASE.is_dir():
        msg = f"official Spatia release not found at {RELEASE} (it lives in ../shared/reference beside the repo)"
        _prereq.missing(msg)
    return RELEASE


@pytest.fixture(scope="module")
def culling():
    """The release's ``utils/frustum_culling.py``."""
    path = _require_release() / "utils" / "frustum_culling.py"
    spec = importlib.util.spec_from_file_location("spatia_release_frustum_culling", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def inference(culling):
    """``select_reference_frames`` and ``get_round_range`` compiled from the release's inference.py."""
    source = (_require_release() / "inference.py").read_text()
    wanted = {"select_reference_frames", "get_round_range"}
    funcs = [n for n in ast.parse(source).body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    assert {f.name for f in funcs} == wanted, "inference.py no longer defines the functions compared here"
    namespace = {
        "np": np, "torch": torch, "shutil": shutil, "o3d": None,
        "frustum_frontmost_mask_triton": culling.frustum_frontmost_mask_triton,
        "find_mask_matches": culling.find_mask_matches,
    }
    exec(compile(ast.Module(body=funcs, type_ignores=[]), str(RELEASE / "inference.py"), "exec"), namespace)
    return namespace


class _Frame:
    """A stand-in reference frame: the release saves each pick as ``{rank:02d}-{count}.jpg``."""

    def __init__(self, index: int, saved: list):
        self.index, self._saved = index, saved

    def save(self, path):
        self._saved.append((self.index, int(Path(path).stem.split("-")[1])))


def _release_selection(inference, tmp_path, points, colours, hist_c2w, target_c2w, k, batch):
    """The release's ``select_reference_frames``: [(history_index, shared_count)] in its order."""
    cloud = types.SimpleNamespace(points=points, colors=colours)
    inference["o3d"] = types.SimpleNamespace(io=types.SimpleNamespace(read_point_cloud=lambda path: cloud))
    saved: list = []
    args = types.SimpleNamespace(width=W, height=H, point_retrieval_batch_size=batch, ref_num=k)
    frames = inference["select_reference_frames"](
        pipe=types.SimpleNamespace(device="cpu"), points_path="memory.ply",
        all_exist_cam_w2cs=np.linalg.inv(hist_c2w).astype(np.float32),
        new_cam_w2c=np.linalg.inv(target_c2w).astype(np.float32),
        intrinsic=NORM_K, all_ref_frames=[_Frame(i, saved) for i in range(len(hist_c2w))],
        args=args, save_dir=tmp_path / "selected",
    )
    assert [f.index for f in frames] == [i for i, _ in saved]
    return saved


# -- scene ------------------------------------------------------------------------------------
def _scene(seed=0, n=30000):
    """Points on a floor, two walls and an occluding box face, random colours, with exact
    duplicates (depth ties) and a few points almost on a camera's image plane."""
    rng = np.random.default_rng(seed)
    m = n // 4
    floor = np.c_[rng.uniform(-4, 4, (m, 2)), np.zeros(m)]
    wall_x = np.c_[np.full(m, 4.0), rng.uniform(-4, 4, m), rng.uniform(0, 3, m)]
    wall_y = np.c_[rng.uniform(-4, 4, m), np.full(m, 4.0), rng.uniform(0, 3, m)]
    box = np.c_[np.full(m, 1.5), rng.uniform(-0.6, 0.6, m), rng.uniform(0, 1.2, m)]
    pts = np.concatenate([floor, wall_x, wall_y, box])
    pts = np.concatenate([pts, pts[rng.choice(len(pts), 500, replace=False)]])  # exact ties
    # 0 < Z < float32 eps for the last camera: its depth is clamped, some land in the image
    near_plane = np.c_[np.full(20, 1e-8), rng.choice([0.0, 1e-10, -1e-10, 1e-3], (20, 2)) + [0.0, 1.0]]
    pts = np.concatenate([pts, near_plane])
    return pts, rng.uniform(0, 1, (len(pts), 3))


def _cameras():
    """c2w poses: views of the walls and the box, one looking away from everything (outside the
    room, facing out), one inside the room with most points behind it."""
    return np.stack([
        look_at([-2.0, 0.0, 1.0], [3.0, 0.2, 1.0]),
        look_at([-2.0, -1.0, 1.5], [4.0, 1.0, 1.0]),
        look_at([-3.0, -3.0, 2.0], [4.0, 4.0, 0.5]),
        look_at([0.0, -2.5, 1.2], [1.0, 4.0, 1.0]),
        look_at([-1.0, 1.0, 2.5], [4.0, 0.0, 0.0]),
        look_at([-9.0, 0.0, 1.0], [-15.0, 0.0, 1.0]),  # looking away
        look_at([3.0, 3.0, 1.0], [3.5, 3.8, 1.0]),  # close to the corner: most points behind it
        look_at([-3.5, 2.0, 0.5], [4.0, -2.0, 2.0]),
        look_at([2.5, -3.0, 1.0], [2.5, 4.0, 1.5]),
        look_at([0.0, 0.0, 1.0], [1.0, 0.0, 1.0]),  # the near-plane points are 1e-8 ahead
    ])


def _release_masks(culling, points, w2c):
    pts = torch.from_numpy(np.c_[points, np.zeros_like(points)].astype(np.float32))
    return culling.frustum_frontmost_mask_triton(
        pts, torch.as_tensor(w2c, dtype=torch.float32), torch.tensor(PIXEL_K, dtype=torch.float32), (H, W)
    ).numpy()


# -- masks ------------------------------------------------------------------------------------
def test_frontmost_masks_match_release(culling):
    points, _ = _scene()
    w2c = np.linalg.inv(_cameras()).astype(np.float32)
    expected = _release_masks(culling, points, w2c)
    # the torch kernel the CPU fallback ran, called directly, and the Triton entry agree here
    assert np.array_equal(expected, culling.frustum_frontmost_mask(
        torch.from_numpy(points.astype(np.float32)), torch.from_numpy(w2c),
        torch.tensor(PIXEL_K, dtype=torch.float32), (H, W)).numpy())
    for chunk in (1, 2, 4):
        got = frontmost_point_masks(points, w2c, PIXEL_K, H, W, camera_chunk=chunk)
        assert got.dtype == bool and got.shape == expected.shape
        assert np.array_equal(got, expected), f"camera_chunk={chunk}: {np.argwhere(got != expected)[:5]}"
    # (3, 4) extrinsics and per-camera intrinsics give the same
    assert np.array_equal(frontmost_point_masks(points, w2c[:, :3], np.tile(PIXEL_K, (len(w2c), 1)), H, W), expected)

    # the comparison is not vacuous: occlusion and depth ties happen, the away camera sees nothing
    counts = expected.sum(1)
    assert counts[5] == 0 and counts[[0, 1, 2, 3, 4, 7, 8, 9]].min() > 300
    assert expected[9, -20:].any() and not expected[9, -20:].all()
    cam = np.einsum("tij,nj->tni", w2c[:, :3, :3], points) + w2c[:, None, :3, 3]
    z = cam[..., 2]
    u, v = PIXEL_K[0] * cam[..., 0] / z + PIXEL_K[2], PIXEL_K[1] * cam[..., 1] / z + PIXEL_K[3]
    in_view = (z > 0) & (u > 0) & (u < W) & (v > 0) & (v < H)
    assert (in_view & ~expected).sum() > expected.sum(), "most points in view are hidden"
    assert (cam[6, :, 2] < 0).mean() > 0.5  # camera 6 has most points behind it
    dup = np.arange(len(points) - 520, len(points) - 20)
    orig = np.array([np.flatnonzero((points[:-520] == points[i]).all(1))[0] for i in dup[:50]])
    assert (expected[:, dup[:50]] & expected[:, orig]).any(), "no duplicate pair is front-most together"


def _mutant_masks(points, w2c, k, to_int, strict_ties=False):
    """A per-point z-buffer in the release's float32 arithmetic with a pluggable pixel rule."""
    cam = (torch.as_tensor(w2c) @ torch.cat([torch.as_tensor(points, dtype=torch.float32), torch.ones(len(points), 1)], 1).t())
    out = np.zeros((len(w2c), len(points)), bool)
    for t in range(len(w2c)):
        x, y, z = (cam[t, i].numpy() for i in range(3))
        u, v = to_int(k[0] * (x / z) + k[2]).astype(int), to_int(k[1] * (y / z) + k[3]).astype(int)
        ok = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        best = {}
        for i in np.flatnonzero(ok):
            best[(u[i], v[i])] = min(best.get((u[i], v[i]), np.inf), z[i])
        for i in np.flatnonzero(ok):
            zmin = np.float32(best[(u[i], v[i])])
            out[t, i] = z[i] == zmin if strict_ties else z[i] <= zmin + np.float32(1e-6)
    return out


def test_pixel_rule_and_ties_are_the_releases(culling):
    """A constructed case where truncation (the release), floor and rounding give different
    masks, and where the 1e-6 depth slack matters: a wrong rule would fail the comparison."""
    k = np.float32([10.0, 10.0, 0.0, 0.0])
    uvz = np.array([
        [-0.5, 0.5, 1.0],  # trunc -> column 0 (in), floor -> -1 (out)
        [0.5, 0.5, 2.0],  # behind the first one under trunc, visible under floor
        [1.6, 0.5, 1.0],  # trunc -> column 1 ...
        [1.2, 0.5, 3.0],  # ... hides this one; rounding would split them
        [5.5, 3.5, 1.0],  # exact tie with the next one
        [5.5, 3.5, 1.0],
        [5.2, 3.3, 1.0 + 5e-7],  # within 1e-6 of the pixel's nearest depth: still front-most
        [5.7, 3.8, 1.0 + 3e-6],  # beyond it: hidden
    ])
    points = np.c_[uvz[:, 0] / 10 * uvz[:, 2], uvz[:, 1] / 10 * uvz[:, 2], uvz[:, 2]]
    w2c = np.eye(4, dtype=np.float32)[None]
    with_k = torch.tensor(k)
    expected = culling.frustum_frontmost_mask(torch.from_numpy(points.astype(np.float32)), torch.from_numpy(w2c), with_k, (H, W)).numpy()
    assert expected[0].tolist() == [True, False, True, False, True, True, True, False]
    assert np.array_equal(frontmost_point_masks(points, w2c, k, H, W), expected)
    assert np.array_equal(_mutant_masks(points, w2c, k, np.trunc), expected)  # the mutant harness is faithful
    for wrong in (np.floor, np.rint):
        assert not np.array_equal(_mutant_masks(points, w2c, k, wrong), expected), wrong.__name__
    assert not np.array_equal(_mutant_masks(points, w2c, k, np.trunc, strict_ties=True), expected)


# -- matching ---------------------------------------------------------------------------------
def _masks_with_counts(counts):
    """bool (M, L) history and (S, L) target masks with |target s & history m| = counts[s][m]."""
    counts = np.asarray(counts)
    total = int(counts.sum())
    hist, tgt = np.zeros((counts.shape[1], total), bool), np.zeros((counts.shape[0], total), bool)
    start = 0
    for (s, m), c in np.ndenumerate(counts):
        tgt[s, start : start + c] = hist[m, start : start + c] = True
        start += c
    return hist, tgt


def _release_order(matches, hist, tgt, k):
    """inference.py's loop over find_mask_matches' dict, as in ``select_reference_frames``."""
    return [(int(h), int((hist[h] & tgt[t]).sum())) for t, h in matches.items() if h >= 0][:k]


def test_hungarian_not_greedy(culling):
    hist, tgt = _masks_with_counts([[100, 90], [95, 10]])
    a, b = torch.from_numpy(hist), torch.from_numpy(tgt)
    hungarian = _release_order(culling.find_mask_matches(a, b, method="hungarian"), hist, tgt, 7)
    greedy = _release_order(culling.find_mask_matches(a, b, method="independent"), hist, tgt, 7)
    assert hungarian == [(1, 90), (0, 95)] and greedy == [(0, 100), (0, 95)]
    assert match_masks_release(hist, tgt) == hungarian != greedy
    assert match_masks_release(hist, tgt, k=1) == hungarian[:1]


def test_matching_uses_bf16_counts_like_the_release(culling):
    """Exact counts prefer target 0 -> history 0 (514 + 0 > 512 + 1); in bfloat16 514 rounds to
    512 and the release picks the other assignment."""
    hist, tgt = _masks_with_counts([[514, 512], [1, 0]])
    expected = _release_order(culling.find_mask_matches(torch.from_numpy(hist), torch.from_numpy(tgt), method="hungarian"), hist, tgt, 7)
    assert expected == [(1, 512), (0, 1)]
    assert match_masks_release(hist, tgt) == expected
    assert match_masks_release(hist, tgt, bf16_costs=False) == [(0, 514), (1, 0)]


def _selection_cameras():
    """History cameras and targets; the first two targets both see most in common with history
    camera 0, so a greedy match would pick it twice; the last target sees nothing."""
    cams = _cameras()
    targets = np.stack([look_at([-2.1, 0.1, 1.1], [3.0, 0.0, 1.0]), look_at([-1.9, -0.2, 1.0], [3.0, 0.4, 1.1]), cams[8], cams[5]])
    return cams[[0, 2, 3, 4, 5, 6, 7, 8]], targets


@pytest.mark.parametrize("k, batch", [(7, 10_000_000), (3, 10_000_000), (7, 9973)])
def test_selection_matches_release(culling, inference, tmp_path, k, batch):
    points, colours = _scene(seed=1)
    hist_c2w, target_c2w = _selection_cameras()
    expected = _release_selection(inference, tmp_path, points, colours, hist_c2w, target_c2w, k, batch)
    got = select_references_release(points, hist_c2w, target_c2w, PIXEL_K, H, W, k=k, point_batch=batch)
    assert got == expected
    assert len(got) == min(k, len(target_c2w)) and len({i for i, _ in got}) == len(got)
    if k == 7 and batch == 10_000_000:  # not vacuous: greedy would repeat a camera, the last pair shares nothing
        greedy = culling.find_mask_matches(torch.from_numpy(_release_masks(culling, points, np.linalg.inv(hist_c2w).astype(np.float32))),
                                           torch.from_numpy(_release_masks(culling, points, np.linalg.inv(target_c2w).astype(np.float32))))
        assert greedy[0] == greedy[1] and got[-1][1] == 0


def test_selection_edge_cases():
    points, _ = _scene()
    cams = _cameras()
    assert select_references_release(points, cams[:0], cams[:2], PIXEL_K, H, W) == []
    assert select_references_release(points, cams[:3], cams[:2], PIXEL_K, H, W, k=0) == []
    # more targets than history cameras (the release raises): each history camera used once
    picks = select_references_release(points, cams[:2], cams[:4], PIXEL_K, H, W)
    assert len(picks) == 2 and {i for i, _ in picks} == {0, 1}


# -- which frames -----------------------------------------------------------------------------
def test_frame_choice_follows_release_slicing():
    """inference.py: ``ref_hist_stride = max(1, int(round(fps / ref_hist_fps)))``,
    ``all_hist_frames[:-hist_frames][::ref_hist_stride]``, ``round_extrinsic[::ref_stride]``."""
    assert (release_stride(24, 6), release_stride(24, 2)) == (max(1, int(round(24 / 6))), max(1, int(round(24 / 2)))) == (4, 12)
    assert release_stride(24, 100) == 1
    for num_past in (0, 5, 9, 10, 121, 193):
        assert release_candidate_indices(num_past, 9, 4) == list(range(num_past))[:-9][::4]
    for n in (0, 1, 12, 13, 81):
        assert release_target_indices(n, 12) == list(range(n))[::12]


def test_candidates_are_the_release_history_cameras(inference):
    """Over the release's round schedule (``get_round_range``) the candidate frames are the
    cameras it matches, ``all_extrinsics[:round_start_idx][::ref_hist_stride]``."""
    past = 121  # frames after the first round
    for round_idx in (1, 2, 3):
        start, end, target = inference["get_round_range"](round_idx, 400, 121, 81, 9)
        assert past == start + 9
        assert release_candidate_indices(past, 9, 4) == list(range(400))[:start][::4]
        assert len(release_target_indices(target, 12)) == 7
        past += end - start - 9
