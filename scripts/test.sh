#!/usr/bin/env bash
# Set everything up (scripts/setup.sh) and run the whole test suite. CI runs this (.ci/run).
#   bash scripts/test.sh [extra pytest arguments]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
# tests only: ros2 / ros2 launch from ../shared/reference/ros2 and colcon workspaces of this
# package (.ros_tools/); without ../shared the CLI tests skip, with CI=true they fail
bash scripts/setup_ros_tools.sh
# DDS stays on this machine in every test (config/fastdds_loopback.xml; test/ros/conftest.py
# sets the same default)
export SPATIA_DDS_PROFILE=${SPATIA_DDS_PROFILE:-loopback}
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then
  echo "test.sh: pytest collected no tests; that is a failure" >&2
  exit 1
fi
exit $rc
