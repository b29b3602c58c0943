"""Start the Spatia world simulator (and optionally RViz).

    ros2 launch spatia_ros world_sim.launch.py [params_file:=...] [use_sim_time:=true]
        [backend:=projection|spatia] [world:=builtin|PATH] [rviz:=false]

``ros2 launch spatia_ros world_sim`` works too (an extensionless link to this file).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _world_sim(context):
    share = get_package_share_directory("spatia_ros")
    params = LaunchConfiguration("params_file").perform(context) or os.path.join(share, "config", "world_sim.yaml")
    overrides = {"use_sim_time": LaunchConfiguration("use_sim_time").perform(context).lower() == "true"}
    backend = LaunchConfiguration("backend").perform(context)
    if backend:
        overrides["generator.backend"] = backend
    world = LaunchConfiguration("world").perform(context)
    if world:
        overrides["world.source"] = "builtin" if world == "builtin" else "auto"
        overrides["world.path"] = "" if world == "builtin" else world
    return [Node(package="spatia_ros", executable="world_sim", name="world_sim", output="screen",
                 parameters=[params, overrides], emulate_tty=True)]


def generate_launch_description():
    share = get_package_share_directory("spatia_ros")
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value="", description="world_sim parameters (default: config/world_sim.yaml)"),
        DeclareLaunchArgument("use_sim_time", default_value="true", description="nodes follow /clock published by world_sim"),
        DeclareLaunchArgument("backend", default_value="", description="generator backend override: projection | spatia"),
        DeclareLaunchArgument("world", default_value="", description="builtin, or a world path (RGB-D folder, .ply, image)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with config/world_sim.rviz"),
        # large images between processes need Fast DDS' LARGE_DATA transport (REFERENCE §5)
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")),
        OpaqueFunction(function=_world_sim),
        Node(package="rviz2", executable="rviz2", name="rviz2", condition=IfCondition(LaunchConfiguration("rviz")),
             arguments=["-d", os.path.join(share, "config", "world_sim.rviz")],
             parameters=[{"use_sim_time": True}]),
    ])
