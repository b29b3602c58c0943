"""edit_memory over DDS: mask, box, recolour and PLY-object edits change the rendered view where
expected, and undo brings the view back (world_sim runs in its own process)."""


import numpy as np
import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)

from processes import RCLPY_MISSING, running_world_sim

pytestmark = _prereq.mark(RCLPY_MISSING, RCLPY_MISSING)

W, H = 128, 96
EYE, TARGET = np.array([-1.0, 0.0, 1.2]), np.array([-3.0, 0.0, 0.3])  # a wall on top, the floor below


@pytest.fixture(scope="module")
def node_proc(tmp_path_factory):
    with running_world_sim(tmp_path_factory.mktemp("edit_service"), "node.log", W, H, 0.03, rate_hz=10.0,
                           cloud_rate_hz=1.0, cloud_max_points=2000, cmd_timeout=0.0) as proc:
        yield proc


class Client:
    """Keeps the latest scene projections and camera info; calls edit_memory."""

    def __init__(self, ros):
        from geometry_msgs.msg import PoseStamped
        from sensor_msgs.msg import CameraInfo, Image

        from spatia_ros.srv import EditMemory
        from spatia_ros.world_sim_node import CAMERA_RELIABLE

        self.ros, self.scenes, self.info = ros, [], None
        ros.node.create_subscription(Image, "camera/scene_projection", self.scenes.append, CAMERA_RELIABLE)
        ros.node.create_subscription(CameraInfo, "camera/camera_info", lambda m: setattr(self, "info", m), CAMERA_RELIABLE)
        self.pose_pub = ros.node.create_publisher(PoseStamped, "camera_pose", 10)
        self.edit_client = ros.node.create_client(EditMemory, "edit_memory")
        assert self.edit_client.wait_for_service(timeout_sec=30.0), "edit_memory not available"

    def view(self, frames=3):
        """The scene projection (raw memory render) a few frames from now, uint8 (H, W, 3)."""
        from spatia_ros.conversions import image_to_numpy

        start = len(self.scenes)
        assert self.ros.spin_until(lambda: len(self.scenes) >= start + frames, 30), "no scene projection"
        return image_to_numpy(self.scenes[-1])

    def edit(self, request):
        future = self.edit_client.call_async(request)
        assert self.ros.spin_until(future.done, 60), "edit_memory did not answer"
        return future.result()


@pytest.fixture(scope="module")
def client(ros, node_proc):
    from geometry_msgs.msg import PoseStamped

    from spatia_core import look_at
    from spatia_ros.conversions import matrix_to_pose

    c = Client(ros)
    c.view(1)
    msg = PoseStamped()
    msg.header.frame_id = "map"
    msg.pose = matrix_to_pose(look_at(EYE, TARGET))
    c.pose_pub.publish(msg)
    c.view(3)
    assert c.info is not None
    return c


def _request(op, **fields):
    from spatia_ros.srv import EditMemory

    req = EditMemory.Request(operation=getattr(EditMemory.Request, op))
    for name, value in fields.items():
        setattr(req, name, value)
    return req


def _changed(a, b):
    return np.abs(a.astype(int) - b.astype(int)).max(-1) > 0


def _restored(a, b):
    """Undo restores the touched voxels (module docs of spatia_core.memory.edit). Identical in the
    runs seen; 1 % slack for voxels that fusion may add meanwhile (undo keeps those)."""
    return _changed(a, b).mean() < 0.01


def test_remove_by_mask_in_the_current_view_then_undo(client):
    from sensor_msgs.msg import Image

    before = client.view()
    mask = np.zeros((H, W), np.uint8)
    mask[30:60, 40:90] = 255
    msg = Image(height=H, width=W, encoding="mono8", step=W, data=mask.tobytes())
    res = client.edit(_request("REMOVE_MASK", mask=msg))  # no camera pose or info: the current view
    assert res.success and res.voxels_changed > 100, res.message
    after = client.view()
    changed = _changed(before, after)
    inside = np.zeros((H, W), bool)
    inside[32:58, 42:88] = True
    grown = np.zeros((H, W), bool)
    grown[27:63, 37:93] = True
    assert changed[inside].mean() > 0.8, "the masked surface is gone"
    assert not changed[~grown].any(), "nothing outside the mask changes"
    res = client.edit(_request("UNDO"))
    assert res.success and res.voxels_changed > 100, res.message
    assert _restored(client.view(), before)


def test_box_recolor_and_ply_object_then_undo_each(client, node_proc):
    from geometry_msgs.msg import Point, Pose

    from spatia_core.memory import SpatialMemory, save_ply

    before = client.view()
    res = client.edit(_request("RECOLOR_BOX", box_min=Point(x=-10.0, y=-10.0, z=-1.0), box_max=Point(x=10.0, y=10.0, z=0.06),
                               color=_rgba(1.0, 0.0, 1.0)))
    assert res.success and res.voxels_changed > 1000, res.message
    floor = client.view()
    magenta = (floor[..., 0] > 230) & (floor[..., 1] < 30) & (floor[..., 2] > 230)
    assert magenta[-15:].mean() > 0.8 and magenta[:10].mean() < 0.05

    # a green cube 0.1 m, scaled by 2, 1 m in front of the camera along its optical axis
    g = np.arange(-0.05, 0.05, 0.01) + 0.005
    cube = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    obj = SpatialMemory(voxel_size=0.01)
    obj.insert_points(cube, np.tile(np.uint8([0, 255, 0]), (len(cube), 1)))
    save_ply(obj, node_proc.tmp / "maps" / "cube.ply")
    centre = EYE + (TARGET - EYE) / np.linalg.norm(TARGET - EYE)
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in centre)
    res = client.edit(_request("ADD_PLY", filename="cube.ply", object_pose=pose, scale=2.0))
    assert res.success and res.voxels_changed > 100, res.message
    added = client.view()
    green = (added[..., 1] > 200) & (added[..., 0] < 50) & (added[..., 2] < 50)
    assert green[H // 2 - 2 : H // 2 + 2, W // 2 - 2 : W // 2 + 2].all(), "the cube is at the image centre"
    cols = green.any(0).nonzero()[0]
    expected = client.info.k[0] * 0.2 / 1.0
    assert 0.7 * expected < cols.max() - cols.min() + 1 < 1.6 * expected, "the cube has its scaled size"

    res = client.edit(_request("REMOVE_BOX", box_min=Point(x=-10.0, y=-10.0, z=-1.0), box_max=Point(x=10.0, y=10.0, z=0.06)))
    assert res.success and res.voxels_changed > 1000, res.message
    holed = client.view()
    assert not _changed(added, holed)[:10].any() and (holed[-10:] == 0).all(), "the floor is gone, the rest stays"

    for expected_view in (added, floor, before):
        res = client.edit(_request("UNDO"))
        assert res.success, res.message
        assert _restored(client.view(), expected_view)


def test_bad_edits_fail_cleanly(client):
    from geometry_msgs.msg import Point

    assert not client.edit(_request("ADD_PLY", filename="../escape.ply")).success
    assert not client.edit(_request("ADD_PLY", filename="missing.ply")).success
    assert not client.edit(_request("REMOVE_MASK")).success, "an empty mask image is refused"
    assert not client.edit(_request("REMOVE_BOX", box_min=Point(x=1.0), box_max=Point(x=0.0))).success
    res = client.edit(_request("UNDO"))
    assert not res.success and "nothing to undo" in res.message
    client.view()  # the node still publishes


def _rgba(r, g, b):
    from std_msgs.msg import ColorRGBA

    return ColorRGBA(r=r, g=g, b=b, a=1.0)
