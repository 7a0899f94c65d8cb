#!/usr/bin/env bash
# droptrace's on-demand benchmark (never run in CI): droptrace score (f32, bf16) vs PyTorch's hooked
# pass (float32, bfloat16) vs LLM-Drop's three-pass procedure (bfloat16 as it runs; float32 on
# request), with the peaks of the matrix units measured in the same run. See bench/README.md.
#
#   bench/run.sh [-r REPS] [-t THREADS] [-m "mid tiny"] [-c "CONTENDERS"] [-o RESULTS_FILE]
#
#   -r  repetitions: one number for every model, or per model ("mid=3 tiny=1", the default)
#   -c  contenders (default "droptrace-f32 droptrace-bf16 pytorch-f32 pytorch-bf16 llmdrop-bf16";
#       also llmdrop-f32)
#   -o  where the summary goes (default bench/RESULTS.md; another CPU's run: bench/results/<cpu>.md)
# Environment: QUIET_WAIT (300: seconds to wait before each run for the machine to go idle),
# RETRIES (2: repeats of a run disturbed by other processes), PYTHON (default /tmp/bench-venv/bin/python; needs bench/requirements.txt),
# REPS, THREADS (2), MODELS ("mid tiny"), CONTENDERS, BENCH_WORK (bench/work: checkpoints, results),
# SAMPLES (only the first N calibration sequences: a quick smoke run, not a benchmark),
# DROPTRACE (an already built droptrace binary to time instead of building one), PEAK_REPS (3:
# repetitions of each peak measurement), PEAK_SUSTAIN_SECONDS (20: each unit's best shape run back
# to back this long, the rate it sustains; 0 skips it), RESULTS_FILE (as -o). Writes raw
# results to $BENCH_WORK/results/ and the summary to bench/RESULTS.md.
set -euo pipefail
# paths given relative to the caller's directory stay valid after the cd below
# (PYTHON without a slash is a command looked up in PATH)
for v in DROPTRACE PYTHON BENCH_WORK RESULTS_FILE; do
    if [[ -n ${!v:-} && ${!v} != /* && ($v != PYTHON || ${!v} == */*) ]]; then printf -v "$v" '%s' "$PWD/${!v}"; fi
done
CALLER=$PWD
cd "$(dirname "$0")/.."
ROOT=$PWD

