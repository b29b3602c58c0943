"""The training loader reads RE10K clips with the capture reader (:mod:`spatia_core.captures.re10k`):
frames pair with camera lines by timestamp whatever the camera file's line order, ``depth/`` and
``masks/`` follow the frames, and a bad clip gives the reader's one clear error."""

import cv2
import numpy as np
import pytest

from spatia_core.captures.re10k import read_re10k_clip
from spatia_core.errors import FileFormatError
from spatia_core.geometry import invert_pose
from spatia_core.training.data import ClipSpec, Re10kClips, find_re10k_camera_file

W, H = 64, 48
STAMPS = [1000, 34366, 67733]
SPEC = ClipSpec(num_history=1, num_target=1, num_references=0, width=W, height=H, voxel_size=0.05,
                drop_frame_prob=0.0, hole_prob=0.0)


def _clip(root, line_order, with_masks=False):
    """Frames named by timestamp, each one grey level; depth/ and masks/ in the frames' sorted order;
    camera lines written in ``line_order``; frame i is 0.1*i m along x."""
    (root / "frames").mkdir(parents=True)
    (root / "depth").mkdir()
    poses = []
    for i, t in enumerate(STAMPS):
        cv2.imwrite(str(root / "frames" / f"{t}.png"), np.full((H, W, 3), 40 * (i + 1), np.uint8))
        np.save(root / "depth" / f"{i:03d}.npy", np.full((H, W), 1.0 + i, np.float32))
        pose = np.eye(4)
        pose[0, 3] = 0.1 * i
        poses.append(pose)
    if with_masks:
        (root / "masks").mkdir()
        for i in range(len(STAMPS)):
            cv2.imwrite(str(root / "masks" / f"{i:03d}.png"), np.full((H, W), 255 if i == 1 else 0, np.uint8))
    lines = ["https://example.invalid/video"]
    for i in line_order:
        w2c = invert_pose(poses[i])[:3].ravel()
        lines.append(" ".join(str(v) for v in [STAMPS[i], 0.8, 1.0, 0.5, 0.5, 0, 0, *w2c]))
    (root / "cameras.txt").write_text("\n".join(lines) + "\n")
    return root, np.stack(poses)


@pytest.mark.parametrize("line_order", [[0, 1, 2], [2, 0, 1]], ids=["in_order", "shuffled_lines"])
def test_frames_depth_and_masks_pair_by_timestamp(tmp_path, line_order):
    root, poses = _clip(tmp_path / "clip", line_order, with_masks=True)
    ds = Re10kClips(root, SPEC)
    seq = ds.sequences[0]
    cap = read_re10k_clip(root)  # the one reader: the loader's frames are its frames, in its order
    np.testing.assert_allclose(seq.poses, np.stack([im.pose for im in cap.images]), atol=1e-12)
    for j, im in enumerate(cap.images):
        i = STAMPS.index(int(im.name))  # frame i: grey 40*(i+1), depth 1+i, pose 0.1*i along x, dynamic iff i == 1
        np.testing.assert_allclose(seq.poses[j], poses[i], atol=1e-12)
        assert int(seq.rgb[j].mean()) == 40 * (i + 1)
        np.testing.assert_allclose(seq.depth[j], 1.0 + i, atol=1e-6)
        assert seq.masks[j].all() == (i == 1) and seq.masks[j].any() == (i == 1)
    assert seq.intrinsics.width == W and seq.intrinsics.fx == pytest.approx(0.8 * W)
    assert len(ds) == 2 and ds[0].target.shape == (1, H, W, 3)


def test_bad_clip_gives_the_readers_error(tmp_path):
    root, _ = _clip(tmp_path / "clip", [0, 1, 2])
    (root / "frames" / f"{STAMPS[1]}.png").unlink()
    (root / "depth" / "002.npy").unlink()
    with pytest.raises(FileFormatError, match=r"1 of 3 camera lines of cameras.txt have no frame .* timestamp 34366"):
        Re10kClips(root, SPEC)
    assert find_re10k_camera_file(root) == root / "cameras.txt"
    (root / "cameras.txt").unlink()
    with pytest.raises(FileFormatError, match="needs cameras.txt"):
        Re10kClips(root, SPEC)
    with pytest.raises(FileFormatError, match="expected one RE10K camera file"):
        find_re10k_camera_file(root)
