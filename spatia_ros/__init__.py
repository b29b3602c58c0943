"""spatia_ros: ROS 2 nodes for the Spatia generative world simulator.

Importing the package is cheap (no rclpy); it sets up the environment first, see ros_env.
"""
from spatia_ros import ros_env as _ros_env

_ros_env.setup(__path__)
