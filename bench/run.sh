#!/usr/bin/env bash
# droptrace's on-demand benchmark (never run in CI): droptrace score vs a hooked PyTorch pass vs
# LLM-Drop's three-pass procedure, on two random-weight Llama checkpoints. See bench/README.md.
#
#   bench/run.sh [-r REPS] [-t THREADS] [-m "mid tiny"]
#
# Environment: QUIET_WAIT (300: seconds to wait before each run for the machine to go idle),
# RETRIES (2: repeats of a run disturbed by other processes), PYTHON (default /tmp/bench-venv/bin/python; needs bench/requirements.txt),
# REPS (3), THREADS (2), MODELS ("mid tiny"), BENCH_WORK (bench/work: checkpoints, results). Writes raw results to bench/work/results/ and the
# summary to bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

REPS=${REPS:-3}
THREADS=${THREADS:-2}
MODELS=${MODELS:-"mid tiny"}
PYTHON=${PYTHON:-/tmp/bench-venv/bin/python}
while getopts "r:t:m:h" opt; do
    case $opt in
        r) REPS=$OPTARG ;;
        t) THREADS=$OPTARG ;;
        m) MODELS=$OPTARG ;;
        *) sed -n '2,10p' "$0"; exit 64 ;;
    esac
done
COMMAND="PYTHON=$PYTHON bench/run.sh -r $REPS -t $THREADS -m '$MODELS'"

WORK=${BENCH_WORK:-$ROOT/bench/work}
OUT=$WORK/results
log() { echo "$(date -u +%H:%M:%S) $*" >&2; }

# busy CPU seconds of the whole machine so far (user+nice+system+irq+softirq+steal, /proc/stat)
busy() { awk '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / 100 }' /proc/stat; }

# wait_quiet: the machine is shared (builds, tests); wait until everything else together uses less
# than a quarter of a core over 5 s, at most QUIET_WAIT seconds (default 300; 0 = don't wait).
QUIET_WAIT=${QUIET_WAIT:-300}
wait_quiet() {
    local waited=0 b0 b1
    while [ "$waited" -lt "$QUIET_WAIT" ]; do
        b0=$(busy); sleep 5; b1=$(busy)
        if awk -v a="$b0" -v b="$b1" 'BEGIN { exit !((b - a) / 5 < 0.25) }'; then return 0; fi
        [ "$waited" -eq 0 ] && log "waiting for the machine to go quiet (up to ${QUIET_WAIT}s)"
        waited=$((waited + 5))
    done
    log "still busy after ${QUIET_WAIT}s; measuring anyway (see other_cpu_s in the results)"
}

# run NAME CMD...: one process under /usr/bin/time -v (peak RSS, CPU time); its stdout to NAME.json,
# stderr to NAME.log; NAME.wall gets the wall time (date, ns), the load average before it and the
# machine's busy CPU seconds during it (minus the process's own user+sys = other processes' share).
# A run during which other processes used more than max(2 s, 10% of its wall time) of CPU is
# repeated, up to RETRIES (2) more times; the report uses only clean runs when there are any.
RETRIES=${RETRIES:-2}
run() {
    local name=$1; shift
    local load t0 t1 b0 b1 attempt=0 own
    while :; do
        wait_quiet
        load=$(cut -d' ' -f1 /proc/loadavg)
        b0=$(busy); t0=$(date +%s.%N)
        if ! /usr/bin/time -v -o "$OUT/$name.time" "$@" > "$OUT/$name.json" 2> "$OUT/$name.log"; then
            echo "FAILED: $name (see $OUT/$name.log)" >&2
            tail -5 "$OUT/$name.log" >&2
            echo '{"failed": true}' > "$OUT/$name.json"
        fi
        t1=$(date +%s.%N); b1=$(busy)
        own=$(awk -F': ' '/User time|System time/ { s += $2 } END { printf "%.2f", s }' "$OUT/$name.time")
        awk -v a="$t0" -v b="$t1" -v l="$load" -v c="$b0" -v d="$b1" -v n="$attempt" \
            'BEGIN { printf "{\"wall\": %.3f, \"loadavg_before\": %s, \"machine_busy_cpu_s\": %.2f, \"retries\": %d}\n", b - a, l, d - c, n }' \
            > "$OUT/$name.wall"
        log "$name: $(cat "$OUT/$name.wall")"
        if awk -v a="$t0" -v b="$t1" -v c="$b0" -v d="$b1" -v o="$own" \
            'BEGIN { w = b - a; m = (0.1 * w > 2 ? 0.1 * w : 2); exit !((d - c) - o > m) }' \
            && [ "$attempt" -lt "$RETRIES" ]; then
            attempt=$((attempt + 1))
            log "$name: other processes were busy during it; again ($attempt/$RETRIES)"
            continue
        fi
        break
    done
}

# -- dependencies -----------------------------------------------------------------------------
scripts/ensure-deps.sh
if [ ! -x /usr/bin/time ] || ! command -v gcc >/dev/null; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
    log "installing time gcc"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time gcc libc6-dev >/dev/null
fi
if ! "$PYTHON" -c "import torch, transformers, safetensors, h5py, numpy" 2>/dev/null; then
    echo "PYTHON=$PYTHON lacks torch/transformers/safetensors/h5py; create it with:" >&2
    echo "  python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install -r bench/requirements.txt" >&2
    exit 1
fi

# -- build ------------------------------------------------------------------------------------
log "building droptrace (release, .build-bench)"
swift build -c release --scratch-path .build-bench >&2
DROPTRACE=$(swift build -c release --scratch-path .build-bench --show-bin-path)/droptrace
# what was built, recorded now: the work tree may change while the benchmark runs
BUILT="commit $(git rev-parse --short HEAD)"
[ -n "$(git status --porcelain -- Sources Package.swift)" ] && BUILT="$BUILT + uncommitted changes in Sources/Package.swift"
BUILT="$BUILT, built $(date -u '+%Y-%m-%d %H:%M UTC')"
mkdir -p "$WORK"
gcc -O2 bench/sgemm_peak.c -o "$WORK/sgemm_peak" -lopenblas

# -- inputs -----------------------------------------------------------------------------------
log "checkpoints and calibration (created once)"
"$PYTHON" bench/make_checkpoints.py --out "$WORK" --models $MODELS
CALIB=$WORK/calib.jsonl

rm -rf "$OUT"
mkdir -p "$OUT"
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error

log "SGEMM peak with $THREADS threads"
wait_quiet
"$WORK/sgemm_peak" 5 > "$OUT/sgemm.json"
cat "$OUT/sgemm.json" >&2

for model in $MODELS; do
    ckpt=$WORK/$model
    for rep in $(seq 1 "$REPS"); do
        run "$model.droptrace.$rep" "$DROPTRACE" score "$ckpt" --calibration "$CALIB" \
            --output "$OUT/$model.droptrace.$rep.h5" --threads "$THREADS"
        run "$model.pytorch.$rep" "$PYTHON" bench/pytorch_hooked.py "$ckpt" --calibration "$CALIB" --threads "$THREADS"
        for target in attn mlp block; do
            run "$model.llmdrop-$target.$rep" "$PYTHON" bench/llmdrop_procedure.py "$ckpt" \
                --calibration "$CALIB" --target "$target" --threads "$THREADS"
        done
    done
done

"$PYTHON" bench/report.py --results "$OUT" --work "$WORK" --threads "$THREADS" --reps "$REPS" \
    --models "$MODELS" --droptrace "$DROPTRACE" --built "$BUILT" --command "$COMMAND" --python "$PYTHON" --output bench/RESULTS.md
