"""pip packaging for spatia_ros (the ROS build uses CMakeLists.txt + package.xml).

Dependencies are pinned in requirements*.txt and installed by scripts/setup.sh, which also
builds the ROS interfaces (msg/srv/action) with colcon into .ros_ws/.
"""
from setuptools import find_packages, setup

setup(
    name='spatia_ros',
    version='0.1.0',
    description='ROS 2 generative world simulator with a persistent spatial memory',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=['spatia_core', 'spatia_core.*', 'spatia_ros', 'spatia_ros.*']),
    # Registers the package in the ament index of the environment's prefix.
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/spatia_ros']),
        ('share/spatia_ros', ['package.xml']),
    ],
    entry_points={
        'console_scripts': [
            'spatia = spatia_core.cli:main',
            'spatia-sim = spatia_ros.sim_main:main',
            'world_sim = spatia_ros.world_sim_node:main',
        ],
    },
)
