"""Kinematic base: exact integration, camera mount, limits."""

import numpy as np
import pytest

from spatia_core import InputError, look_at
from spatia_core.robot import CameraMount, KinematicBase


def test_unicycle_drives_a_full_circle_back_to_start():
    base = KinematicBase("unicycle")
    v, w = 0.5, 0.5  # radius 1 m, period 4 pi s
    for _ in range(400):
        base.step(base.check_twist(v, 0.3, w), 4 * np.pi / 400)
    np.testing.assert_allclose(base.pose, np.eye(4), atol=1e-9)


def test_exact_arc_and_holonomic_side_step():
    base = KinematicBase("unicycle")
    base.step(base.check_twist(1.0, 0.0, np.pi / 2), 1.0)  # quarter circle of radius 2/pi
    r = 2 / np.pi
    np.testing.assert_allclose(base.pose[:2, 3], [r, r], atol=1e-12)
    holo = KinematicBase("holonomic")
    holo.step(holo.check_twist(0.0, 0.5, 0.0), 2.0)
    np.testing.assert_allclose(holo.pose[:3, 3], [0, 1.0, 0], atol=1e-12)


def test_camera_mount_and_placement_round_trip():
    base = KinematicBase(mount=CameraMount(xyz=[0.2, 0.0, 1.0], rpy=[0.0, 0.1, 0.0]))
    cam = base.camera_pose()
    # optical z (forward) looks along base x, tilted down by the pitch
    assert cam[:3, 2] @ [1, 0, 0] == pytest.approx(np.cos(0.1))
    assert cam[2, 2] == pytest.approx(-np.sin(0.1))
    np.testing.assert_allclose(cam[:3, 3], [0.2, 0, 1.0])
    target = look_at([1.0, 2.0, 1.0], [3.0, 2.5, 0.8])
    base.set_camera_pose(target)
    np.testing.assert_allclose(base.camera_pose(), target, atol=1e-12)


@pytest.mark.parametrize("cmd", [(np.nan, 0, 0), (0, 0, np.inf), (100.0, 0, 0), (0, 0, 50.0)])
def test_bad_commands_are_refused(cmd):
    with pytest.raises(InputError):
        KinematicBase().check_twist(*cmd)
    with pytest.raises(InputError):
        KinematicBase("tank")
