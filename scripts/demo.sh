#!/usr/bin/env bash
# Sets droptrace up and runs its main job on the demo data shipped in data/:
# traces the demo checkpoint series and writes reports/demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
swift build -c release --product droptrace
.build/release/droptrace run pipelines/demo.yaml "$@"
echo "report: reports/demo/report.md"
