#!/usr/bin/env bash
# CA issuance benchmark: Ward's /v1/sign and /v1/issue on SQLite and
# PostgreSQL, and cfssl's /api/v1/cfssl/sign for comparison.
#
# Server pinned to one core, load generator (ward-bench) to the other; each
# configuration runs REPEATS times, interleaved (A B C … A B C …) so drift
# on a shared machine hits all of them; the median of each metric is
# reported. Prints a markdown table and appends it to bench/RESULTS.md.
# See bench/README.md for what the columns mean.
#
# Environment (all optional):
#   CONCURRENCY=32 DURATION=10s WARMUP=2s REPEATS=3
#   SERVER_CPU=0 LOAD_CPU=1
#   PG_URL=postgres://postgres@127.0.0.1:5432   (server URL, no database)
#   SKIP_PG=1 SKIP_CFSSL=1        skip those configurations
#   INSTALL_CFSSL=0               do not try `apt-get install golang-cfssl`
#   RESULTS=path                  where to append the table ("" = don't)
#   PERF_DIR=dir                  perf-record the server during the first
#                                 repeat of each configuration; reports there
#   KEEP=1                        keep the temporary directory
#   BUILD=0                       use the release binaries already built
#   WARD_BIN=path                 the ward binary to measure (default: release build)
#   WARD_BASE=path                a second ward binary (say, the commit before a
#                                 refactor), run on SQLite as "before" in the
#                                 same rotation
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
REPEATS=${REPEATS:-3}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432}
SKIP_PG=${SKIP_PG:-0}
SKIP_CFSSL=${SKIP_CFSSL:-0}
INSTALL_CFSSL=${INSTALL_CFSSL:-1}
RESULTS=${RESULTS-$ROOT/bench/RESULTS.md}
PERF_DIR=${PERF_DIR:-}
KEEP=${KEEP:-0}
BUILD=${BUILD:-1}

log() { printf 'issuance.sh: %s\n' "$*" >&2; }
# 500ms / 10s / 2m / 10 → seconds, for sleep.
to_secs() {
    awk -v d="$1" 'BEGIN {
        if (d ~ /ms$/) { sub(/ms$/, "", d); print d / 1000 }
        else if (d ~ /m$/) { sub(/m$/, "", d); print d * 60 }
        else { sub(/s$/, "", d); print d + 0 } }'
}

