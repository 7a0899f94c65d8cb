#!/usr/bin/env bash
# Sets droptrace up and runs its main job on the demo data shipped in data/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
swift build -c release --product droptrace
.build/release/droptrace score data/demo-series/checkpoint-1000 --calibration data/calibration.txt \
    --seq-len 128 --samples 16 --output reports/demo/scores.h5
