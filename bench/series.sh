#!/usr/bin/env bash
# On-demand benchmark of a first trace over a long series (never run in CI): N checkpoints of a
# small fixture model (hard links to one set of files), scored and analysed by `droptrace trace`.
# Scoring such a model takes milliseconds, so this times what grows with the series: discovery,
# the store rewrites, the analysis and its bootstrap, the report.
#
#   bench/series.sh [N] [REPS]      # default 300 checkpoints, 3 repetitions
#
# Environment: DROPTRACE (the binary to time; default .build/release/droptrace, built when
# missing), MODEL (a directory with config.json, model.safetensors; default the llama-f32
# fixture), BENCH_WORK (default bench/work). Prints each run's wall, user and system seconds, then
# the medians.
set -euo pipefail
N=${1:-300}
REPS=${2:-3}
cd "$(dirname "$0")/.."
ROOT=$PWD
DROPTRACE=${DROPTRACE:-$ROOT/.build/release/droptrace}
MODEL=${MODEL:-$ROOT/Tests/DroptraceTests/Fixtures/models/llama-f32}
WORK=${BENCH_WORK:-$ROOT/bench/work}/series-$N
[[ -x $DROPTRACE ]] || swift build -c release >&2
[[ -f $MODEL/config.json ]] || { echo "bench/series.sh: $MODEL: no config.json" >&2; exit 1; }
command -v /usr/bin/time >/dev/null || { echo "bench/series.sh: needs GNU time (apt-get install time)" >&2; exit 1; }

if [[ ! -d $WORK/series ]]; then
    mkdir -p "$WORK/series.partial"
    for ((i = 1; i <= N; i++)); do
        mkdir -p "$WORK/series.partial/checkpoint-$((i * 10))"
        for f in "$MODEL"/*; do ln "$f" "$WORK/series.partial/checkpoint-$((i * 10))/" 2>/dev/null || cp "$f" "$WORK/series.partial/checkpoint-$((i * 10))/"; done
    done
    mv "$WORK/series.partial" "$WORK/series"
fi
CALIBRATION=$ROOT/Tests/DroptraceTests/Fixtures/calibration/calib.jsonl

echo "droptrace trace over $N checkpoints of $(basename "$MODEL"), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) CPUs"
for ((r = 1; r <= REPS; r++)); do
    rm -rf "$WORK/out"
    /usr/bin/time -f "%e %U %S" -o "$WORK/time.$r" "$DROPTRACE" trace "$WORK/series" --calibration "$CALIBRATION" \
        --output "$WORK/out" >/dev/null 2>"$WORK/log.$r" || { echo "run $r failed: see $WORK/log.$r" >&2; exit 1; }
    read -r wall user sys <"$WORK/time.$r"
    echo "run $r: wall $wall s, user $user s, system $sys s"
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
for column in 1 2; do
    cat "$WORK"/time.* | cut -d' ' -f$column | median
done | paste -sd' ' | awk '{print "median: wall " $1 " s, user " $2 " s"}'
