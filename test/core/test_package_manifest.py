"""package.xml declares what the installed code imports, and nothing it does not (issue 12 item 6).

rosdep installs exactly these keys for a user's ``rosdep install --from-paths src``; a missing one
fails at run time on their machine, not here, where the venv has everything.
"""

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: top-level import -> rosdep key, for everything the node, the launch file and the library need
#: at run time (the optional model backends are pip-only, see requirements*.txt)
KEYS = {
    "rclpy": "rclpy", "rcl_interfaces": "rcl_interfaces", "ament_index_python": "ament_index_python",
    "launch": "launch", "launch_ros": "launch_ros", "geometry_msgs": "geometry_msgs", "sensor_msgs": "sensor_msgs",
    "nav_msgs": "nav_msgs", "std_msgs": "std_msgs", "std_srvs": "std_srvs", "rosgraph_msgs": "rosgraph_msgs",
    "builtin_interfaces": "builtin_interfaces", "action_msgs": "action_msgs", "tf2_ros": "tf2_ros", "tf2_msgs": "tf2_msgs",
    "numpy": "python3-numpy", "scipy": "python3-scipy", "cv2": "python3-opencv", "yaml": "python3-yaml",
    "PIL": "python3-pil", "tqdm": "python3-tqdm", "torch": "python3-torch", "open3d": "python3-open3d",
    "rosbags": "python3-rosbags", "simulation_interfaces": "simulation_interfaces",
}


def _imports():
    names = set()
    files = [*REPO.glob("spatia_ros/**/*.py"), *REPO.glob("spatia_core/**/*.py"), REPO / "launch" / "world_sim.launch.py"]
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
    return names


def _declared():
    root = ET.parse(REPO / "package.xml").getroot()
    return {e.text.strip() for tag in ("depend", "exec_depend") for e in root.iter(tag)}


def test_every_runtime_import_has_its_key():
    missing = sorted(f"{mod} ({key})" for mod, key in KEYS.items() if mod in _imports() and key not in _declared())
    assert not missing, f"package.xml lacks exec_depend for: {missing}"


def test_no_ros_package_is_declared_that_nothing_uses():
    used = {KEYS[m] for m in _imports() if m in KEYS} | {"rosidl_default_runtime", "action_msgs"}  # action/ needs it
    ros_declared = {k for k in _declared() if not k.startswith("python3-")}
    assert ros_declared <= used, f"declared but never imported: {sorted(ros_declared - used)}"
