"""rosbag2 in and out without ROS: camera paths from PoseStamped / Odometry / TF, replay, `spatia replay`."""

import json
from pathlib import Path

import numpy as np
import pytest

from spatia_core import SpatiaConfig, look_at
from spatia_core.bags import REPLAY_TOPICS, _header, _odometry, _transform, _vec, _quat, read_camera_path, replay, typestore
from spatia_core.cli import main
from spatia_core.errors import FileFormatError, InputError
from spatia_core.geometry import invert_pose, pose_from_xyz_quat, pose_to_xyz_quat
from spatia_core.robot import CameraMount

N = 8
T0 = 1_700_000_000_000_000_000
STAMPS = [T0 + i * 100_000_000 for i in range(N)]  # 10 Hz
BAG_DELAY = 3_000_000  # record time = header stamp + 3 ms, so stamps and bag times differ
MOUNT = CameraMount([0.0, 0.0, 1.2], [0.0, 0.0, 0.0])  # the simulator's default mount
CAMERA_POSES = [look_at([0.1 * i, 0.05 * i, 1.2], [3.0, 0.5, 1.0]) for i in range(N)]
BASE_POSES = [pose_from_xyz_quat([0.2 * i, 0.1 * i, 0.0], [0.0, 0.0, np.sin(0.05 * i), np.cos(0.05 * i)]) for i in range(N)]
MAP_ODOM = pose_from_xyz_quat([0.5, -0.2, 0.0], [0.0, 0.0, np.sin(0.1), np.cos(0.1)])
CLI_SIZE = ["--width", "64", "--height", "48", "--set", "memory.voxel_size=0.05", "--no-progress"]


@pytest.fixture(scope="module")
def cfg():
    return SpatiaConfig().with_overrides({"camera.width": 64, "camera.height": 48, "memory.voxel_size": 0.05})


def _storage(name):
    from rosbags.rosbag2 import StoragePlugin

    return {"mcap": StoragePlugin.MCAP, "sqlite3": StoragePlugin.SQLITE3}[name]


def _pose_msg(mat, ns):
    t = typestore().types
    xyz, q = pose_to_xyz_quat(mat)
    pose = t["geometry_msgs/msg/Pose"](position=_vec("geometry_msgs/msg/Point", xyz), orientation=_quat(q))
    return t["geometry_msgs/msg/PoseStamped"](header=_header("map", ns), pose=pose)


def write_bag(path, storage, source):
    """An input bag with a camera path as ``pose`` (PoseStamped), ``odom`` or ``tf``, plus a distractor topic."""
    from rosbags.rosbag2 import Writer

    ts = typestore()
    tf_type = "tf2_msgs/msg/TFMessage"
    with Writer(path, version=9, storage_plugin=_storage(storage)) as w:
        chatter = w.add_connection("/chatter", "std_msgs/msg/String", typestore=ts)
        w.write(chatter, T0, ts.serialize_cdr(ts.types["std_msgs/msg/String"](data="hi"), "std_msgs/msg/String"))
        if source == "none":
            return path
        if source == "tf":
            static, dyn = (w.add_connection(name, tf_type, typestore=ts) for name in ("/tf_static", "/tf"))
            w.write(static, T0, ts.serialize_cdr(ts.types[tf_type](transforms=[
                _transform("base_link", "camera_link", MOUNT.base_to_link(), 0),
                _transform("camera_link", "camera_optical_frame", MOUNT.link_to_optical(), 0)]), tf_type))
            w.write(dyn, T0, ts.serialize_cdr(ts.types[tf_type](transforms=[_transform("map", "odom", MAP_ODOM, T0)]), tf_type))
        else:
            typ = "geometry_msgs/msg/PoseStamped" if source == "pose" else "nav_msgs/msg/Odometry"
            conn = w.add_connection("/camera_pose" if source == "pose" else "/odom", typ, typestore=ts)
        for i, ns in enumerate(STAMPS):
            if source == "pose":
                w.write(conn, ns + BAG_DELAY, ts.serialize_cdr(_pose_msg(CAMERA_POSES[i], ns), typ))
            elif source == "odom":
                w.write(conn, ns + BAG_DELAY, ts.serialize_cdr(_odometry("odom", "base_link", BASE_POSES[i], [0, 0, 0], ns), typ))
            else:
                msg = ts.types[tf_type](transforms=[_transform("odom", "base_link", BASE_POSES[i], ns)])
                w.write(dyn, ns + BAG_DELAY, ts.serialize_cdr(msg, tf_type))
    return path


