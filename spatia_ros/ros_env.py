"""Environment glue, applied by ``import spatia_ros`` (so before rclpy is used).

* ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` unless the user set it: with Fast DDS defaults,
  large images between processes are dropped or delayed. Every peer needs the same setting
  (rviz2, ``ros2 topic echo``, scripts that do not import spatia_ros): a LARGE_DATA process and
  a default one exchange small messages but not large ones (images). Export it in those shells, or
  set ``FASTDDS_BUILTIN_TRANSPORTS=DEFAULT`` for spatia_ros too.
* pip-wheel environment (``scripts/setup.sh``): colcon builds our interfaces, and a local
  ``tf2_msgs`` when no real one exists, into ``<repo>/.ros_ws/install`` (or ``$SPATIA_ROS_WS``).
  The generated modules are added to ``spatia_ros.__path__`` (and the local ``tf2_msgs`` to
  ``sys.path``, only when no other ``tf2_msgs`` is importable), and their shared libraries are
  preloaded when first imported, since ``LD_LIBRARY_PATH`` cannot change in a running process.
  In a sourced colcon workspace none of this is found and nothing changes.
"""
import importlib.util
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_lib_dirs = []         # install/<pkg>/lib folders whose libraries still need preloading
_TRIGGERS = ('spatia_ros.msg', 'spatia_ros.srv', 'spatia_ros.action', 'tf2_msgs')


def ws_install_dir():
    """The colcon install folder written by scripts/setup.sh, or None."""
    ws = os.environ.get('SPATIA_ROS_WS') or os.path.join(REPO_ROOT, '.ros_ws')
    path = os.path.join(ws, 'install')
    return path if os.path.isdir(path) else None


def _site_packages(prefix):
    """The Python folder of one colcon-installed package (layout depends on the interpreter)."""
    ver = 'python%d.%d' % sys.version_info[:2]
    for rel in (('lib', ver, 'site-packages'), ('local', 'lib', ver, 'dist-packages'),
                ('lib', ver, 'dist-packages'), ('lib', 'python3', 'dist-packages')):
        path = os.path.join(prefix, *rel)
        if os.path.isdir(path):
            return path
    return None


def share_dir():
    """Folder holding launch/ and config/: the source tree in a pip set-up, else ament's."""
    if os.path.isfile(os.path.join(REPO_ROOT, 'package.xml')):
        return REPO_ROOT
    from ament_index_python.packages import get_package_share_directory
    return get_package_share_directory('spatia_ros')


def preload_libraries():
    """Load the generated libraries (RTLD_GLOBAL) so that dlopen() by name finds them."""
    import ctypes
    import glob
    while _lib_dirs:
        libs = sorted(glob.glob(os.path.join(_lib_dirs.pop(), 'lib*.so')))
        while libs:   # retry until no progress: a library may need one listed after it
            failed = []
            for lib in libs:
                try:
                    ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
                except OSError:
                    failed.append(lib)
            if len(failed) == len(libs):
                break
            libs = failed


class _PreloadFinder:
    """Meta path finder that preloads the libraries before the first generated module loads."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in _TRIGGERS:
            preload_libraries()
        return None


def setup(package_path):
    """Apply the environment; ``package_path`` is ``spatia_ros.__path__``."""
    os.environ.setdefault('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA')
    install = ws_install_dir()
    if install is None:
        return
    prefix = os.path.join(install, 'spatia_ros')
    site = _site_packages(prefix)
    generated = os.path.join(site, 'spatia_ros') if site else None
    if generated and os.path.isdir(os.path.join(generated, 'msg')) and generated not in package_path:
        package_path.append(generated)
        _lib_dirs.append(os.path.join(prefix, 'lib'))
    prefix = os.path.join(install, 'tf2_msgs')
    site = _site_packages(prefix)
    if site and site not in sys.path and importlib.util.find_spec('tf2_msgs') is None:
        sys.path.append(site)
        _lib_dirs.append(os.path.join(prefix, 'lib'))
    if _lib_dirs and not any(isinstance(f, _PreloadFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PreloadFinder())
