#!/usr/bin/env bash
# Cold start of the client library (issue 22, item 3): a fresh process,
# from spawn to its first mTLS request with an identity it just obtained
# from the CA (`ward-bench cold-start`: Rotator::bootstrap, then one GET
# over mTLS), against a local `ward ca serve` on SQLite.
#
# The CA is pinned to one core, the clients to the other. Each variant
# runs RUNS child processes (default 7) and reports medians; variants:
#   default        the library as a workload uses it
#   entropy-first  the same, with aws-lc's DRBG seeding timed as its own
#                  phase (CPU jitter entropy unless built without it)
#   prewarm        seeding started on a thread at the start of main
# The budget is "total minus one CA round trip" (a warm second bootstrap
# in the same process) ≤ 50 ms.
#
# Environment (all optional):
#   RUNS=7 SERVER_CPU=0 LOAD_CPU=1 BUILD=1 KEEP=0
#   WARD_BIN=path BENCH_BIN=path   binaries to use (default: release build)
#   RESULTS=path                   where to append the table ("" = don't)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
RUNS=${RUNS:-7}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BUILD=${BUILD:-1}
KEEP=${KEEP:-0}
RESULTS=${RESULTS-$ROOT/bench/RESULTS.md}

log() { printf 'coldstart.sh: %s\n' "$*" >&2; }

SERVER_PID=""
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-cold.XXXXXX")
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

if [[ $BUILD == 1 ]]; then
    log "building ward and ward-bench (release)"
    (cd "$ROOT" && cargo build --release -q -p ward -p ward-bench)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WARD=${WARD_BIN:-$TARGET_DIR/release/ward}
BENCH=${BENCH_BIN:-$TARGET_DIR/release/ward-bench}

CA=$WORK/ca
"$WARD" ca init --dir "$CA" --trust-domain example.org >/dev/null
"$WARD" token create --dir "$CA" --spiffe-id spiffe://example.org/cold \
    --uses 0 --expires-in 1h 2>/dev/null | head -n1 >"$WORK/token"
FINGERPRINT=$(openssl x509 -in "$CA/root.crt" -outform der | sha256sum | cut -d' ' -f1)

err=$WORK/serve.err
taskset -c "$SERVER_CPU" "$WARD" ca serve --dir "$CA" --listen 127.0.0.1:0 >/dev/null 2>"$err" &
SERVER_PID=$!
URL=""
for ((i = 0; i < 200; i++)); do
    URL=$(grep -o 'listening on https://[^ ]*' "$err" | head -n1 | sed 's/^listening on //' || true)
    [[ -n $URL ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
done
[[ -n $URL ]] || { log "ward ca serve did not start:"; cat "$err" >&2; exit 1; }

RAW=$WORK/runs.jsonl
: >"$RAW"
for variant in default entropy-first prewarm; do
    flags=()
    case $variant in
        entropy-first) flags=(--entropy-first) ;;
        prewarm) flags=(--prewarm) ;;
    esac
    out=$(taskset -c "$LOAD_CPU" "$BENCH" cold-start --url "$URL" --ca-fingerprint "$FINGERPRINT" \
        --token-file "$WORK/token" --runs "$RUNS" "${flags[@]}")
    summary=$(printf '%s\n' "$out" | tail -n1)
    log "$variant: $summary"
    printf '{"variant":"%s","summary":%s}\n' "$variant" "$summary" >>"$RAW"
done

TABLE=$(python3 - "$RAW" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
print("| variant | total | to main | entropy | bootstrap | first mTLS request | CA round trip | total − CA round trip |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    s = r["summary"]
    f = lambda k: f'{s[k]:.1f} ms'
    print(f'| {r["variant"]} | {f("median_total_ms")} | {f("median_to_main_ms")} | {f("median_entropy_ms")} '
          f'| {f("median_bootstrap_ms")} | {f("median_first_request_ms")} | {f("median_ca_round_trip_ms")} '
          f'| {f("median_total_minus_ca_ms")} |')
PY
)
printf '%s\n' "$TABLE"
if [[ -n $RESULTS ]]; then
    {
        echo
        echo "## Cold start, $(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$ROOT" rev-parse --short HEAD), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load $(cut -d' ' -f1-3 /proc/loadavg)"
        echo
        echo "Medians of $RUNS processes each (\`bench/coldstart.sh\`)."
        echo
        printf '%s\n' "$TABLE"
    } >>"$RESULTS"
fi
