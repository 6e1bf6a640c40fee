#!/usr/bin/env bash
# gRPC benchmark (issue 16): unary calls over persistent HTTP/2 connections
# through `ward gate serve` (route `protocol = "h2"`) and through HAProxy 2.6
# (`proto h2` to the backend), same certificates, same upstream, same load.
#
# Load: h2load (nghttp2) posting one gRPC frame per call to
# /ward.test.Echo/Unary of a Python grpcio upstream
# (crates/ward/tests/gate_grpc/grpc_upstream.py). h2load has no client
# certificates, so each run goes h2load → `ward gate client` (plaintext in,
# mTLS out, no ALPN: both proxies see HTTP/2 by its preface) → proxy →
# upstream. The proxy is pinned to SERVER_CPU; h2load, the tunnel and the
# upstream to LOAD_CPU.
#
# Reported per proxy (median of REPEATS interleaved runs):
#   calls/s at full load (DURATION, CONCURRENCY streams over CONNS
#   connections), the proxy's CPU seconds for them (utime+stime from /proc)
#   and so calls per proxy CPU-second ("per core"); p50/p99 at a fixed RATE
#   from h2load's per-request log, and p99 added over the same load sent
#   straight to the upstream (no tunnel, no proxy; so the added figure
#   includes the mTLS tunnel).
#
# Environment: DURATION=10 (s) WARMUP=2 (s) CONNS=4 CONCURRENCY=32 RATE=1000
#   REPEATS=3 SERVER_CPU=0 LOAD_CPU=1 WARD_BIN=path (default: release build)
#   BUILD=0 (use the binaries already built) RESULTS=path ("" = don't append)
#   KEEP=1 (keep the temporary directory)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
CONNS=${CONNS:-4}
CONCURRENCY=${CONCURRENCY:-32}
RATE=${RATE:-1000}
REPEATS=${REPEATS:-3}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BUILD=${BUILD:-1}
KEEP=${KEEP:-0}
RESULTS=${RESULTS-$ROOT/bench/RESULTS.md}

