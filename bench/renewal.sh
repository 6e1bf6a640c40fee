#!/usr/bin/env bash
# Renewal at scale (issue 22, item 4): AGENTS identities renewing back to
# back against one `ward ca serve` for DURATION (`ward-bench renew`: a
# fresh key and CSR, a new mTLS connection presenting the current
# certificate, POST /v1/renew, the new certificate becomes the next
# identity). Prints renewals/s, latency percentiles, failures and a series
# per WINDOW (throughput and p99 over time, as the store grows by one row
# per renewal), and appends the table to bench/RESULTS.md.
#
# The CA is pinned to one core, the agents to the other. The store is SQLite
# unless PG_URL names a PostgreSQL server (a fresh database is created).
#
# Environment (all optional):
#   AGENTS=64 DURATION=10m WINDOW=60s SERVER_CPU=0 LOAD_CPU=1
#   PG_URL=postgres://postgres@127.0.0.1:5432   PostgreSQL instead of SQLite
#   BUILD=1 KEEP=0 RESULTS=path ("" = don't append)
#   WARD_BIN=path BENCH_BIN=path   binaries to use (default: release build)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
AGENTS=${AGENTS:-64}
DURATION=${DURATION:-10m}
WINDOW=${WINDOW:-60s}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PG_URL=${PG_URL:-}
BUILD=${BUILD:-1}
KEEP=${KEEP:-0}
RESULTS=${RESULTS-$ROOT/bench/RESULTS.md}

log() { printf 'renewal.sh: %s\n' "$*" >&2; }

SERVER_PID=""
PG_DB=""
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-renewal.XXXXXX")
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -n $PG_DB ]]; then
        psql "$PG_URL/postgres" -qAt -c "DROP DATABASE IF EXISTS \"$PG_DB\"" >/dev/null 2>&1 || true
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
# Raise the rate limits far above what one core can issue.
sed -i -E 's/^(per_(address|token)_(per_second|burst)) = .*/\1 = 100000000/' "$CA/ca.toml"
grep -q '^per_token_burst = 100000000' "$CA/ca.toml" || { log "could not raise limits in ca.toml"; exit 1; }

DB_ARGS=()
STORE=SQLite
if [[ -n $PG_URL ]]; then
    PG_DB="ward_renewal_$(date +%s)_$$"
    psql "$PG_URL/postgres" -qAt -c "CREATE DATABASE \"$PG_DB\"" >/dev/null
    DB_ARGS=(--database "$PG_URL/$PG_DB")
    STORE=PostgreSQL
fi
"$WARD" token create --dir "$CA" --spiffe-id spiffe://example.org/renew \
    --uses 0 --expires-in 24h "${DB_ARGS[@]}" 2>/dev/null | head -n1 >"$WORK/token"
FINGERPRINT=$(openssl x509 -in "$CA/root.crt" -outform der | sha256sum | cut -d' ' -f1)

err=$WORK/serve.err
taskset -c "$SERVER_CPU" "$WARD" ca serve --dir "$CA" --listen 127.0.0.1:0 "${DB_ARGS[@]}" \
    >/dev/null 2>"$err" &
SERVER_PID=$!
URL=""
for ((i = 0; i < 200; i++)); do
    URL=$(grep -o 'listening on https://[^ ]*' "$err" | head -n1 | sed 's/^listening on //' || true)
    [[ -n $URL ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
done
[[ -n $URL ]] || { log "ward ca serve did not start:"; cat "$err" >&2; exit 1; }

LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
log "$AGENTS agents renewing for $DURATION against $URL ($STORE)"
taskset -c "$LOAD_CPU" "$BENCH" renew --url "$URL" --ca-fingerprint "$FINGERPRINT" \
    --token-file "$WORK/token" --agents "$AGENTS" --duration "$DURATION" --window "$WINDOW" \
    >"$WORK/renew.json"
LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)
ROWS=""
[[ -z $PG_URL && -f $CA/ward.db ]] && ROWS=$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from certificates").fetchone()[0])' "$CA/ward.db" 2>/dev/null || true)
[[ -n $PG_URL ]] && ROWS=$(psql "$PG_URL/$PG_DB" -qAt -c 'select count(*) from certificates' 2>/dev/null || true)

TABLE=$(python3 - "$WORK/renew.json" <<PY
import json, sys
s = json.load(open(sys.argv[1]))
print("| window start s | renewals/s | p99 ms | failures |")
print("|---:|---:|---:|---:|")
for w in s["windows"]:
    print(f'| {w["start_s"]:.0f} | {w["rps"]:.0f} | {w["p99_ms"]:.1f} | {w["failures"]} |')
print()
print(f'Whole run: {s["renewals"]} renewals in {s["duration_s"]:.0f} s = **{s["rps"]:.0f}/s**, '
      f'p50 {s["p50_ms"]:.1f} ms, p99 {s["p99_ms"]:.1f} ms, max {s["max_ms"]:.1f} ms; '
      f'{s["failures"]} failures {json.dumps(s["failure_counts"])}; '
      f'last window ÷ first: {s["last_vs_first"]:.2f} (target ≥ 0.90).')
PY
)
printf '%s\n' "$TABLE"
if [[ -n $RESULTS ]]; then
    {
        echo
        echo "## Renewal at scale, $(date -u +%Y-%m-%dT%H:%MZ), $(git -C "$ROOT" rev-parse --short HEAD), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
        echo
        echo "\`bench/renewal.sh\`: $AGENTS agents, $DURATION, windows of $WINDOW, $STORE store" \
            "(certificate rows at the end: ${ROWS:-unknown}); CA on core $SERVER_CPU, agents on core $LOAD_CPU;" \
            "load average $LOADAVG at start, $LOADAVG_END at end; binary: $(basename "$(dirname "$WARD")")/$(basename "$WARD")."
        echo
        printf '%s\n' "$TABLE"
    } >>"$RESULTS"
fi
