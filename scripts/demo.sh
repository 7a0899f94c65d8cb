#!/usr/bin/env bash
# Sets droptrace up and runs its main job on the demo data shipped in data/:
# traces the demo checkpoint series and writes reports/demo/. Only report.md and
# figures/ are committed, not the store scores.h5: a fresh clone scores every
# checkpoint, and the committed report is what that run writes.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
swift build -c release --product droptrace
.build/release/droptrace run pipelines/demo.yaml "$@"
echo "report: reports/demo/report.md"
