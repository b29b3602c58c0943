#!/usr/bin/env bash
# Tests only: the ROS 2 tools that have no wheels (launch, launch_ros, ros2cli and its verbs,
# rosidl_runtime_py) and the interface packages they need (composition_interfaces, tf2_msgs),
# from ../shared/reference/ros2, into .ros_tools/ beside .venv. A user's ROS 2 install has its
# own; nothing at run time uses this folder. scripts/test.sh calls this script; the tests in
# test/ros/test_ros2_tools.py source .ros_tools/env.sh (skip without it, fail with CI=true).
#
#   bash scripts/setup_ros_tools.sh        # idempotent; SPATIA_FORCE=1 redoes it
#
# What it takes (../shared/reference/README.md): pip install --no-deps of each Python package
# plus osrf-pycommon==2.0.2 from the index; colcon builds of composition_interfaces and tf2_msgs
# (BUILD_TESTING=OFF) into an underlay; LD_LIBRARY_PATH naming the venv's ROS libraries, which
# the wheels otherwise find from sys.prefix only.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
REF=$(realpath -m "$ROOT/../shared/reference/ros2")
VENV=$(realpath -m "${VENV:-$ROOT/.venv}")
VPY=$VENV/bin/python
OUT=$ROOT/.ros_tools
FORCE=${SPATIA_FORCE:-0}
log() { printf '[ros-tools %3ds] %s\n' "$SECONDS" "$*"; }

if [[ ! -d $REF ]]; then
  log "skipped: $REF not found (the ros2 CLI / launch tests will skip; CI needs ../shared)"
  rm -f "$OUT/env.sh"
  exit 0
fi
if [[ -n ${ROS_DISTRO:-} ]] && command -v ros2 >/dev/null; then
  log "a sourced ROS 2 ($ROS_DISTRO) provides ros2 and launch: nothing to do"
  mkdir -p "$OUT" && printf '# the sourced ROS 2 environment provides the tools\n' >"$OUT/env.sh"
  exit 0
fi
[[ -x $VPY ]] || { echo "[ros-tools] error: run scripts/setup.sh first" >&2; exit 1; }

# simulation_interfaces (the Simulation Interfaces standard) is not built again here: when
# scripts/setup.sh built it into .ros_ws/install, env.sh puts that prefix on the paths (the ros2
# CLI and a launched world_sim, which imports it from a workspace without .ros_ws, then see it).
SIMIF=$(realpath -m "${SPATIA_ROS_WS:-$ROOT/.ros_ws}/install/simulation_interfaces")
[[ -d $SIMIF/share/simulation_interfaces ]] || SIMIF=
PY_PKGS=(launch launch_xml launch_yaml launch_ros ros2launch rosidl_runtime_py ros2cli ros2action ros2interface
         ros2node ros2param ros2pkg ros2run ros2service ros2topic)
IF_PKGS=(composition_interfaces tf2_msgs)
digest() { (cd "$REF" && find "${PY_PKGS[@]}" "${IF_PKGS[@]}" -type f -print0 | sort -z | xargs -0 sha256sum) |
           cat - <(echo "tools layout 2 simif=$SIMIF") | sha256sum | cut -c1-32; }
# This package built by colcon in a workspace as a user would (src/spatia_ros: a copy of the
# repository's files), plain and --symlink-install, into .ros_tools/ws_{plain,symlink}. Rebuilt
# incrementally on every call (unchanged files keep their times, so only the install step reruns).
list_sources() {  # the files a clone has: git's tracked and not ignored ones, else all but build outputs
  if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -co --exclude-standard -z
  else
    (cd "$ROOT" && find . \( -name .git -o -name .venv -o -name .ros_ws -o -name .ros_tools -o -name out \
       -o -name __pycache__ -o -name '*.egg-info' \) -prune -o \( -type f -o -type l \) -printf '%P\0')
  fi
}

build_workspaces() {
  # shellcheck disable=SC1091
  source "$OUT/env.sh"
  for mode in plain symlink; do
    ws=$OUT/ws_$mode
    mkdir -p "$ws/src/spatia_ros"
    list_sources | "$VPY" -c '
import os, shutil, sys
src, dst = sys.argv[1], sys.argv[2]
names = {n for n in sys.stdin.read().split("\0") if n and os.path.lexists(os.path.join(src, n))}
for n in names:
    a, b = os.path.join(src, n), os.path.join(dst, n)
    sa = os.lstat(a)
    if os.path.lexists(b) and not os.path.islink(a):
        sb = os.lstat(b)
        if sb.st_size == sa.st_size and int(sb.st_mtime) == int(sa.st_mtime):
            continue
    os.makedirs(os.path.dirname(b), exist_ok=True)
    if os.path.lexists(b):
        os.remove(b)
    if os.path.islink(a):
        os.symlink(os.readlink(a), b)
    else:
        shutil.copy2(a, b)
for root, _, files in os.walk(dst):
    for f in files:
        rel = os.path.relpath(os.path.join(root, f), dst)
        if rel not in names:
            os.remove(os.path.join(root, f))
' "$ROOT" "$ws/src/spatia_ros"
    log "colcon build$([[ $mode == symlink ]] && echo " --symlink-install") of src/spatia_ros in .ros_tools/ws_$mode"
    extra=()
    [[ $mode == symlink ]] && extra=(--symlink-install)
    (cd "$ws" && colcon build "${extra[@]}" --event-handlers console_cohesion+ console_direct- status- desktop_notification- \
       --cmake-args -DBUILD_TESTING=OFF "-DPython3_EXECUTABLE=$VPY" >"$ws/build.log" 2>&1) ||
      { tail -n 40 "$ws/build.log" >&2; echo "[ros-tools] error: colcon build ($mode) failed, see $ws/build.log" >&2; exit 1; }
  done
}

