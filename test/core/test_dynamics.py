"""Dynamic masks: the weight-free residual detector and the SAM2 video-predictor adapter."""

import sys

import cv2
import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)
import torch

from spatia_core import SpatiaConfig
from spatia_core.dynamics import make_dynamics
from spatia_core.dynamics.residual import ResidualDynamics
from spatia_core.errors import BackendUnavailableError, InputError
from spatia_core.geometry import Intrinsics

K = Intrinsics.from_fov(70.0, 64, 48)
H, W = K.height, K.width


def wall_clip(t: int, obj_x: list[int] | None = None, shift_px: int = 0):
    """T frames of a textured wall 3 m ahead (the camera moves sideways so that the wall moves
    ``shift_px`` pixels per frame), with an 8x8 px object 1.5 m ahead at column ``obj_x[i]`` of
    frame i. Returns frames, depth, poses."""
    rng = np.random.default_rng(0)
    tex = rng.integers(40, 200, (H, 4 * W, 3), dtype=np.uint8)
    frames, depth, poses = [], [], []
    for i in range(t):
        pose = np.eye(4)
        pose[0, 3] = i * shift_px * 3.0 / K.fx
        dx = i * shift_px
        f = tex[:, W + dx : 2 * W + dx].copy()
        d = np.full((H, W), 3.0, np.float32)
        if obj_x is not None:
            x = obj_x[i]
            f[20:28, x : x + 8] = (250, 20, 20)
            d[20:28, x : x + 8] = 1.5
        frames.append(f)
        depth.append(d)
        poses.append(pose)
    return np.stack(frames), np.stack(depth), np.stack(poses)


def empty_scene(t: int) -> dict:
    return {"rgb": np.zeros((t, H, W, 3), np.uint8), "depth": np.zeros((t, H, W), np.float32),
            "mask": np.zeros((t, H, W), bool)}


def test_residual_flags_covered_pixels_that_disagree_with_the_memory():
    frames, depth, poses = wall_clip(2)
    scene = {"rgb": frames.copy(), "depth": depth.copy(), "mask": np.ones((2, H, W), bool)}
    det = ResidualDynamics(dilate=0)
    assert det.masks(frames, scene, poses, K, depth=depth) is None  # agrees everywhere
    moved = frames.copy()
    moved[1, 10:20, 30:40] = (255, 0, 255)  # texture is in [40, 200]: a mean difference >= 50
    closer = depth.copy()
    closer[0, 30:40, 5:15] = 1.0  # a thing in front of the wall, same colour
    dyn = det.masks(moved, scene, poses, K, depth=closer)
    assert dyn.shape == (2, H, W) and dyn.dtype == bool
    assert dyn[1, 10:20, 30:40].all() and dyn[0, 30:40, 5:15].all()
    assert dyn.sum() == 200  # nothing else


def test_residual_catches_a_moving_object_over_uncovered_pixels():
    xs = [4, 16, 28, 40, 52]
    frames, depth, poses = wall_clip(5, xs, shift_px=1)
    det = ResidualDynamics(dilate=1)
    dyn = det.masks(frames, empty_scene(5), poses, K, depth=depth)
    for i, x in enumerate(xs):
        assert dyn[i, 20:28, x : x + 8].all(), i
    obj = np.zeros_like(dyn)
    for i, x in enumerate(xs):
        obj[i, 19:29, x - 1 : x + 9] = True
    assert not (dyn & ~obj).any()  # the static wall is kept


def test_residual_static_scene_with_camera_motion_is_static():
    frames, depth, poses = wall_clip(4, shift_px=2)
    assert ResidualDynamics().masks(frames, empty_scene(4), poses, K, depth=depth) is None


def test_residual_carries_the_previous_clip_and_reset_forgets_it():
    frames, depth, poses = wall_clip(3, [10, 30, 50])
    det = ResidualDynamics(dilate=0)
    det.masks(frames[:2], empty_scene(2), poses[:2], K, depth=depth[:2])
    dyn = det.masks(frames[2:], empty_scene(1), poses[2:], K, depth=depth[2:])  # one-frame clip
    assert dyn is not None and dyn[0, 20:28, 50:58].all()
    det.reset()
    assert det.masks(frames[2:], empty_scene(1), poses[2:], K, depth=depth[2:]) is None  # no evidence left


