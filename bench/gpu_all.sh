#!/usr/bin/env bash
# The GPU measurements of issue 16 in one command (well under 10 minutes on one H100/H200):
#   1. renderer points/s on CUDA, 640x480, ~1M-point built-in room   (bench_core.py --only render)
#   2. pose -> image through world_sim with the CUDA renderer        (bench_ros_latency.py --device cuda)
#   3. the diffusion backend: our rounds vs the release's sampler     (bench_spatia_gpu.py)
#
#   bash bench/gpu_all.sh [--dry-run] [--out DIR]
#
# --dry-run runs the same three stages on CPU with tiny sizes (about 2 minutes;
# test/ros/test_bench_smoke.py runs it, so this script cannot rot). Each stage has its own time limit;
# a stage that fails or is skipped (no rclpy on the GPU machine, no CUDA torch) is reported and the
# others still run. Results: DIR/render.json, DIR/ros_latency.json, DIR/spatia_gpu.json and
# DIR/summary.txt (default DIR: $OUT when set, e.g. on the lent machine, else out/gpu). Python:
# $PYTHON, else .venv/bin/python when it exists, else python3. Exit status: 0 when every stage that
# ran succeeded (skips do not count), 1 otherwise.
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DRY=0
DIR=${OUT:-out/gpu}
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) DRY=1; shift ;;
    --out) DIR=$2; shift 2 ;;
    *) echo "usage: bash bench/gpu_all.sh [--dry-run] [--out DIR]" >&2; exit 2 ;;
  esac
done
if [[ -n ${PYTHON:-} ]]; then PY=$PYTHON
elif [[ -x .venv/bin/python ]]; then PY=.venv/bin/python
else PY=python3; fi
mkdir -p "$DIR"
export PYTHONUNBUFFERED=1
export SPATIA_DDS_PROFILE=${SPATIA_DDS_PROFILE:-loopback}   # DDS stays on the machine

if [[ $DRY == 1 ]]; then
  DEV=cpu
  RENDER=(--render-voxel 0.05 --repeats 2)
  ROS=(--width 160 --height 120 --voxel 0.05 --seconds 2 --warmup 1 --rate 10 --probe-rate 20 --probe-seconds 1)
  SPATIA=(--tiny --device cpu --runs first --no-release)
  LIMITS=(120 200 240)
else
  DEV=cuda
  RENDER=(--repeats 20)
  ROS=(--seconds 20 --probe-seconds 10)
  SPATIA=(--device cuda --steps 10)
  LIMITS=(120 150 300)
fi
SUMMARY=$DIR/summary.txt
: > "$SUMMARY"
failed=0

stage() {  # name, time limit, command...
  local name=$1 limit=$2
  shift 2
  echo "=== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$DIR/$name.log"
  local rc=${PIPESTATUS[0]}
  local verdict="ok"
  if [[ $rc == 3 ]]; then verdict="skipped"
  elif [[ $rc != 0 ]]; then verdict="FAILED (exit $rc)"; failed=1; fi
  echo "$name: $verdict in $((SECONDS - t0)) s" | tee -a "$SUMMARY"
}

if [[ $DEV == cuda ]] && ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_all: $PY has no CUDA torch; run with --dry-run for the CPU check" | tee -a "$SUMMARY"
  exit 1
fi
$PY - >> "$SUMMARY" 2>&1 <<'EOF'
import platform, torch
gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"python {platform.python_version()}, torch {torch.__version__}, GPU {gpu}")
EOF

stage render "${LIMITS[0]}" "$PY" bench/bench_core.py --only render --device "$DEV" "${RENDER[@]}" --out "$DIR/render.json"
if $PY -c 'import rclpy' 2>/dev/null; then
  DOMAIN=()  # a caller's private domain (the tests'), else the benchmark picks a random one
  [[ -n ${ROS_DOMAIN_ID:-} ]] && DOMAIN=(--domain "$ROS_DOMAIN_ID")
  stage ros_latency "${LIMITS[1]}" "$PY" bench/bench_ros_latency.py --device "$DEV" "${ROS[@]}" "${DOMAIN[@]}" \
    --out "$DIR/ros_latency.json"
else
  echo "ros_latency: skipped (rclpy is not importable with $PY)" | tee -a "$SUMMARY"
fi
stage spatia_gpu "${LIMITS[2]}" "$PY" bench/bench_spatia_gpu.py "${SPATIA[@]}" --out "$DIR/spatia_gpu.json"

$PY - "$DIR" >> "$SUMMARY" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
def load(name):
    p = d / name
    return json.loads(p.read_text()) if p.is_file() else None
r = load("render.json")
if r:
    x = r["render"]
    print(f"render {x['points']:,} points 640x480 on {x['device']}: {x['ours_s'] * 1e3:.2f} ms, "
          f"{x['points_per_s']:.3g} points/s  {x.get('result', '')}")
l = load("ros_latency.json")
if l and "latency_ms" in l:
    t = l.get("throughput", {})
    print(f"pose->image on {l['config'].get('device')}: p50 {l['latency_ms']['p50']:.1f} ms, p99 {l['latency_ms']['p99']:.1f} ms, "
          f"{t.get('image_rate_hz', float('nan')):.1f} images/s at {t.get('offered_hz', float('nan')):.0f} Hz offered")
s = load("spatia_gpu.json")
if s:
    print("diffusion: " + json.dumps(s.get("rows", s))[:600])
EOF
echo
cat "$SUMMARY"
exit $failed
