"""The one table of world_sim's output topics and their QoS (plain data, no ROS import).

``world_sim`` publishes with these profiles (:mod:`spatia_ros.qos` turns them into rclpy
``QoSProfile``), the session recorder subscribes with the same reliability and durability and
stores the publisher's profile in the bag, and :func:`spatia_core.bags.replay` writes the same
profiles into the bags it makes, so ``ros2 bag play`` offers what the live node offered.

Camera streams follow ``sim.reliable_images``: reliable, keep last 2 (large images between
processes mostly arrive only to reliable readers, measured in ``bench/``), or best effort keep
last 5 (rclpy's sensor-data profile). ``reader_depth`` is the queue a reader that must not drop
a burst (the recorder, the tests) keeps; it never changes what is offered.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Qos:
    """Keep-last history of ``depth``; reliable or best effort; transient local ("latched") or volatile."""

    reliable: bool = True
    depth: int = 10
    latched: bool = False

    def as_dict(self) -> dict:
        return {"reliable": self.reliable, "depth": self.depth, "latched": self.latched}


CAMERA_RELIABLE = Qos(reliable=True, depth=2)
CAMERA_BEST_EFFORT = Qos(reliable=False, depth=5)  # = rclpy's qos_profile_sensor_data
RELIABLE = Qos(reliable=True, depth=10)
TF = Qos(reliable=True, depth=100)  # tf2_ros' TransformBroadcaster
LATCHED = Qos(reliable=True, depth=1, latched=True)  # tf2_ros' StaticTransformBroadcaster, latched maps


@dataclass(frozen=True)
class Topic:
    """One output of world_sim: message type, the QoS it is published with, and for the camera
    streams ``camera=True`` (their QoS follows ``sim.reliable_images``)."""

    type: str
    qos: Qos
    camera: bool = False
    reader_depth: int = 10

    def offered(self, reliable_images: bool = True) -> Qos:
        """The QoS the publisher offers under ``sim.reliable_images``."""
        if self.camera:
            return CAMERA_RELIABLE if reliable_images else CAMERA_BEST_EFFORT
        return self.qos

    def reader(self, reliable_images: bool = True) -> Qos:
        """A compatible reader's QoS: the same reliability and durability, a deeper queue."""
        q = self.offered(reliable_images)
        return Qos(q.reliable, max(q.depth, self.reader_depth), q.latched)


_IMAGE, _INFO = "sensor_msgs/msg/Image", "sensor_msgs/msg/CameraInfo"
#: world_sim's outputs, names as it publishes them (relative to its namespace, or absolute).
TOPICS: dict[str, Topic] = {
    "camera/image_raw": Topic(_IMAGE, CAMERA_RELIABLE, camera=True),
    "camera/camera_info": Topic(_INFO, CAMERA_RELIABLE, camera=True),
    "camera/depth/image_raw": Topic(_IMAGE, CAMERA_RELIABLE, camera=True),
    "camera/depth/camera_info": Topic(_INFO, CAMERA_RELIABLE, camera=True),
    "camera/scene_projection": Topic(_IMAGE, CAMERA_RELIABLE, camera=True),
    "spatial_memory": Topic("sensor_msgs/msg/PointCloud2", LATCHED, reader_depth=1),
    "memory_info": Topic("spatia_ros/msg/MemoryInfo", LATCHED, reader_depth=1),
    "odom": Topic("nav_msgs/msg/Odometry", RELIABLE, reader_depth=100),
    "/tf": Topic("tf2_msgs/msg/TFMessage", TF, reader_depth=100),
    "/tf_static": Topic("tf2_msgs/msg/TFMessage", LATCHED, reader_depth=1),
    "/clock": Topic("rosgraph_msgs/msg/Clock", RELIABLE, reader_depth=100),
}
#: The topics a replayed bag holds (what world_sim publishes per frame, plus TF and clock).
REPLAYED = ("camera/image_raw", "camera/camera_info", "camera/depth/image_raw", "camera/depth/camera_info",
            "camera/scene_projection", "odom", "/tf", "/tf_static", "/clock")


def offered(name: str, reliable_images: bool = True) -> Qos:
    """The QoS world_sim offers on ``name`` (as in :data:`TOPICS`)."""
    return TOPICS[name].offered(reliable_images)


__all__ = ["Qos", "Topic", "TOPICS", "REPLAYED", "offered", "CAMERA_RELIABLE", "CAMERA_BEST_EFFORT", "RELIABLE", "TF",
           "LATCHED"]
