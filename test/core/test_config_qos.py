"""One table of topics and QoS (issue 13): world_sim's publishers, the session recorder and bag
replay all take their QoS from spatia_core.qos (they used to disagree: reliable depth 2, best
effort depth 5, reliable depth 10)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)

from spatia_core import qos
from spatia_core.bags import replay, replay_topics
from spatia_core.config import SpatiaConfig

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _bag_offered(path):
    """{topic: (reliable, depth, latched)} as stored in a bag's metadata."""
    from rosbags.interfaces import QosDurability, QosReliability
    from rosbags.rosbag2 import Reader

    with Reader(path) as reader:
        out = {}
        for c in reader.connections:
            (p,) = c.ext.offered_qos_profiles
            out[c.topic] = (p.reliability == QosReliability.RELIABLE, p.depth, p.durability == QosDurability.TRANSIENT_LOCAL)
        return out


@pytest.mark.parametrize("reliable_images", [True, False])
def test_replayed_bag_offers_the_tables_qos(tmp_path, reliable_images):
    from test_bags import write_bag

    cfg = SpatiaConfig().with_overrides({"camera.width": 32, "camera.height": 24, "memory.voxel_size": 0.05,
                                         "sim.reliable_images": reliable_images})
    replay(write_bag(tmp_path / "in", "mcap", "pose"), tmp_path / "out", cfg, progress=False)
    stored = _bag_offered(tmp_path / "out")
    expected = {("/" + n).replace("//", "/"): qos.offered(n, reliable_images) for n in qos.REPLAYED}
    assert stored == {k: (q.reliable, q.depth, q.latched) for k, q in expected.items()}
    camera = stored["/camera/image_raw"]
    assert camera == ((True, 2, False) if reliable_images else (False, 5, False))


def test_recorder_and_node_profiles_come_from_the_table():
    _prereq.require_module("rclpy", "rclpy is not importable; run scripts/setup.sh")  # the ROS side; test/ros checks the live node's publishers
    from rclpy.qos import DurabilityPolicy, ReliabilityPolicy, qos_profile_sensor_data

    from spatia_ros import qos as rqos
    from spatia_ros import recorder_node, world_sim_node

    assert recorder_node.WORLD_SIM_TOPICS is qos.TOPICS
    assert set(replay_topics()) == {("/" + n).replace("//", "/") for n in qos.REPLAYED} <= {"/" + n.lstrip("/") for n in qos.TOPICS}
    for name, topic in qos.TOPICS.items():
        for rel in (True, False):
            pub, sub = rqos.publisher_profile(name, rel), rqos.reader_profile(name, rel)
            assert rqos.from_profile(pub) == topic.offered(rel)
            # a reader the publisher matches: same reliability and durability, at least as deep
            assert (sub.reliability, sub.durability) == (pub.reliability, pub.durability) and sub.depth >= pub.depth
    assert world_sim_node.CAMERA_RELIABLE.depth == 2 and world_sim_node.CAMERA_RELIABLE.reliability == ReliabilityPolicy.RELIABLE
    assert world_sim_node.LATCHED.durability == DurabilityPolicy.TRANSIENT_LOCAL
    sensor = rqos.publisher_profile("camera/image_raw", reliable_images=False)
    assert (sensor.reliability, sensor.depth, sensor.durability) == (qos_profile_sensor_data.reliability,
                                                                     qos_profile_sensor_data.depth,
                                                                     qos_profile_sensor_data.durability)
    from spatia_ros.tf_publisher import TF_QOS, TF_STATIC_QOS  # tf2_ros' broadcasters, as the table says

    assert rqos.from_profile(TF_QOS) == qos.offered("/tf") and rqos.from_profile(TF_STATIC_QOS) == qos.offered("/tf_static")
