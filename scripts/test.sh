#!/usr/bin/env bash
# Runs droptrace's test suite: installs the C libraries if missing, starts the
# one-node Slurm cluster the cluster tests run against, builds, tests.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-deps.sh --tests
scripts/slurm-cluster.sh >/dev/null
export DROPTRACE_SLURM=1
swift build --build-tests
swift test --skip-build
