"""Publish TF: through tf2_ros when it is importable, else straight to /tf and /tf_static.

The fallback uses the QoS of tf2_ros' broadcasters: /tf reliable, volatile, depth 100;
/tf_static reliable, transient local, depth 1 (latched for late joiners).
"""

from __future__ import annotations

from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
TF_STATIC_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class TfPublisher:
    """``send(transforms)`` for /tf and ``send_static(transforms)`` for /tf_static."""

    def __init__(self, node: Node):
        try:
            from tf2_ros import StaticTransformBroadcaster, TransformBroadcaster

            self._dynamic, self._static = TransformBroadcaster(node), StaticTransformBroadcaster(node)
            self.backend = "tf2_ros"
        except ImportError:
            from tf2_msgs.msg import TFMessage

            self._msg = TFMessage
            self._pub = node.create_publisher(TFMessage, "/tf", TF_QOS)
            self._pub_static = node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
            self._static_all: dict[str, object] = {}
            self.backend = "tf2_msgs"

    def send(self, transforms: list) -> None:
        if self.backend == "tf2_ros":
            self._dynamic.sendTransform(transforms)
        else:
            self._pub.publish(self._msg(transforms=transforms))

    def send_static(self, transforms: list) -> None:
        if self.backend == "tf2_ros":
            self._static.sendTransform(transforms)
        else:  # latched topic: each message must carry every static transform
            self._static_all.update({t.child_frame_id: t for t in transforms})
            self._pub_static.publish(self._msg(transforms=list(self._static_all.values())))
