"""Environment glue, applied by ``import spatia_ros`` (so before rclpy is used).

* ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` unless the user set it: with Fast DDS defaults,
  large images between processes are dropped or delayed. Every peer needs the same setting
  (rviz2, ``ros2 topic echo``, scripts that do not import spatia_ros): a LARGE_DATA process and
  a default one exchange small messages but not large ones (images). Export it in those shells, or
  set ``FASTDDS_BUILTIN_TRANSPORTS=DEFAULT`` for spatia_ros too.
* ``SPATIA_DDS_PROFILE=loopback`` (opt-in; the tests, benchmarks, CI, ``scripts/run.sh`` set it):
  DDS traffic stays on this machine and images stay fast, via ``config/fastdds_loopback.xml``
  (shared memory for data, UDP discovery on 127.0.0.1 only, no multicast). Sets
  ``FASTDDS_DEFAULT_PROFILES_FILE`` to it unless already set, and
  ``ROS_AUTOMATIC_DISCOVERY_RANGE=SYSTEM_DEFAULT``: for ``LOCALHOST`` rmw_fastrtps would replace the
  profile's transports with its own (the ~11 ms/image slower path). Child processes inherit all
  three. Unset or ``default``: nothing changes (what a robot uses).
* pip-wheel environment (``scripts/setup.sh``): colcon builds our interfaces, and a local
  ``tf2_msgs`` when no real one exists, and ``simulation_interfaces`` from ``../shared`` when
  none exists, into ``<repo>/.ros_ws/install`` (or ``$SPATIA_ROS_WS``).
  The generated modules are added to ``spatia_ros.__path__`` (and the local ``tf2_msgs`` and
  ``simulation_interfaces`` to ``sys.path``, each only when no other one is importable), and their shared libraries are
  preloaded when first imported, since ``LD_LIBRARY_PATH`` cannot change in a running process.
  In a sourced colcon workspace none of this is found and nothing changes.
"""
import importlib.util
import os
import sys

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_lib_dirs = []         # install/<pkg>/lib folders whose libraries still need preloading
_TRIGGERS = ('spatia_ros.msg', 'spatia_ros.srv', 'spatia_ros.action', 'tf2_msgs', 'simulation_interfaces')
#: Interface packages setup.sh builds only when none is importable: added to sys.path in that case.
_LOCAL_PACKAGES = ('tf2_msgs', 'simulation_interfaces')


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


DDS_PROFILES = {'loopback': 'fastdds_loopback.xml'}  # SPATIA_DDS_PROFILE value -> file in config/


def dds_profile_file(name):
    """The Fast DDS XML file of profile ``name`` (source tree, else the installed share folder)."""
    if name not in DDS_PROFILES:
        raise ValueError(f"SPATIA_DDS_PROFILE={name!r} is not one of: default, {', '.join(DDS_PROFILES)}")
    path = os.path.join(REPO_ROOT, 'config', DDS_PROFILES[name])
    if not os.path.isfile(path):
        path = os.path.join(share_dir(), 'config', DDS_PROFILES[name])
    return path


def apply_dds_profile():
    """Apply ``SPATIA_DDS_PROFILE`` (see the module docstring); returns the profile file or None."""
    name = os.environ.get('SPATIA_DDS_PROFILE', '').strip()
    if name in ('', 'default'):
        return None
    path = dds_profile_file(name)
    os.environ.setdefault('FASTDDS_DEFAULT_PROFILES_FILE', path)  # Fast DDS 3 reads this name
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'SYSTEM_DEFAULT'
    return os.environ['FASTDDS_DEFAULT_PROFILES_FILE']


def setup(package_path):
    """Apply the environment; ``package_path`` is ``spatia_ros.__path__``."""
    apply_dds_profile()
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
    for name in _LOCAL_PACKAGES:
        prefix = os.path.join(install, name)
        site = _site_packages(prefix)
        if site and site not in sys.path and importlib.util.find_spec(name) is None:
            sys.path.append(site)
            _lib_dirs.append(os.path.join(prefix, 'lib'))
    if _lib_dirs and not any(isinstance(f, _PreloadFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PreloadFinder())
