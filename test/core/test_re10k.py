"""RealEstate10K clips with frames as captures: a clip rendered from the built-in room at known
poses and written in the RE10K text format reads back exactly, becomes a world whose multi-view
depth matches the room, and bad clips give one clear error each."""

import cv2
import numpy as np
import pytest

from spatia_core.captures import detect_format, read_capture
from spatia_core.captures.re10k import read_re10k_clip
from spatia_core.config import WorldConfig
from spatia_core.errors import FileFormatError
from spatia_core.geometry import Intrinsics, invert_pose
from spatia_core.memory import SpatialMemory
from spatia_core.render import render_memory
from spatia_core.worlds import resolve_source
from spatia_core.worlds.procedural import make_room

pytestmark = pytest.mark.usefixtures("torch_one_thread")  # see test/conftest.py

W, H = 160, 120
K = Intrinsics(0.72 * W, 0.96 * H, 0.5 * W, 0.5 * H, W, H)  # exact in the normalised form
STAMPS = [1000, 34366, 67733, 101100]


@pytest.fixture(scope="module")
def room_clip(tmp_path_factory):
    """Four frames of the built-in room 12 cm apart sideways: (folder, poses, rendered depths)."""
    scene = make_room(seed=0, spacing=0.01)
    mem = SpatialMemory(voxel_size=0.01)
    mem.insert_points(scene.points, scene.colors)
    poses = np.stack([scene.start_pose.copy() for _ in STAMPS])
    for i in range(len(STAMPS)):
        poses[i, :3, 3] += (i - 1.5) * 0.12 * poses[i, :3, 0]
    out = render_memory(mem, K, poses, compile=False).numpy()
    root = tmp_path_factory.mktemp("clip")
    (root / "frames").mkdir()
    lines = ["https://www.youtube.com/watch?v=room"]
    for t, pose, rgb in zip(STAMPS, poses, out["rgb"]):
        cv2.imwrite(str(root / "frames" / f"{t}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        w2c = invert_pose(pose)[:3]
        nums = [t, *K.normalized(), 0, 0, *w2c.reshape(-1)]
        lines.append(" ".join(repr(float(v)) if i else str(v) for i, v in enumerate(nums)))
    (root / "cameras.txt").write_text("\n".join(lines) + "\n")
    depth = np.where(out["mask"], out["depth"], 0.0)
    return root, poses, depth


def test_clip_reads_back_poses_and_intrinsics(room_clip):
    root, poses, _ = room_clip
    assert detect_format(root) == "re10k"
    assert resolve_source(WorldConfig(source="auto", path=str(root))) == "capture"
    cap = read_capture(root)
    assert cap.format == "re10k" and not cap.metric and len(cap) == 4
    assert [i.name for i in cap.images] == [str(t) for t in STAMPS]
    for img, pose in zip(cap.images, poses):
        np.testing.assert_allclose(img.pose, pose, atol=1e-12)
        assert img.intrinsics.width == W and img.distortion == ()
        np.testing.assert_allclose([img.intrinsics.fx, img.intrinsics.fy, img.intrinsics.cx, img.intrinsics.cy],
                                   [K.fx, K.fy, K.cx, K.cy], rtol=1e-15)


def test_clip_frames_by_order_and_camera_file_by_format(room_clip, tmp_path):
    """Frames not named by timestamps pair with the camera lines in sorted order; a camera file
    with another name is found by its content."""
    root, poses, _ = room_clip
    (tmp_path / "images").mkdir()
    for i, t in enumerate(STAMPS):
        (tmp_path / "images" / f"frame_{i}.png").write_bytes((root / "frames" / f"{t}.png").read_bytes())
    (tmp_path / "0bf152ef84195293.txt").write_text((root / "cameras.txt").read_text())
    cap = read_re10k_clip(tmp_path)
    assert [i.path.name for i in cap.images] == [f"frame_{i}.png" for i in range(4)]
    np.testing.assert_allclose(cap.images[2].pose, poses[2], atol=1e-12)


def test_clip_world_depth_from_multiview_stereo(room_clip):
    """The clip as a world: plane-sweep depth of the frames against the room's rendered depth."""
    from spatia_core.captures.build import BuildSettings
    from spatia_core.captures.world import capture_views_and_depths

    root, _, truth = room_clip
    settings = BuildSettings(mvs_size=W)
    _, views, depths, (near, far) = capture_views_and_depths(str(root), W, settings)
    assert near < 1.0 and far > 4.0  # the room is 1.5-4 m deep from these views
    est, gt = depths[1], truth[1]
    ok = (est > 0) & (gt > 0)
    err = np.abs(est[ok] - gt[ok]) / gt[ok]
    print(f"RE10K room clip: depth on {ok.mean():.2f} of pixels, median rel error {np.median(err):.4f}")
    assert ok.mean() > 0.3 and np.median(err) < 0.05


def _clip(tmp_path, lines, frames=STAMPS):
    (tmp_path / "frames").mkdir()
    for t in frames:
        cv2.imwrite(str(tmp_path / "frames" / f"{t}.png"), np.zeros((H, W, 3), np.uint8))
    (tmp_path / "cameras.txt").write_text("\n".join(["https://example.com/v", *lines]) + "\n")
    return tmp_path


def _line(t, **change):
    nums = [str(t), "0.72", "0.96", "0.5", "0.5", "0", "0", "1", "0", "0", "0", "0", "1", "0", "0", "0", "0", "1", "0"]
    for col, value in change.items():
        nums[int(col[1:])] = value
    return " ".join(nums)


@pytest.mark.parametrize("lines, frames, message", [
    ([_line(t) for t in STAMPS[:3]] + [_line(STAMPS[3])[:-2]], STAMPS, r"cameras.txt:5: expected 19 numbers .* got 18"),
    ([_line(t) for t in STAMPS[:3]] + [_line(STAMPS[3], c9="zero")], STAMPS, r"cameras.txt:5: expected numbers"),
    ([_line(STAMPS[0], c10="nan")] + [_line(t) for t in STAMPS[1:]], STAMPS,
     r"cameras.txt:2: matrix contains NaN or inf"),
    ([_line(STAMPS[0], c0="inf")] + [_line(t) for t in STAMPS[1:]], STAMPS, r"cameras.txt:2: .* must be finite"),
    ([_line(t) for t in STAMPS], STAMPS[:3], r"1 of 4 camera lines of cameras.txt have no frame .* timestamp 101100"),
    ([_line(t) for t in STAMPS[:3]], STAMPS, r"1 frame\(s\) have no camera line in cameras.txt, e.g. 101100.png"),
], ids=["columns", "non_numeric", "non_finite_pose", "non_finite_timestamp", "missing_frame", "frame_without_line"])
def test_bad_clips_one_clear_error(tmp_path, lines, frames, message):
    root = _clip(tmp_path, lines, frames)
    with pytest.raises(FileFormatError, match=message):
        read_re10k_clip(root)


def test_clip_count_mismatch_and_missing_parts(tmp_path):
    root = _clip(tmp_path, [_line(t) for t in STAMPS[:3]], frames=[])
    for i in range(4):
        cv2.imwrite(str(root / "frames" / f"f{i}.png"), np.zeros((H, W, 3), np.uint8))
    with pytest.raises(FileFormatError, match=r"4 frame\(s\) in frames/ but 3 camera lines in cameras.txt"):
        read_re10k_clip(root)
    (root / "cameras.txt").unlink()
    with pytest.raises(FileFormatError, match="needs cameras.txt"):
        read_re10k_clip(root)
    with pytest.raises(FileFormatError, match="needs a frames/"):
        read_re10k_clip(tmp_path / "nowhere")