PIDS=()
PG_DB=""
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-bench.XXXXXX")

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n $PG_DB ]]; then
        psql "$PG_URL/postgres" -qAt -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" \
            >/dev/null 2>&1 || log "could not drop database $PG_DB"
    fi
    if [[ $KEEP == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# Stops one process started by this script and forgets it.
stop_pid() {
    local pid=$1 keep=() p
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- build
if [[ $BUILD == 1 ]]; then
    log "building ward and ward-bench (release)"
    (cd "$ROOT" && cargo build --release -q -p ward -p ward-bench)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WARD=${WARD_BIN:-$TARGET_DIR/release/ward}
BENCH=$TARGET_DIR/release/ward-bench

# ---------------------------------------------------------------- CA
CA=$WORK/ca
"$WARD" ca init --dir "$CA" --trust-domain example.org >/dev/null
# Raise the rate limits far above what one core can issue.
sed -i -E 's/^(per_(address|token)_(per_second|burst)) = .*/\1 = 100000000/' "$CA/ca.toml"
grep -q '^per_token_burst = 100000000' "$CA/ca.toml" || { log "could not raise limits in ca.toml"; exit 1; }

new_token() { # [--database URL]
    local out
    out=$("$WARD" token create --dir "$CA" --spiffe-id spiffe://example.org/bench \
        --uses 0 --expires-in 2h "$@" 2>"$WORK/token.err") || {
        log "ward token create failed:"
        cat "$WORK/token.err" >&2
        exit 1
    }
    printf '%s\n' "${out%%$'\n'*}"
}
new_token >"$WORK/token.sqlite"

# ---------------------------------------------------------------- PostgreSQL
HAVE_PG=0
if [[ $SKIP_PG == 1 ]]; then
    log "PostgreSQL skipped (SKIP_PG=1)"
elif ! command -v psql >/dev/null; then
    log "PostgreSQL skipped: psql not found"
elif ! psql "$PG_URL/postgres" -qAt -c 'select 1' >/dev/null 2>&1; then
    log "PostgreSQL skipped: $PG_URL unreachable"
else
    PG_DB="ward_bench_$(date +%s)_$$"
    psql "$PG_URL/postgres" -qAt -c "CREATE DATABASE \"$PG_DB\"" >/dev/null
    # The store is made by the first `ca serve --init-storage` (a missing
    # store is refused since the hardening round); the token after that.
    HAVE_PG=1
fi

# ---------------------------------------------------------------- cfssl
HAVE_CFSSL=0
if [[ $SKIP_CFSSL == 1 ]]; then
    log "cfssl skipped (SKIP_CFSSL=1)"
else
    if ! command -v cfssl >/dev/null && [[ $INSTALL_CFSSL == 1 ]] && [[ $(id -u) == 0 ]]; then
        log "installing golang-cfssl"
        apt-get install -y -q golang-cfssl >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q golang-cfssl >/dev/null 2>&1; } ||
            log "apt-get install golang-cfssl failed"
    fi
    if command -v cfssl >/dev/null; then
        # The same intermediate key and certificate as Ward signs with, a
        # profile with the same usages and lifetime, and a TLS server
        # certificate from the same CA (leaf + intermediate, ECDSA P-256).
        mkdir -p "$WORK/cfssl"
        cat >"$WORK/cfssl/config.json" <<'EOF'
{"signing": {
  "default": {"expiry": "1h", "usages": ["digital signature", "key encipherment", "server auth", "client auth"]},
  "profiles": {"peer": {"expiry": "1h", "usages": ["digital signature", "key encipherment", "server auth", "client auth"]}}
}}
EOF
        if ! out=$("$WARD" cert create --ca-dir "$CA" --profile server --ip 127.0.0.1 \
            --dns localhost --out "$WORK/cfssl/tls" 2>&1); then
            printf '%s\n' "$out" >&2
            exit 1
        fi
        HAVE_CFSSL=1
    else
        log "cfssl skipped: not installed"
    fi
fi

# ---------------------------------------------------------------- servers
SERVER_PID=""
SERVER_URL=""

start_ward() { # label [--database URL]
    local label=$1 err
    shift
    err=$WORK/serve.$label.err
    : >"$err"
    taskset -c "$SERVER_CPU" "$WARD" ca serve --dir "$CA" --listen 127.0.0.1:0 "$@" \
        >/dev/null 2>"$err" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    local i
    for ((i = 0; i < 200; i++)); do
        SERVER_URL=$(grep -o 'listening on https://[^ ]*' "$err" | head -n1 | sed 's/^listening on //' || true)
        [[ -n $SERVER_URL ]] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "ward ca serve ($label) did not start:"
    cat "$err" >&2
    exit 1
}

start_cfssl() {
    local port
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    taskset -c "$SERVER_CPU" cfssl serve -address 127.0.0.1 -port "$port" \
        -ca "$CA/intermediate.crt" -ca-key "$CA/intermediate.key" \
        -config "$WORK/cfssl/config.json" \
        -tls-cert "$WORK/cfssl/tls.crt" -tls-key "$WORK/cfssl/tls.key" \
        -loglevel 5 >"$WORK/cfssl/serve.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    SERVER_URL=https://127.0.0.1:$port
    local i
    for ((i = 0; i < 200; i++)); do
        if curl -s -o /dev/null --cacert "$CA/root.crt" "$SERVER_URL/api/v1/cfssl/info" -d '{}'; then
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "cfssl serve did not start:"
    cat "$WORK/cfssl/serve.log" >&2
    exit 1
}

# ---------------------------------------------------------------- runs
RAW=$WORK/runs.jsonl
: >"$RAW"

run_one() { # label rep
    local label=$1 rep=$2 mode token=() line perf_pid=""
    case $label in
        sqlite-sign | sqlite-issue)
            start_ward "$label"
            token=(--token-file "$WORK/token.sqlite") ;;
        before-sqlite-sign | before-sqlite-issue)
            WARD=$WARD_BASE start_ward "$label"
            token=(--token-file "$WORK/token.sqlite") ;;
        pg-sign | pg-issue)
            start_ward "$label" --database "$PG_URL/$PG_DB" --init-storage
            [[ -s $WORK/token.pg ]] || new_token --database "$PG_URL/$PG_DB" >"$WORK/token.pg"
            token=(--token-file "$WORK/token.pg") ;;
        cfssl-sign)
            start_cfssl ;;
    esac
    mode=${label##*-}
    [[ $label == cfssl-sign ]] && mode=cfssl-sign
    if [[ -n $PERF_DIR && $rep == 1 ]]; then
        mkdir -p "$PERF_DIR"
        (sleep "$(to_secs "$WARMUP")" && exec perf record -q -e cpu-clock -F 999 -g \
            -p "$SERVER_PID" -o "$WORK/perf.$label.data" -- sleep "$(to_secs "$DURATION")") >/dev/null 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
    fi
    line=$(taskset -c "$LOAD_CPU" "$BENCH" issue --url "$SERVER_URL" --ca-bundle "$CA/root.crt" \
        "${token[@]}" --mode "$mode" --concurrency "$CONCURRENCY" \
        --duration "$DURATION" --warmup "$WARMUP")
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" 2>/dev/null || true
        stop_pid "$perf_pid"
        {
            echo "# $label: server CPU samples over the $DURATION window (cpu-clock, 999 Hz)"
            perf report -i "$WORK/perf.$label.data" --no-children --sort dso --stdio -g none \
                2>/dev/null | grep -v '^$' | head -n 25
            perf report -i "$WORK/perf.$label.data" --no-children --sort dso,symbol --stdio -g none \
                --percent-limit 0.4 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 60
        } >"$PERF_DIR/perf-$label.txt" || true
    fi
    stop_pid "$SERVER_PID"
    log "$label #$rep: $line"
    printf '{"label":"%s","rep":%s,"result":%s}\n' "$label" "$rep" "$line" >>"$RAW"
}