ALL_CONTENDERS="droptrace-f32 droptrace-bf16 pytorch-f32 pytorch-bf16 llmdrop-bf16 llmdrop-f32"
REPS=${REPS:-"mid=3 tiny=1"}
THREADS=${THREADS:-2}
MODELS=${MODELS:-"mid tiny"}
CONTENDERS=${CONTENDERS:-"droptrace-f32 droptrace-bf16 pytorch-f32 pytorch-bf16 llmdrop-bf16"}
PYTHON=${PYTHON:-/tmp/bench-venv/bin/python}
SAMPLES=${SAMPLES:-}
PEAK_REPS=${PEAK_REPS:-3}
PEAK_SUSTAIN_SECONDS=${PEAK_SUSTAIN_SECONDS:-20}
QUIET_WAIT=${QUIET_WAIT:-300}
RETRIES=${RETRIES:-2}
RESULTS_FILE=${RESULTS_FILE:-bench/RESULTS.md}
while getopts "r:t:m:c:o:h" opt; do
    case $opt in
        r) REPS=$OPTARG ;;
        t) THREADS=$OPTARG ;;
        m) MODELS=$OPTARG ;;
        c) CONTENDERS=$OPTARG ;;
        o) RESULTS_FILE=$OPTARG; [[ $RESULTS_FILE == /* ]] || RESULTS_FILE=$CALLER/$RESULTS_FILE ;;
        *) sed -n '2,19p' "$0"; exit 64 ;;
    esac
done
die() { echo "bench/run.sh: $*" >&2; exit 1; }
for c in $CONTENDERS; do
    [[ " $ALL_CONTENDERS " == *" $c "* ]] || die "unknown contender '$c' (known: $ALL_CONTENDERS)"
done
for m in $MODELS; do
    [[ $m == mid || $m == tiny ]] || die "unknown model '$m' (mid, tiny)"
done
[[ $QUIET_WAIT =~ ^[0-9]+$ ]] || die "QUIET_WAIT must be a number of seconds, not '$QUIET_WAIT'"
[[ $RETRIES =~ ^[0-9]+$ ]] || die "RETRIES must be a number, not '$RETRIES'"
[[ $THREADS =~ ^[1-9][0-9]*$ ]] || die "THREADS must be a positive integer, not '$THREADS'"
[[ $PEAK_REPS =~ ^[1-9][0-9]?$ ]] || die "PEAK_REPS must be 1...99, not '$PEAK_REPS'"
[[ $PEAK_SUSTAIN_SECONDS =~ ^[0-9]+$ && $PEAK_SUSTAIN_SECONDS -le 600 ]] \
    || die "PEAK_SUSTAIN_SECONDS must be 0...600, not '$PEAK_SUSTAIN_SECONDS'"
[[ -z $SAMPLES || $SAMPLES =~ ^[1-9][0-9]*$ ]] || die "SAMPLES must be a positive integer, not '$SAMPLES'"
# reps_of MODEL: REPS is one number for all models or "model=N ..." (models not named: 1)
reps_of() {
    local item
    if [[ $REPS =~ ^[1-9][0-9]*$ ]]; then echo "$REPS"; return; fi
    for item in $REPS; do
        [[ ${item%%=*} == "$1" ]] && { echo "${item#*=}"; return; }
    done
    echo 1
}
if ! [[ $REPS =~ ^[1-9][0-9]*$ ]]; then
    for item in $REPS; do
        [[ $item =~ ^(mid|tiny)=[1-9][0-9]*$ ]] || die "REPS must be N or \"mid=N tiny=N\", not '$REPS'"
    done
fi
has() { [[ " $CONTENDERS " == *" $1 "* ]]; }
# The command as RESULTS.md shows it: a machine's own paths (an interpreter
# outside the default venv, a prebuilt binary) are shown as placeholders.
SHOWN_PYTHON=$PYTHON; [[ $PYTHON == /tmp/bench-venv/bin/python ]] || SHOWN_PYTHON=/path/to/venv/bin/python
COMMAND="PYTHON=$SHOWN_PYTHON${SAMPLES:+ SAMPLES=$SAMPLES}${DROPTRACE:+ DROPTRACE=/path/to/droptrace} bench/run.sh -r '$REPS' -t $THREADS -m '$MODELS' -c '$CONTENDERS'"
SHOWN_RESULTS=${RESULTS_FILE#"$ROOT"/}
[[ $SHOWN_RESULTS == bench/RESULTS.md ]] || COMMAND+=" -o $SHOWN_RESULTS"

WORK=${BENCH_WORK:-$ROOT/bench/work}
OUT=$WORK/results
log() { echo "$(date -u +%H:%M:%S) $*" >&2; }

# busy CPU seconds of the whole machine so far (user+nice+system+irq+softirq+steal, /proc/stat)
busy() { awk '/^cpu / { printf "%.2f", ($2 + $3 + $4 + $7 + $8 + $9) / 100 }' /proc/stat; }

# wait_quiet: the machine is shared (builds, tests); wait until everything else together uses less
# than a quarter of a core over 5 s, at most QUIET_WAIT seconds (default 300; 0 = don't wait).
wait_quiet() {
    local waited=0 b0 b1
    [ "$QUIET_WAIT" -eq 0 ] && return 0
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
if [ ! -x /usr/bin/time ] || ! command -v gcc >/dev/null || [ ! -f /usr/include/oneapi/dnnl/dnnl.h ]; then
    sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo -n"
    log "installing time gcc libdnnl-dev"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time gcc libc6-dev libdnnl-dev >/dev/null
fi
if ! "$PYTHON" -c "import torch, transformers, safetensors, h5py, numpy" 2>/dev/null; then
    echo "PYTHON=$PYTHON lacks torch/transformers/safetensors/h5py; create it with:" >&2
    echo "  python3 -m venv /tmp/bench-venv && /tmp/bench-venv/bin/pip install -r bench/requirements.txt" >&2
    exit 1
fi

# -- build ------------------------------------------------------------------------------------
if [ -n "${DROPTRACE:-}" ]; then
    [ -x "$DROPTRACE" ] || die "DROPTRACE=$DROPTRACE is not an executable"
    BUILT="prebuilt binary $(basename "$DROPTRACE") (DROPTRACE=), modified $(date -u -r "$DROPTRACE" '+%Y-%m-%d %H:%M UTC'), work tree at commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
else
    log "building droptrace (release, .build-bench)"
    swift build -c release --scratch-path .build-bench >&2
    DROPTRACE=$(swift build -c release --scratch-path .build-bench --show-bin-path)/droptrace
    # what was built, recorded now: the work tree may change while the benchmark runs
    BUILT="commit $(git rev-parse --short HEAD)"
    [ -n "$(git status --porcelain -- Sources Package.swift)" ] && BUILT="$BUILT + uncommitted changes in Sources/Package.swift"
    BUILT="$BUILT, built $(date -u '+%Y-%m-%d %H:%M UTC'), \`swift build -c release\`"
fi
if has droptrace-f32 || has droptrace-bf16; then
    # the help read whole first: grep -q stops reading at the first match, and under pipefail the
    # writer's broken pipe would fail the check
    score_help=$("$DROPTRACE" score --help 2>&1 || true)
    grep -q -- '--precision' <<<"$score_help" \
        || die "$DROPTRACE: 'score' has no --precision option (a build from before it); the benchmark needs a droptrace with --precision f32|bf16"
fi
mkdir -p "$WORK"
gcc -O2 bench/gemm_peak.c -o "$WORK/gemm_peak" -lopenblas -ldnnl -fopenmp

# -- inputs -----------------------------------------------------------------------------------
log "checkpoints and calibration (created once)"
"$PYTHON" bench/make_checkpoints.py --out "$WORK" --models $MODELS
CALIB=$WORK/calib.jsonl
if [ -n "$SAMPLES" ]; then
    head -n "$SAMPLES" "$WORK/calib.jsonl" > "$WORK/calib.$SAMPLES.jsonl"
    CALIB=$WORK/calib.$SAMPLES.jsonl
    log "SAMPLES=$SAMPLES: only the first $SAMPLES calibration sequences (a smoke run, not a benchmark)"
fi

rm -rf "$OUT"
mkdir -p "$OUT"
# The first processor's block of /proc/cpuinfo (model, family, flags), recorded with the results.
awk '/^$/ { exit } { print }' /proc/cpuinfo > "$OUT/cpuinfo.txt"

# Tuning variables the benchmark must not inherit (droptrace's own kernel overrides included):
# droptrace runs as installed (it picks its own kernels and threads), the others get their thread
# counts from here.
TUNING="DROPTRACE_MATRIX_KERNEL DROPTRACE_BF16_KERNEL OPENBLAS_CORETYPE OPENBLAS_VERBOSE GOTO_NUM_THREADS DNNL_MAX_CPU_ISA ONEDNN_MAX_CPU_ISA DNNL_CPU_ISA_HINTS ONEDNN_CPU_ISA_HINTS DNNL_VERBOSE ONEDNN_VERBOSE DNNL_DEFAULT_FPMATH_MODE ONEDNN_DEFAULT_FPMATH_MODE MKL_ENABLE_INSTRUCTIONS GOMP_CPU_AFFINITY OMP_PROC_BIND OMP_PLACES KMP_AFFINITY"
for v in $TUNING OMP_NUM_THREADS OPENBLAS_NUM_THREADS MKL_NUM_THREADS; do
    if [ -n "${!v:-}" ]; then log "ignoring $v=${!v} from the environment"; fi
    unset "$v"
done
THREAD_ENV=(env OMP_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS")
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error

log "peaks of the matrix units with $THREADS threads"
wait_quiet
"${THREAD_ENV[@]}" PEAK_SUSTAIN_SECONDS="$PEAK_SUSTAIN_SECONDS" "$WORK/gemm_peak" "$PEAK_REPS" $MODELS > "$OUT/peaks.json"
cat "$OUT/peaks.json" >&2

for model in $MODELS; do
    ckpt=$WORK/$model
    for rep in $(seq 1 "$(reps_of "$model")"); do
        for c in $CONTENDERS; do
            case $c in
                droptrace-*)
                    run "$model.$c.$rep" "$DROPTRACE" score "$ckpt" --calibration "$CALIB" \
                        --output "$OUT/$model.$c.$rep.h5" --threads "$THREADS" --precision "${c#droptrace-}" ;;
                pytorch-*)
                    dtype=float32; [ "$c" = pytorch-bf16 ] && dtype=bfloat16
                    run "$model.$c.$rep" "${THREAD_ENV[@]}" "$PYTHON" bench/pytorch_hooked.py "$ckpt" \
                        --calibration "$CALIB" --threads "$THREADS" --dtype "$dtype" ;;
                llmdrop-*)
                    dtype=float32; [ "$c" = llmdrop-bf16 ] && dtype=bfloat16
                    for target in attn mlp block; do
                        run "$model.$c-$target.$rep" "${THREAD_ENV[@]}" "$PYTHON" bench/llmdrop_procedure.py "$ckpt" \
                            --calibration "$CALIB" --target "$target" --threads "$THREADS" --dtype "$dtype"
                    done ;;
            esac
        done
    done
done

mkdir -p "$(dirname "$RESULTS_FILE")"
"$PYTHON" bench/report.py --results "$OUT" --work "$WORK" --calibration "$CALIB" --threads "$THREADS" \
    --models "$MODELS" --contenders "$CONTENDERS" --droptrace "$DROPTRACE" --built "$BUILT" \
    --command "$COMMAND" --python "$PYTHON" --output "$RESULTS_FILE"
