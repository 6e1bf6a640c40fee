#!/usr/bin/env bash
# ACME benchmark: complete orders per second (existing account: newOrder →
# http-01 → finalize → download) with one client, instant-acme inside
# `ward-bench acme`, against Ward on SQLite, Ward on PostgreSQL and Pebble
# (Debian's `pebble`, PEBBLE_VA_NOSLEEP=1, PEBBLE_WFE_NONCEREJECT=0).
#
# Neither server is told to skip validation: both validate every http-01
# challenge against the responder inside ward-bench, and both resolve the
# unique order names through the same pebble-challtestsrv (every name →
# 127.0.0.1). Server pinned to SERVER_CPU, client (and the DNS server) to
# LOAD_CPU; each configuration runs REPEATS times, interleaved, and the
# median of each metric is reported. Prints a markdown table and appends it
# to bench/RESULTS.md.
#
# Environment (all optional):
#   CONCURRENCY=32 DURATION=10s WARMUP=2s REPEATS=3
#   POLL=20ms                     the client's first wait before polling an order
#   WARD_BASE=path                a second ward binary (say, an older commit's
#                                 release build): adds before-sqlite (and
#                                 before-postgres) to the rotation, same client
#   SERVER_CPU=0 LOAD_CPU=1
#   PG_URL=postgres://postgres@127.0.0.1:5432   (server URL, no database)
#   SKIP_PG=1 SKIP_PEBBLE=1       skip those configurations
#   PROFILE=release|debug         which build to run (default release)
#   BUILD=0                       use the binaries already built
#   RESULTS=path                  where to append the table ("" = don't)
#   NOTE=text                     a line under the table (say, "debug build, loaded machine")
#   KEEP=1                        keep the temporary directory
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
SKIP_PEBBLE=${SKIP_PEBBLE:-0}
PROFILE=${PROFILE:-release}
BUILD=${BUILD:-1}
RESULTS=${RESULTS-$ROOT/bench/RESULTS.md}
NOTE=${NOTE:-}
KEEP=${KEEP:-0}