CONFIGS=(sqlite-sign sqlite-issue)
[[ -n ${WARD_BASE:-} ]] && CONFIGS+=(before-sqlite-sign before-sqlite-issue)
[[ $HAVE_PG == 1 ]] && CONFIGS+=(pg-sign pg-issue)
[[ $HAVE_CFSSL == 1 ]] && CONFIGS+=(cfssl-sign)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

for ((rep = 1; rep <= REPEATS; rep++)); do
    for label in "${CONFIGS[@]}"; do
        run_one "$label" "$rep"
    done
done

# ---------------------------------------------------------------- table
CPU_MODEL=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
CORES=$(nproc --all)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] && COMMIT="$COMMIT (+uncommitted changes)"
NOTES=""
[[ $HAVE_PG == 1 ]] || NOTES+=" PostgreSQL skipped (unreachable or SKIP_PG)."
[[ $HAVE_CFSSL == 1 ]] || NOTES+=" cfssl skipped (not installed or SKIP_CFSSL)."

TABLE=$(
    DATE_UTC=$(date -u +%Y-%m-%dT%H:%MZ) COMMIT=$COMMIT CPU_MODEL=$CPU_MODEL CORES=$CORES \
        LOADAVG=$LOADAVG CONCURRENCY=$CONCURRENCY DURATION=$DURATION WARMUP=$WARMUP \
        REPEATS=$REPEATS SERVER_CPU=$SERVER_CPU LOAD_CPU=$LOAD_CPU NOTES=$NOTES \
        python3 - "$RAW" <<'EOF'
import json, os, statistics, sys
e = os.environ
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs.setdefault(r["label"], []).append(r["result"])
names = {
    "sqlite-sign": ("Ward", "SQLite", "/v1/sign"),
    "sqlite-issue": ("Ward", "SQLite", "/v1/issue"),
    "before-sqlite-sign": ("Ward before (WARD_BASE)", "SQLite", "/v1/sign"),
    "before-sqlite-issue": ("Ward before (WARD_BASE)", "SQLite", "/v1/issue"),
    "pg-sign": ("Ward", "PostgreSQL", "/v1/sign"),
    "pg-issue": ("Ward", "PostgreSQL", "/v1/issue"),
    "cfssl-sign": ("cfssl 1.2 serve", "none", "/api/v1/cfssl/sign"),
}
med = lambda rs, k: statistics.median(r[k] for r in rs)
print(f"### CA issuance, {e['DATE_UTC']}, commit {e['COMMIT']}")
print()
print(f"{e['CPU_MODEL']}, {e['CORES']} cores; server pinned to core {e['SERVER_CPU']}, "
      f"ward-bench to core {e['LOAD_CPU']}; concurrency {e['CONCURRENCY']}, {e['DURATION']} "
      f"windows after {e['WARMUP']} warmup; median of {e['REPEATS']} interleaved runs; "
      f"load average at start {e['LOADAVG']}.{e['NOTES']}")
print()
print("| server | storage | route | certs/s | p50 ms | p90 ms | p99 ms | max ms | errors | certs/s per run |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
for label, (srv, store, route) in names.items():
    rs = runs.get(label)
    if not rs:
        continue
    per_run = ", ".join(f"{r['rps']:.0f}" for r in rs)
    errors = sum(r["errors"] for r in rs)
    print(f"| {srv} | {store} | `{route}` | {med(rs, 'rps'):.0f} | {med(rs, 'p50_ms'):.2f} | "
          f"{med(rs, 'p90_ms'):.2f} | {med(rs, 'p99_ms'):.2f} | {med(rs, 'max_ms'):.2f} | "
          f"{errors} | {per_run} |")
for route in ("sign", "issue"):
    a, b = runs.get(f"sqlite-{route}"), runs.get(f"before-sqlite-{route}")
    if a and b:
        print()
        print(f"Ward /v1/{route} (SQLite) ÷ Ward before: {med(a, 'rps') / max(med(b, 'rps'), 1e-9):.3f}×")
if "sqlite-sign" in runs and "cfssl-sign" in runs:
    ratio = med(runs["sqlite-sign"], "rps") / max(med(runs["cfssl-sign"], "rps"), 1e-9)
    print()
    print(f"Ward /v1/sign (SQLite) ÷ cfssl /sign: {ratio:.2f}×")
EOF
)

printf '%s\n' "$TABLE"
if [[ -n $RESULTS ]]; then
    printf '\n%s\n' "$TABLE" >>"$RESULTS"
    log "appended to $RESULTS"
fi
