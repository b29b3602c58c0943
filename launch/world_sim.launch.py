"""Start the Spatia world simulator (and optionally RViz).

    ros2 launch spatia_ros world_sim.launch.py [params_file:=...] [use_sim_time:=true]
        [backend:=projection|spatia] [world:=builtin|PATH] [rviz:=false]

``ros2 launch spatia_ros world_sim`` works too (an extensionless copy of this file).

``use_sim_time`` is given to world_sim and RViz alike: ``true`` (default) stamps everything in the
simulator's lockstep sim time (``sim.publish_clock`` in the parameter file must stay true, else
stamps follow another node's ``/clock``); ``false`` stamps in wall time. ``backend`` and ``world``
override ``generator.backend`` and ``world.source``/``world.path`` of ``params_file`` (a relative
world path is taken from the directory launch runs in). The launch ends when world_sim ends; a
failed start makes ``ros2 launch`` exit 1. With ``rviz:=true`` rviz2 must be installed, else
nothing is started and the launch exits 1.
"""

import os

from ament_index_python.packages import PackageNotFoundError, get_package_prefix, get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def _true(context, name: str) -> bool:
    value = LaunchConfiguration(name).perform(context).strip().lower()
    if value not in ("true", "false", "1", "0", "yes", "no"):
        raise RuntimeError(f"launch argument {name}:={value!r} must be true or false")
    return value in ("true", "1", "yes")


def _world_sim_exited(event, context):
    """End the launch with world_sim; a failed start (or crash) makes ``ros2 launch`` exit 1."""
    if event.returncode and not context.is_shutdown:
        raise RuntimeError(f"world_sim exited with code {event.returncode} (its error is above)")
    return [Shutdown(reason="world_sim exited")]


def _nodes(context):
    share = get_package_share_directory("spatia_ros")
    use_sim_time, rviz = _true(context, "use_sim_time"), _true(context, "rviz")
    if rviz:
        try:
            get_package_prefix("rviz2")
        except PackageNotFoundError:
            raise RuntimeError("rviz:=true but the rviz2 package is not installed (apt install ros-$ROS_DISTRO-rviz2); "
                               "nothing was started") from None
    params = LaunchConfiguration("params_file").perform(context) or os.path.join(share, "config", "world_sim.yaml")
    overrides = {"use_sim_time": use_sim_time}
    backend = LaunchConfiguration("backend").perform(context)
    if backend:
        overrides["generator.backend"] = backend
    world = LaunchConfiguration("world").perform(context)
    if world:
        overrides["world.source"] = "builtin" if world == "builtin" else "auto"
        overrides["world.path"] = "" if world == "builtin" else os.path.abspath(os.path.expanduser(world))
    nodes = [Node(package="spatia_ros", executable="world_sim", name="world_sim", output="screen",
                  parameters=[params, overrides], emulate_tty=True,
                  on_exit=_world_sim_exited)]
    if rviz:
        nodes.append(Node(package="rviz2", executable="rviz2", name="rviz2",
                          arguments=["-d", os.path.join(share, "config", "world_sim.rviz")],
                          parameters=[{"use_sim_time": use_sim_time}]))
    return nodes


def generate_launch_description():
    return LaunchDescription([
        DeclareLaunchArgument("params_file", default_value="", description="world_sim parameters (default: config/world_sim.yaml)"),
        DeclareLaunchArgument("use_sim_time", default_value="true",
                              description="true: world_sim and RViz use world_sim's sim time (/clock); false: wall time"),
        DeclareLaunchArgument("backend", default_value="", description="generator backend override: projection | spatia"),
        DeclareLaunchArgument("world", default_value="", description="builtin, or a world path (RGB-D folder, .ply, image)"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with config/world_sim.rviz"),
        # large images between processes need Fast DDS' LARGE_DATA transport (README, Fast DDS transport)
        SetEnvironmentVariable("FASTDDS_BUILTIN_TRANSPORTS", os.environ.get("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")),
        OpaqueFunction(function=_nodes),
    ])
