#!/usr/bin/env bash
# Runs droptrace's test suite (installing the C libraries first if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh
swift build --build-tests
swift test --skip-build
