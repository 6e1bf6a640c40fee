#!/usr/bin/env bash
# Issue 7's whole comparison in one command: the gate against nginx and
# HAProxy (full and resumed mTLS handshakes, keep-alive, added latency at a
# fixed rate, memory per idle mTLS connection, the public-key ceiling) with
# bench/gate.sh, and the CA against cfssl with bench/issuance.sh. Each
# script alternates Ward and its peers run by run (A B A B) and takes
# medians; this one appends to bench/RESULTS.md a summary (date, commit,
# CPU model, cores, Ward/peer ratio per pair, issue 7's targets) followed by
# both detailed tables.
#
#   bash bench/run-all.sh            # ~12 minutes after the build
#   bash bench/run-all.sh --quick    # ~2–3 minutes: 1 repeat, 3 s windows,
#                                    # 2,000 idle connections
#
# Environment: RESULTS=path ("" = print only), BUILD=0 (use the release
# binaries already built), WITH_PG=1 (also the CA on PostgreSQL), and the
# knobs of gate.sh and issuance.sh (REPEATS, DURATION, WARMUP, MEM_CONNS,
# SERVER_CPU, LOAD_CPU, …), which this script passes through.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
for arg in "$@"; do
    case $arg in
        --quick) QUICK=1 ;;
        -h | --help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "run-all.sh: unknown argument $arg (try --quick)" >&2; exit 2 ;;
    esac
done
RESULTS=${RESULTS-$ROOT/bench/RESULTS.md}
BUILD=${BUILD:-1}
if [[ $QUICK == 1 ]]; then
    export REPEATS=${REPEATS:-1} DURATION=${DURATION:-3s} WARMUP=${WARMUP:-1s} MEM_CONNS=${MEM_CONNS:-2000}
else
    export REPEATS=${REPEATS:-3} DURATION=${DURATION:-10s} WARMUP=${WARMUP:-2s} MEM_CONNS=${MEM_CONNS:-10000}
fi
export SERVER_CPU=${SERVER_CPU:-0} LOAD_CPU=${LOAD_CPU:-1} RATE=${RATE:-1000}
log() { printf 'run-all.sh: %s\n' "$*" >&2; }

OUT=$(mktemp -d "${TMPDIR:-/tmp}/ward-run-all.XXXXXX")
# The scripts below stop every process they start (their own EXIT traps);
# this one only removes its directory.
trap 'rm -rf "$OUT"' EXIT

if [[ $BUILD == 1 ]]; then
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p ward -p ward-bench)
fi
START=$(date +%s)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

log "gate vs nginx and HAProxy (bench/gate.sh)"
BUILD=0 RESULTS=$OUT/gate.md RAW_OUT=$OUT/gate.jsonl bash "$ROOT/bench/gate.sh" >/dev/null

log "CA vs cfssl (bench/issuance.sh)"
mkdir -p "$OUT/issuance"
SKIP_PG=$([[ ${WITH_PG:-0} == 1 ]] && echo 0 || echo 1)
BUILD=0 RESULTS=$OUT/issuance.md SKIP_PG=$SKIP_PG KEEP=1 TMPDIR=$OUT/issuance \
    bash "$ROOT/bench/issuance.sh" >/dev/null
ISSUANCE_RAW=$(find "$OUT/issuance" -name runs.jsonl | head -n1)

LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] && COMMIT="$COMMIT (+uncommitted changes)"
SUMMARY=$(
    DATE_UTC=$(date -u +%Y-%m-%dT%H:%MZ) COMMIT=$COMMIT QUICK=$QUICK \
        CPU_MODEL=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') \
        CORES=$(nproc --all) LOADAVG=$LOADAVG LOADAVG_END=$LOADAVG_END \
        python3 "$ROOT/bench/summary.py" "$OUT/gate.jsonl" "$ISSUANCE_RAW"
)
# Detailed tables one heading level down, under the summary.
SECTION=$(
    printf '%s\n\n' "$SUMMARY"
    sed 's/^### /#### /' "$OUT/gate.md" | sed '/./,$!d'
    printf '\n'
    sed 's/^### /#### /' "$OUT/issuance.md" | sed '/./,$!d'
)
printf '%s\n' "$SECTION"
if [[ -n $RESULTS ]]; then
    printf '\n%s\n' "$SECTION" >>"$RESULTS"
    log "appended to $RESULTS"
fi
log "done in $(($(date +%s) - START)) s"