def read_bag(path):
    """{topic: [(record_ns, msg), ...]} of a bag."""
    from rosbags.highlevel import AnyReader

    out = {}
    with AnyReader([Path(path)], default_typestore=typestore()) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, reader.deserialize(raw, conn.msgtype)))
    return out


def _ns(stamp):
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _tf(t):
    tr, q = t.transform.translation, t.transform.rotation
    return pose_from_xyz_quat([tr.x, tr.y, tr.z], [q.x, q.y, q.z, q.w])


# -- reading --------------------------------------------------------------------------------
@pytest.mark.parametrize("source,storage", [("pose", "mcap"), ("odom", "sqlite3"), ("tf", "mcap"), ("tf", "sqlite3")])
def test_read_camera_path_sources(tmp_path, source, storage):
    bag = write_bag(tmp_path / "in", storage, source)
    path = read_camera_path(bag, mount=MOUNT)
    expected = {"pose": CAMERA_POSES, "odom": [b @ MOUNT.base_to_optical() for b in BASE_POSES],
                "tf": [MAP_ODOM @ b @ MOUNT.base_to_optical() for b in BASE_POSES]}[source]
    assert [t for t, _ in path] == STAMPS, "header stamps, not bag times"
    np.testing.assert_allclose(np.stack([p for _, p in path]), np.stack(expected), atol=1e-9)
    if source == "tf":  # through the base frame and the mount instead of the static optical chain
        via_base = read_camera_path(bag, pose_kind="base", mount=MOUNT)
        np.testing.assert_allclose(np.stack([p for _, p in via_base]), np.stack(expected), atol=1e-9)


def test_read_camera_path_kinds_and_zero_stamps(tmp_path):
    from rosbags.rosbag2 import Writer

    ts = typestore()
    bag = tmp_path / "zero"
    with Writer(bag, version=9, storage_plugin=_storage("mcap")) as w:
        conn = w.add_connection("/pose", "geometry_msgs/msg/PoseStamped", typestore=ts)
        for i, ns in enumerate(STAMPS[:3]):
            w.write(conn, ns, ts.serialize_cdr(_pose_msg(BASE_POSES[i], 0), "geometry_msgs/msg/PoseStamped"))
    path = read_camera_path(bag)
    assert [t for t, _ in path] == STAMPS[:3], "a zero header stamp falls back to the bag time"
    np.testing.assert_allclose(path[1][1], BASE_POSES[1], atol=1e-9)
    as_base = read_camera_path(bag, pose_kind="base", mount=MOUNT)
    np.testing.assert_allclose(as_base[1][1], BASE_POSES[1] @ MOUNT.base_to_optical(), atol=1e-9)
    with pytest.raises(InputError, match="pose kind"):
        read_camera_path(bag, pose_kind="sideways")
    with pytest.raises(InputError, match="/nope"):
        read_camera_path(bag, topic="/nope")


# -- replay ---------------------------------------------------------------------------------
@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_replay_writes_aligned_world_sim_topics(tmp_path, cfg, storage):
    bag_in = write_bag(tmp_path / "in", storage, "pose")
    summary = replay(bag_in, tmp_path / "out", cfg, storage=storage, progress=False)
    assert summary["frames"] == N and summary["source_topic"] == "/camera_pose" and summary["pose_kind"] == "camera"
    out = read_bag(tmp_path / "out")
    assert set(out) == set(REPLAY_TOPICS)
    assert (tmp_path / "out" / "metadata.yaml").is_file()
    for topic, msgs in out.items():
        assert len(msgs) == (1 if topic == "/tf_static" else N), topic
        if topic != "/tf_static":
            assert [t for t, _ in msgs] == STAMPS, f"{topic} record times are the source stamps"
    for topic in ("/camera/image_raw", "/camera/camera_info", "/camera/depth/image_raw", "/camera/scene_projection", "/odom"):
        assert [_ns(m.header.stamp) for _, m in out[topic]] == STAMPS, topic
    assert [_ns(m.clock) for _, m in out["/clock"]] == STAMPS
    for (_, img), (_, info), (_, depth) in zip(out["/camera/image_raw"], out["/camera/camera_info"], out["/camera/depth/image_raw"]):
        assert info.header == img.header == depth.header and img.header.frame_id == "camera_optical_frame"
        assert (img.width, img.height, img.encoding, img.step) == (64, 48, "rgb8", 64 * 3)
        assert (info.width, info.height) == (64, 48) and info.k[2] == pytest.approx(31.5)
        assert (depth.encoding, depth.step) == ("32FC1", 64 * 4)
    rgb = out["/camera/image_raw"][-1][1].data.reshape(48, 64, 3)
    d = out["/camera/depth/image_raw"][-1][1].data.view("<f4").reshape(48, 64)
    assert rgb.std() > 5 and (d > 0).mean() > 0.5 and 0.3 < np.median(d[d > 0]) < 10
    static = {t.child_frame_id: t for t in out["/tf_static"][0][1].transforms}
    for i, (_, msg) in enumerate(out["/tf"]):
        tf = {t.child_frame_id: t for t in msg.transforms}
        assert all(_ns(t.header.stamp) == STAMPS[i] for t in msg.transforms)
        chain = _tf(tf["odom"]) @ _tf(tf["base_link"]) @ _tf(static["camera_link"]) @ _tf(static["camera_optical_frame"])
        np.testing.assert_allclose(chain, CAMERA_POSES[i], atol=1e-6)