log() { printf 'grpc.sh: %s\n' "$*" >&2; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
for tool in h2load haproxy taskset python3; do
    command -v "$tool" >/dev/null || { log "$tool is required"; exit 2; }
done
python3 -c 'import grpc, grpc_health.v1.health' 2>/dev/null ||
    { log "python3 grpcio and grpcio-health-checking are required"; exit 2; }

PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-grpc-bench.XXXXXX")
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
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
# Waits (bounded) until FILE has a line matching PATTERN; prints the match.
wait_line() {
    local file=$1 pattern=$2 i
    for i in $(seq 1 200); do
        if grep -m1 -E "$pattern" "$file" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    log "timed out waiting for /$pattern/ in $file"; cat "$file" >&2; exit 1
}

if [[ $BUILD == 1 ]]; then
    log "building the release binary"
    (cd "$ROOT" && cargo build --release -q -p ward)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WARD=${WARD_BIN:-$TARGET_DIR/release/ward}

# ---------------------------------------------------------------- certificates
CA=$WORK/ca
"$WARD" ca init --dir "$CA" --trust-domain example.org >/dev/null
"$WARD" cert create --ca-dir "$CA" --profile server --dns localhost --ip 127.0.0.1 \
    --spiffe-id spiffe://example.org/gate --out "$WORK/server" >/dev/null 2>&1
"$WARD" cert create --ca-dir "$CA" --profile client \
    --spiffe-id spiffe://example.org/bench --out "$WORK/client" >/dev/null 2>&1
cat "$WORK/server.crt" "$WORK/server.key" >"$WORK/server.pem"

# ---------------------------------------------------------------- upstream
taskset -c "$LOAD_CPU" python3 -u "$ROOT/crates/ward/tests/gate_grpc/grpc_upstream.py" \
    >"$WORK/upstream.out" 2>&1 &
PIDS+=($!)
UP_PORT=$(wait_line "$WORK/upstream.out" '^PORT ' | awk '{print $2}')
# One gRPC frame: flag 0, length 5, "hello".
printf '\x00\x00\x00\x00\x05hello' >"$WORK/call.bin"

# ---------------------------------------------------------------- proxies
start_ward() {
    cat >"$WORK/gate.toml" <<EOF
audit_log = "off"
[listen]
address = "127.0.0.1:0"
[[tenants]]
name = "bench"
cert = "$WORK/server.crt"
key = "$WORK/server.key"
client_ca = "$CA/root.crt"
[[tenants.routes]]
name = "grpc"
upstream = "http://127.0.0.1:$UP_PORT"
protocol = "h2"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/bench"]
EOF
    : >"$WORK/ward.err"
    taskset -c "$SERVER_CPU" "$WARD" gate serve --config "$WORK/gate.toml" \
        >/dev/null 2>"$WORK/ward.err" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    PROXY_ADDR=$(wait_line "$WORK/ward.err" '^ward gate: listening on ' | awk '{print $5}')
}
start_haproxy() {
    local port
    port=$(free_port)
    cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 30s
frontend bench
    bind 127.0.0.1:$port ssl crt $WORK/server.pem ca-file $CA/root.crt verify required proto h2
    default_backend upstream
backend upstream
    http-reuse always
    server up 127.0.0.1:$UP_PORT proto h2
EOF
    : >"$WORK/haproxy.out"
    taskset -c "$SERVER_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.out" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    PROXY_ADDR=127.0.0.1:$port
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
        sleep 0.05
    done
    log "HAProxy did not start"; cat "$WORK/haproxy.out" >&2; exit 1
}
# The mTLS tunnel h2load's connections go through.
start_tunnel() {
    : >"$WORK/tunnel.err"
    taskset -c "$LOAD_CPU" "$WARD" gate client --listen 127.0.0.1:0 --target "$PROXY_ADDR" \
        --sni localhost --cert "$WORK/client.crt" --key "$WORK/client.key" \
        --ca "$CA/root.crt" >/dev/null 2>"$WORK/tunnel.err" &
    TUNNEL_PID=$!
    PIDS+=("$TUNNEL_PID")
    TUNNEL_ADDR=$(wait_line "$WORK/tunnel.err" '^ward gate client: listening on ' | awk '{print $6}')
}
ticks() {
    local f a
    read -r f <"/proc/$1/stat"
    read -ra a <<<"${f##*) }"
    echo $((a[11] + a[12]))
}
HZ=$(getconf CLK_TCK)

# h2load ADDR EXTRA… → its stdout; LOG is set to its per-request log.
h2() {
    local addr=$1
    shift
    taskset -c "$LOAD_CPU" timeout $((DURATION + WARMUP + 30)) h2load \
        -H 'content-type: application/grpc' -H 'te: trailers' -d "$WORK/call.bin" \
        "$@" "http://$addr/ward.test.Echo/Unary"
}
# Per-request log → "p50 p99" in ms.
percentiles() {
    python3 - "$1" <<'EOF'
import sys
d = sorted(int(l.split("\t")[2]) for l in open(sys.argv[1]) if l.strip())
if not d:
    print("nan nan")
else:
    q = lambda p: d[min(len(d) - 1, int(p * len(d)))] / 1000
    print("%.3f %.3f" % (q(0.50), q(0.99)))
EOF
}

RAW=$WORK/runs.tsv
: >"$RAW"
run_one() { # proxy repeat
    local proxy=$1 out t0 t1 calls errors lat
    case $proxy in
        direct) PROXY_PID=""; TUNNEL_ADDR=127.0.0.1:$UP_PORT ;;
        ward) start_ward; start_tunnel ;;
        haproxy) start_haproxy; start_tunnel ;;
    esac
    # Throughput.
    out=$(h2 "$TUNNEL_ADDR" -c "$CONNS" -m $((CONCURRENCY / CONNS)) --warm-up-time="$WARMUP" -D "$DURATION" 2>&1) || true
    t0=0; t1=0
    calls=$(awk '/^requests:/ { print $8 }' <<<"$out")
    errors=$(awk '/^requests:/ { print $10 + $12 }' <<<"$out")
    local rps
    rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$out")
    local cpu=nan
    if [[ -n $PROXY_PID ]]; then
        t0=$(ticks "$PROXY_PID")
        out=$(h2 "$TUNNEL_ADDR" -c "$CONNS" -m $((CONCURRENCY / CONNS)) -D "$DURATION" 2>&1) || true
        t1=$(ticks "$PROXY_PID")
        calls=$(awk '/^requests:/ { print $8 }' <<<"$out")
        errors=$(awk '/^requests:/ { print $10 + $12 }' <<<"$out")
        rps=$(awk '/^finished in/ { gsub(",", "", $4); print $4 }' <<<"$out")
        cpu=$(awk -v a="$t0" -v b="$t1" -v hz="$HZ" 'BEGIN { printf "%.2f", (b - a) / hz }')
    fi
    # Latency at a fixed rate.
    rm -f "$WORK/lat.log"
    h2 "$TUNNEL_ADDR" -c "$CONNS" -m $((CONCURRENCY / CONNS)) --rps=$((RATE / CONNS)) \
        -D "$DURATION" --log-file="$WORK/lat.log" >/dev/null 2>&1 || true
    lat=$(percentiles "$WORK/lat.log")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$proxy" "$2" "$rps" "$calls" "$errors" "$cpu" \
        "${lat% *}" "${lat#* }" | tee -a "$RAW" >&2
    [[ -n ${TUNNEL_PID:-} ]] && stop_pid "$TUNNEL_PID"
    TUNNEL_PID=""
    [[ -n $PROXY_PID ]] && stop_pid "$PROXY_PID"
    PROXY_PID=""
}