def test_residual_rejects_bad_input_and_factory_reads_config():
    frames, depth, poses = wall_clip(2)
    det = ResidualDynamics()
    with pytest.raises(InputError):
        det.masks(frames, empty_scene(2), poses, K, depth=depth[:1])
    with pytest.raises(InputError):
        ResidualDynamics(window=0)
    cfg = SpatiaConfig().with_overrides({"update.dynamics": "residual", "update.residual_color": 12.5,
                                         "update.residual_window": 3})
    src = make_dynamics(cfg.update)
    assert isinstance(src, ResidualDynamics) and src.color_threshold == 12.5 and src.window == 3
    with pytest.raises(InputError):
        SpatiaConfig().with_overrides({"update.residual_window": 0})


# -- SAM2 (packaged tiny config, random weights; CPU is slow, so frames are few and tiny) ---------
sam2 = _prereq.require_module("sam2", "sam2 is not installed (requirements-models.txt)")
from spatia_core.dynamics.sam2 import Sam2Dynamics  # noqa: E402

TINY = "configs/sam2.1/sam2.1_hiera_t.yaml"


def test_sam2_tracks_mask_and_box_prompts_across_clips(tmp_path):
    torch.manual_seed(0)
    prompt = np.zeros((48, 64), np.uint8)
    prompt[10:30, 20:44] = 255
    cv2.imwrite(str(tmp_path / "mask.png"), prompt)
    det = Sam2Dynamics(TINY, None, mask=tmp_path / "mask.png", boxes=[[2, 2, 12, 12]], image_size=256,
                       allow_random_weights=True)
    frames = np.random.default_rng(0).integers(0, 255, (2, 48, 64, 3), dtype=np.uint8)
    out = det.masks(frames)
    assert out.shape == (2, 48, 64) and out.dtype == bool
    # the mask prompt is SAM2's output on its own frame (use_mask_input_as_output_without_sam)
    assert (out[0] | ~(prompt > 0)).all()
    carried = set(det._carry)
    assert carried <= {1, 2}
    out2 = det.masks(frames[:1])  # the next clip is prompted from the last masks
    assert (out2 is None) == (not carried)
    if out2 is not None:
        assert out2.shape == (1, 48, 64) and out2.dtype == bool
    det.reset()
    assert not det._carry


def test_sam2_loads_a_checkpoint_and_reports_missing_things(tmp_path, monkeypatch):
    from sam2.build_sam import build_sam2_video_predictor

    torch.manual_seed(1)
    ref = build_sam2_video_predictor(TINY, None, device="cpu")
    ckpt = tmp_path / "sam2_tiny_random.pt"
    torch.save({"model": ref.state_dict()}, ckpt)
    det = Sam2Dynamics(TINY, str(ckpt))
    for (name, a), b in zip(ref.state_dict().items(), det.predictor.state_dict().values()):
        assert torch.equal(a, b), name
    cfg = SpatiaConfig().with_overrides({"update.dynamics": "sam2", "update.sam2_checkpoint": str(ckpt)})
    assert isinstance(make_dynamics(cfg.update), Sam2Dynamics)

    with pytest.raises(BackendUnavailableError, match="checkpoint not found"):
        Sam2Dynamics(TINY, str(tmp_path / "missing.pt"))
    with pytest.raises(BackendUnavailableError, match="sam2_checkpoint"):
        make_dynamics(SpatiaConfig().with_overrides({"update.dynamics": "sam2"}).update)
    monkeypatch.setitem(sys.modules, "sam2.build_sam", None)  # as if sam2 were not installed
    with pytest.raises(BackendUnavailableError, match="sam2 package"):
        Sam2Dynamics(TINY, str(ckpt))
