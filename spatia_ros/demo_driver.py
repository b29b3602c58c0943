"""demo_driver: publishes the demo drive (spatia_core.robot.demo_velocity) on cmd_vel.

Time follows the node clock, so with ``use_sim_time`` the drive advances with the simulator.
Parameters: ``rate_hz`` (20), ``linear`` (0.3 m/s), ``angular`` (0.4 rad/s), ``stamped`` (false).
"""

from __future__ import annotations

import rclpy
from geometry_msgs.msg import Twist, TwistStamped
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node

from spatia_core.robot import demo_velocity
from spatia_ros.spin import spin_until_shutdown


class DemoDriver(Node):
    def __init__(self):
        super().__init__("demo_driver")
        self.rate = self.declare_parameter("rate_hz", 20.0).value
        self.linear = self.declare_parameter("linear", 0.3).value
        self.angular = self.declare_parameter("angular", 0.4).value
        self.stamped = self.declare_parameter("stamped", False).value
        self.pub = self.create_publisher(TwistStamped if self.stamped else Twist, "cmd_vel", 10)
        self.t0 = None
        self.create_timer(1.0 / self.rate, self._tick)

    def _tick(self) -> None:
        now = self.get_clock().now().nanoseconds * 1e-9
        self.t0 = now if self.t0 is None else self.t0
        vx, vy, wz = demo_velocity(now - self.t0, self.linear, self.angular)
        twist = Twist()
        twist.linear.x, twist.linear.y, twist.angular.z = vx, vy, wz
        if self.stamped:
            msg = TwistStamped(twist=twist)
            msg.header.stamp = self.get_clock().now().to_msg()
            msg.header.frame_id = "base_link"
            self.pub.publish(msg)
        else:
            self.pub.publish(twist)


def main(args=None) -> None:
    import spatia_ros  # noqa: F401  (environment set-up)

    rclpy.init(args=args)
    node = None
    try:
        node = DemoDriver()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        spin_until_shutdown(executor)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
