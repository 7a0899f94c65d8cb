#!/bin/sh
# Builds droptrace-fuzz (release, its own scratch path) and fuzzes every target
# (weight formats, config.json, tokenizer.json, calibration, pipeline YAML),
# 20,000 executions each, from the committed fixtures. Extra arguments go to
# droptrace-fuzz, e.g.
#   fuzz/run.sh --executions 50000 --seed 3 --target gguf,config
set -eu
cd "$(dirname "$0")/.."
DROPTRACE_FUZZ=1 swift build -c release --product droptrace-fuzz --scratch-path .build-fuzz
fixtures=Tests/DroptraceTests/Fixtures
exec .build-fuzz/release/droptrace-fuzz "$@" \
    $fixtures/models $fixtures/gguf $fixtures/gguf-arch $fixtures/pickles $fixtures/formats \
    $fixtures/tokenizers $fixtures/sentencepiece $fixtures/tokenizer-cases \
    $fixtures/calibration $fixtures/text $fixtures/pipeline-yaml pipelines