TUNNEL_PID=""
for r in $(seq 1 "$REPEATS"); do
    for proxy in direct ward haproxy; do
        log "run $r: $proxy"
        run_one "$proxy" "$r"
    done
done

# ---------------------------------------------------------------- report
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
CPU=$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo)
COMMIT=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
TABLE=$(python3 - "$RAW" "$DURATION" "$RATE" <<'EOF'
import statistics, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
duration, rate = float(sys.argv[2]), sys.argv[3]
def f(x):
    try:
        return float(x)
    except ValueError:
        return float("nan")
by = {}
for proxy, _, rps, calls, errors, cpu, p50, p99 in rows:
    by.setdefault(proxy, []).append((f(rps), f(calls), f(errors), f(cpu), f(p50), f(p99)))
med = lambda xs: statistics.median(xs)
direct_p99 = med([r[5] for r in by.get("direct", [])]) if "direct" in by else float("nan")
print("| path | calls/s | errors | proxy CPU s | calls per proxy CPU-s | p50 ms @%s/s | p99 ms @%s/s | added p99 ms | calls/s per run |" % (rate, rate))
print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
per_core = {}
for proxy in ["direct", "ward", "haproxy"]:
    if proxy not in by:
        continue
    rs = by[proxy]
    rps = med([r[0] for r in rs])
    cpu = med([r[3] for r in rs])
    pc = med([r[1] / r[3] for r in rs if r[3] == r[3] and r[3] > 0]) if proxy != "direct" else float("nan")
    per_core[proxy] = pc
    p99 = med([r[5] for r in rs])
    name = {"direct": "h2load → upstream (no proxy)", "ward": "h2load → tunnel → ward gate", "haproxy": "h2load → tunnel → HAProxy 2.6"}[proxy]
    print("| %s | %.0f | %.0f | %s | %s | %.2f | %.2f | %s | %s |" % (
        name, rps, sum(r[2] for r in rs), "-" if cpu != cpu else "%.2f" % cpu,
        "-" if pc != pc else "%.0f" % pc, med([r[4] for r in rs]), p99,
        "-" if proxy == "direct" else "%.2f" % (p99 - direct_p99),
        ", ".join("%.0f" % r[0] for r in rs)))
if per_core.get("ward") and per_core.get("haproxy"):
    print()
    print("Ward ÷ HAProxy, calls per proxy CPU-second: %.2f×" % (per_core["ward"] / per_core["haproxy"]))
EOF
)
HEADER="### gRPC unary through the gate, $(date -u +%Y-%m-%dT%H:%MZ), commit $COMMIT

$CPU, $(nproc) cores; proxy pinned to core $SERVER_CPU, h2load + tunnel + upstream to core $LOAD_CPU; $CONNS connections × $((CONCURRENCY / CONNS)) streams, ${DURATION}s windows; median of $REPEATS interleaved runs; load average at end $LOADAVG."
printf '%s\n\n%s\n' "$HEADER" "$TABLE"
if [[ -n $RESULTS ]]; then
    grep -q '^## gRPC through the gate' "$RESULTS" || printf '\n## gRPC through the gate (`bench/grpc.sh`)\n' >>"$RESULTS"
    printf '\n%s\n\n%s\n' "$HEADER" "$TABLE" >>"$RESULTS"
fi
