#!/usr/bin/env bash
# Set everything up (scripts/setup.sh) and run the simulator on the built-in world, no weights:
#  1. the `spatia` CLI generates a closed-loop clip into out/loop/ (videos, memory, poses);
#  2. `spatia-sim` starts the ROS 2 world simulator, drives it along the demo path for
#     $DURATION seconds (default 20) and records the session to out/session_<time>/ (MCAP).
#   bash scripts/run.sh
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
export PATH=$ROOT/.venv/bin:$PATH
# DDS stays on this machine (config/fastdds_loopback.xml: shared memory + UDP on 127.0.0.1, no
# multicast); SPATIA_DDS_PROFILE=default runs with the ROS defaults instead, as on a robot.
export SPATIA_DDS_PROFILE=${SPATIA_DDS_PROFILE:-loopback}
spatia generate --world builtin --trajectory loop --frames 72 --out out/loop --set camera.width=320 --set camera.height=240
spatia-sim --demo --duration "${DURATION:-20}" --record "out/session_$(date +%Y%m%d_%H%M%S)" --logs out/logs