log() { printf 'acme.sh: %s\n' "$*" >&2; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PIDS=()
PG_DB=""
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-acme-bench.XXXXXX")

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
        psql "$PG_URL/postgres" -qAt -c "DROP DATABASE IF EXISTS \"${PG_DB}_before\" WITH (FORCE)" \
            >/dev/null 2>&1 || true
    fi
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

stop_pid() {
    local pid=$1 keep=() p
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- build
if [[ $BUILD == 1 ]]; then
    log "building ward and ward-bench ($PROFILE)"
    flag=()
    [[ $PROFILE == release ]] && flag=(--release)
    (cd "$ROOT" && cargo build "${flag[@]}" -q -p ward -p ward-bench)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WARD=${WARD_BIN:-$TARGET_DIR/$PROFILE/ward}
BENCH=$TARGET_DIR/$PROFILE/ward-bench

# ---------------------------------------------------------------- DNS
command -v pebble-challtestsrv >/dev/null || { log "pebble-challtestsrv missing (apt-get install pebble)"; exit 1; }
DNS_PORT=$(free_port)
MGMT_PORT=$(free_port)
taskset -c "$LOAD_CPU" pebble-challtestsrv -dns01 "127.0.0.1:$DNS_PORT" \
    -management "127.0.0.1:$MGMT_PORT" -http01 "" -https01 "" -tlsalpn01 "" \
    -defaultIPv4 127.0.0.1 -defaultIPv6 "" >"$WORK/dns.log" 2>&1 &
PIDS+=("$!")
for ((i = 0; i < 200; i++)); do
    curl -s -o /dev/null "http://127.0.0.1:$MGMT_PORT/" 2>/dev/null && break
    sleep 0.05
done
HTTP01_PORT=$(free_port)

# ---------------------------------------------------------------- CA
CA=$WORK/ca
"$WARD" ca init --dir "$CA" --trust-domain example.org >/dev/null
sed -i -E 's/^(per_(address|token)_(per_second|burst)) = .*/\1 = 100000000/' "$CA/ca.toml"
grep -q '^per_token_burst = 100000000' "$CA/ca.toml" || { log "could not raise limits in ca.toml"; exit 1; }
cat >>"$CA/ca.toml" <<EOF

[acme]
http01_port = $HTTP01_PORT
tlsalpn01_port = $HTTP01_PORT
dns_resolver = "127.0.0.1:$DNS_PORT"

[acme.provisioners.bench]
allow_dns = ["*.acme.test"]
challenges = ["http-01"]
EOF

CA_BEFORE=$WORK/ca-before
if [[ -n ${WARD_BASE:-} ]]; then
    "$WARD_BASE" ca init --dir "$CA_BEFORE" --trust-domain example.org >/dev/null
    sed -i -E 's/^(per_(address|token)_(per_second|burst)) = .*/\1 = 100000000/' "$CA_BEFORE/ca.toml"
    sed -n '/^\[acme\]/,$p' "$CA/ca.toml" >>"$CA_BEFORE/ca.toml"
fi

HAVE_PG=0
if [[ $SKIP_PG == 1 ]]; then
    log "PostgreSQL skipped (SKIP_PG=1)"
elif ! command -v psql >/dev/null || ! psql "$PG_URL/postgres" -qAt -c 'select 1' >/dev/null 2>&1; then
    log "PostgreSQL skipped: $PG_URL unreachable"
else
    PG_DB="ward_acme_bench_$(date +%s)_$$"
    psql "$PG_URL/postgres" -qAt -c "CREATE DATABASE \"$PG_DB\"" >/dev/null
    if [[ -n ${WARD_BASE:-} ]]; then
        psql "$PG_URL/postgres" -qAt -c "CREATE DATABASE \"${PG_DB}_before\"" >/dev/null
    fi
    HAVE_PG=1
fi

# ---------------------------------------------------------------- Pebble
HAVE_PEBBLE=0
if [[ $SKIP_PEBBLE == 1 ]]; then
    log "Pebble skipped (SKIP_PEBBLE=1)"
elif ! command -v pebble >/dev/null; then
    log "Pebble skipped: not installed (apt-get install pebble)"
else
    mkdir -p "$WORK/pebble"
    # Pebble's HTTPS certificate comes from Ward's CA, so one root serves both.
    "$WARD" cert create --ca-dir "$CA" --profile server --ip 127.0.0.1 \
        --dns localhost --out "$WORK/pebble/tls" >/dev/null
    PEBBLE_PORT=$(free_port)
    cat >"$WORK/pebble/config.json" <<EOF
{"pebble": {
  "listenAddress": "127.0.0.1:$PEBBLE_PORT",
  "managementListenAddress": "127.0.0.1:$(free_port)",
  "certificate": "$WORK/pebble/tls.crt",
  "privateKey": "$WORK/pebble/tls.key",
  "httpPort": $HTTP01_PORT,
  "tlsPort": $HTTP01_PORT,
  "ocspResponderURL": "",
  "externalAccountBindingRequired": false
}}
EOF
    HAVE_PEBBLE=1
fi

# ---------------------------------------------------------------- servers
SERVER_PID=""
DIRECTORY=""

start_ward() { # label [--database URL]
    local label=$1 err url i
    shift
    err=$WORK/serve.$label.err
    : >"$err"
    taskset -c "$SERVER_CPU" "${WARD_RUN:-$WARD}" ca serve --dir "${CA_RUN:-$CA}" --listen 127.0.0.1:0 "$@" \
        >/dev/null 2>"$err" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for ((i = 0; i < 400; i++)); do
        url=$(grep -o 'listening on https://[^ ]*' "$err" | head -n1 | sed 's/^listening on //' || true)
        if [[ -n $url ]]; then
            DIRECTORY=$url/acme/bench/directory
            return 0
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "ward ca serve ($label) did not start:"
    cat "$err" >&2
    exit 1
}

start_pebble() {
    local i
    PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 taskset -c "$SERVER_CPU" \
        pebble -config "$WORK/pebble/config.json" -dnsserver "127.0.0.1:$DNS_PORT" \
        >"$WORK/pebble/serve.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    DIRECTORY=https://127.0.0.1:$PEBBLE_PORT/dir
    for ((i = 0; i < 400; i++)); do
        curl -s -o /dev/null --cacert "$CA/root.crt" "$DIRECTORY" && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "pebble did not start:"
    cat "$WORK/pebble/serve.log" >&2
    exit 1
}

CONFIGS=(ward-sqlite)
[[ $HAVE_PG == 1 ]] && CONFIGS+=(ward-postgres)
[[ $HAVE_PEBBLE == 1 ]] && CONFIGS+=(pebble)
if [[ -n ${WARD_BASE:-} ]]; then
    CONFIGS+=(before-sqlite)
    [[ $HAVE_PG == 1 ]] && CONFIGS+=(before-postgres)
fi

run_one() { # config repeat
    local config=$1 r=$2 out
    case $config in
    ward-sqlite) start_ward sqlite ;;
    ward-postgres) start_ward postgres --database "$PG_URL/$PG_DB" --init-storage ;;
    pebble) start_pebble ;;
    # Its own CA directory and database (made by that binary): an older
    # binary refuses a store with migrations it does not know.
    before-sqlite) WARD_RUN=$WARD_BASE CA_RUN=$CA_BEFORE start_ward before-sqlite ;;
    before-postgres) WARD_RUN=$WARD_BASE CA_RUN=$CA_BEFORE start_ward before-postgres \
        --database "$PG_URL/${PG_DB}_before" --init-storage ;;
    esac
    local bundle=$CA/root.crt
    [[ $config == before-* ]] && bundle=$CA_BEFORE/root.crt
    out=$WORK/$config.$r.json
    if ! taskset -c "$LOAD_CPU" "$BENCH" acme --directory "$DIRECTORY" --ca-bundle "$bundle" \
        --http01-listen "127.0.0.1:$HTTP01_PORT" --concurrency "$CONCURRENCY" \
        --duration "$DURATION" --warmup "$WARMUP" ${POLL:+--poll "$POLL"} \
        >"$out" 2>"$WORK/$config.$r.err"; then
        log "$config run $r failed:"
    fi
    cat "$WORK/$config.$r.err" >&2
    stop_pid "$SERVER_PID"
    log "$config #$r: $(cat "$out" 2>/dev/null)"
}