want="$("$VPY" -c 'import sys; print(sys.version_info[:2])' | tr -d ' ') $(digest)"
if [[ $FORCE != 1 && -f $OUT/.stamp && $(cat "$OUT/.stamp") == "$want" && -f $OUT/env.sh ]]; then
  log "tools up to date"
  build_workspaces
  log "done"
  exit 0
fi
rm -rf "$OUT"
mkdir -p "$OUT/src"

log "pip install --no-deps ${#PY_PKGS[@]} packages + osrf-pycommon==2.0.2 into .ros_tools/py"
args=()
for p in "${PY_PKGS[@]}"; do args+=("$REF/$p"); done
"$VPY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation --prefix "$OUT/py" \
  osrf-pycommon==2.0.2 "${args[@]}" >"$OUT/pip.log" 2>&1 || { tail -n 30 "$OUT/pip.log" >&2; exit 1; }
SITE=$(ls -d "$OUT"/py/lib/python3*/site-packages)

log "colcon build ${IF_PKGS[*]} into .ros_tools/underlay"
for p in "${IF_PKGS[@]}"; do cp -r "$REF/$p" "$OUT/src/$p"; done
(
  export PATH=$VENV/bin:$PATH CMAKE_PREFIX_PATH=$VENV AMENT_PREFIX_PATH=$VENV
  colcon --log-base "$OUT/log" build --base-paths "$OUT/src" --build-base "$OUT/build" --install-base "$OUT/underlay" \
    --merge-install --event-handlers console_cohesion+ console_direct- status- desktop_notification- \
    --cmake-args -DBUILD_TESTING=OFF "-DPython3_EXECUTABLE=$VPY" >"$OUT/build.log" 2>&1
) || { tail -n 40 "$OUT/build.log" >&2; echo "[ros-tools] error: colcon build failed, see .ros_tools/build.log" >&2; exit 1; }
rm -rf "$OUT/build" "$OUT/src"

# The environment a ROS user has after `source /opt/ros/<distro>/setup.bash`: the venv (the
# wheels: rclpy, the message packages, colcon), the tools and the underlay.
ros_libs=$(find "$VENV/lib" -maxdepth 4 -type d -name 'ros_*.libs' -path '*site-packages*' | sort | tr '\n' ':')
UND_SITE=$(ls -d "$OUT"/underlay/lib/python3*/site-packages 2>/dev/null || ls -d "$OUT"/underlay/local/lib/python3*/dist-packages)
simif_py= simif_ament= simif_lib=
if [[ -n $SIMIF ]]; then
  simif_site=$(ls -d "$SIMIF"/lib/python3*/site-packages 2>/dev/null || ls -d "$SIMIF"/local/lib/python3*/dist-packages)
  simif_py=$simif_site: simif_ament=$SIMIF: simif_lib=$SIMIF/lib:
  log "simulation_interfaces from ${SIMIF#"$ROOT"/}"
else
  log "no simulation_interfaces in .ros_ws (scripts/setup.sh builds it from ../shared): world_sim will lack the standard's services"
fi
cat >"$OUT/env.sh" <<EOF
# Generated by scripts/setup_ros_tools.sh (tests only). Source it to get ros2 / ros2 launch.
export PATH="$VENV/bin:$OUT/py/bin:\$PATH"
export PYTHONPATH="$UND_SITE:$simif_py$SITE\${PYTHONPATH:+:\$PYTHONPATH}"
export AMENT_PREFIX_PATH="$OUT/underlay:$simif_ament$OUT/py:$VENV\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$OUT/underlay:$simif_ament$VENV\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH}"
export LD_LIBRARY_PATH="$OUT/underlay/lib:$simif_lib$VENV/lib:$ros_libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export SPATIA_ROS_TOOLS="$OUT"
EOF
# shellcheck disable=SC1091
( source "$OUT/env.sh" && cd / && ros2 --help >/dev/null && "$VPY" -c 'import launch, launch_ros, composition_interfaces.srv, tf2_msgs.srv' &&
  { [[ -z $SIMIF ]] || "$VPY" -c 'import simulation_interfaces.srv'; } ) \
  || { echo "[ros-tools] error: the installed tools do not start" >&2; rm -f "$OUT/env.sh"; exit 1; }
echo "$want" >"$OUT/.stamp"
build_workspaces
log "done: source .ros_tools/env.sh for ros2 and ros2 launch"
