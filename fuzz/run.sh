#!/bin/sh
# Builds droptrace-fuzz (release, its own scratch path) and fuzzes every format
# from the committed fixtures. Extra arguments go to droptrace-fuzz, e.g.
#   fuzz/run.sh --executions 50000 --seed 3 --format gguf
set -eu
cd "$(dirname "$0")/.."
DROPTRACE_FUZZ=1 swift build -c release --product droptrace-fuzz --scratch-path .build-fuzz
exec .build-fuzz/release/droptrace-fuzz "$@" \
    Tests/DroptraceTests/Fixtures/models Tests/DroptraceTests/Fixtures/gguf Tests/DroptraceTests/Fixtures/pickles \
    Tests/DroptraceTests/Fixtures/formats