for ((r = 1; r <= REPEATS; r++)); do
    for c in "${CONFIGS[@]}"; do run_one "$c" "$r"; done
done

# ---------------------------------------------------------------- table
TABLE=$(python3 - "$WORK" "$REPEATS" "${CONFIGS[@]}" <<'EOF'
import json, statistics, sys
work, repeats, configs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
rows, rate = [], {}
for c in configs:
    runs = []
    for r in range(1, repeats + 1):
        try:
            runs.append(json.load(open(f"{work}/{c}.{r}.json")))
        except (OSError, ValueError):
            pass
    if not runs:
        rows.append(f"| {c} | failed | | | | |")
        continue
    med = lambda k: statistics.median(x[k] for x in runs)
    rate[c] = med("rps")
    rows.append(
        f"| {c} | {med('rps'):,.1f} | {med('p50_ms'):.1f} | {med('p99_ms'):.1f} "
        f"| {int(med('errors'))} | {len(runs)} |"
    )
print("| server | complete orders/s | p50 ms | p99 ms | errors | runs |")
print("|---|---:|---:|---:|---:|---:|")
print("\n".join(rows))
phases = ["new_order", "challenge", "ready", "finalize", "download"]
prows = []
for c in configs:
    runs = []
    for r in range(1, repeats + 1):
        try:
            runs.append(json.load(open(f"{work}/{c}.{r}.json")))
        except (OSError, ValueError):
            pass
    runs = [x for x in runs if "phases_ms" in x]
    if runs:
        cell = lambda p: statistics.median(x["phases_ms"][p]["mean"] for x in runs)
        prows.append(f"| {c} | " + " | ".join(f"{cell(p):.1f}" for p in phases)
                     + f" | {sum(cell(p) for p in phases):.1f} |")
if prows:
    print("\nWhere an order's time goes (mean ms per phase, median of the runs; "
          "`ready` = polling until the order is ready, `download` = polling while "
          "processing + the download):\n")
    print("| server | " + " | ".join(phases) + " | sum |")
    print("|---|" + "---:|" * (len(phases) + 1))
    print("\n".join(prows))
if "pebble" in rate and rate["pebble"] > 0:
    for c in configs:
        if c != "pebble" and c in rate:
            print(f"\n{c} / pebble: {rate[c] / rate['pebble']:.2f}x")
EOF
)
HEADER="### ACME complete orders/s ($(date -u +%Y-%m-%d), $PROFILE build, $(nproc) CPUs \
$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), load avg $(cut -d' ' -f1-3 /proc/loadavg))

concurrency $CONCURRENCY, $DURATION window after $WARMUP warmup, median of $REPEATS; \
server on CPU $SERVER_CPU, instant-acme client (ward-bench acme) on CPU $LOAD_CPU.
${NOTE:+
$NOTE
}"
printf '%s\n\n%s\n' "$HEADER" "$TABLE"
if [[ -n $RESULTS ]]; then
    printf '\n%s\n\n%s\n' "$HEADER" "$TABLE" >>"$RESULTS"
fi