@pytest.mark.parametrize("source,storage", [("odom", "mcap"), ("tf", "sqlite3")])
def test_replay_base_paths(tmp_path, cfg, source, storage):
    bag_in = write_bag(tmp_path / "in", storage, source)
    summary = replay(bag_in, tmp_path / "out", cfg, storage=storage, progress=False)
    assert summary["frames"] == N and summary["topics"]["/camera/image_raw"] == N
    out = read_bag(tmp_path / "out")
    expected = BASE_POSES if source == "odom" else [MAP_ODOM @ b for b in BASE_POSES]  # sim: map -> odom is identity
    for i, (t, odom) in enumerate(out["/odom"]):
        assert t == STAMPS[i] and _ns(odom.header.stamp) == STAMPS[i]
        p, q = odom.pose.pose.position, odom.pose.pose.orientation
        np.testing.assert_allclose(pose_from_xyz_quat([p.x, p.y, p.z], [q.x, q.y, q.z, q.w]), expected[i], atol=1e-6)
    step = invert_pose(expected[0]) @ expected[1]  # finite-difference twist in the base frame
    assert out["/odom"][1][1].twist.twist.linear.x == pytest.approx(step[0, 3] / 0.1, abs=1e-6)


def test_replay_refuses_bad_requests_and_leaves_no_output(tmp_path, cfg):
    bag_in = write_bag(tmp_path / "in", "mcap", "pose")
    with pytest.raises(InputError, match="storage"):
        replay(bag_in, tmp_path / "out", cfg, storage="rosbag1", progress=False)
    with pytest.raises(FileFormatError, match="does not exist"):
        replay(tmp_path / "missing", tmp_path / "out", cfg, progress=False)
    with pytest.raises(InputError, match="/chatter has type std_msgs/msg/String"):
        replay(bag_in, tmp_path / "out", cfg, topic="/chatter", progress=False)
    assert not (tmp_path / "out").exists()
    (tmp_path / "plain").mkdir()
    with pytest.raises(FileFormatError, match="no metadata.yaml"):
        read_camera_path(tmp_path / "plain")


# -- CLI ------------------------------------------------------------------------------------
def test_cli_replay_end_to_end(tmp_path, capsys):
    bag_in = write_bag(tmp_path / "in", "sqlite3", "odom")
    assert main(["replay", str(bag_in), "--out", str(tmp_path / "out"), "--storage", "sqlite3", *CLI_SIZE]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["frames"] == N and summary["pose_kind"] == "base" and summary["resolution"] == [64, 48]
    out = read_bag(tmp_path / "out")
    assert len(out["/camera/image_raw"]) == N and out["/camera/image_raw"][0][1].width == 64


def test_cli_replay_errors_are_one_line(tmp_path, capsys):
    bag_in = write_bag(tmp_path / "in", "mcap", "pose")
    write_bag(tmp_path / "empty", "mcap", "none")
    (tmp_path / "taken").mkdir()
    cases = [([str(tmp_path / "missing"), "--out", str(tmp_path / "o1")], "does not exist"),
             ([str(tmp_path / "empty"), "--out", str(tmp_path / "o2")], "no camera path"),
             ([str(bag_in), "--out", str(tmp_path / "taken")], "exists already"),
             ([str(bag_in), "--out", str(tmp_path / "o3"), "--topic", "/nope"], "/nope is not in")]
    for args, expected in cases:
        assert main(["replay", *args, *CLI_SIZE]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("spatia: error: ") and expected in err and "\n" not in err, err
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3"))
