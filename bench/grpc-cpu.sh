#!/usr/bin/env bash
# Gate CPU and syscalls per gRPC unary call (issue 16), for comparing two
# builds of `ward` (debug builds are fine: the figure is relative). Each
# binary serves the same route (`protocol = "h2"`) to the same Python
# grpcio upstream; h2load sends CALLS calls through `ward gate client`
# (mTLS tunnel); the gate's utime+stime and read/write syscalls (from
# /proc/PID/stat and /proc/PID/io) are taken around the load.
#
# usage: bench/grpc-cpu.sh WARD_A WARD_B…   (env: CALLS=20000 CONNS=4
#   CONCURRENCY=32 REPEATS=3 SERVER_CPU=0 LOAD_CPU=1)
# The tunnel and the certificates come from the first binary.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CALLS=${CALLS:-20000}
CONNS=${CONNS:-4}
CONCURRENCY=${CONCURRENCY:-32}
REPEATS=${REPEATS:-3}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
[[ $# -ge 1 ]] || { echo "usage: $0 WARD_BIN…" >&2; exit 2; }
for tool in h2load taskset python3; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 2; }
done
PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-grpc-cpu.XXXXXX")
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
wait_line() {
    local i
    for i in $(seq 1 400); do
        if grep -m1 -E "$2" "$1" 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "timed out waiting for /$2/ in $1" >&2; cat "$1" >&2; exit 1
}
stop() { kill -TERM "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }
FIRST=$1
"$FIRST" ca init --dir "$WORK/ca" --trust-domain example.org >/dev/null
"$FIRST" cert create --ca-dir "$WORK/ca" --profile server --dns localhost --ip 127.0.0.1 \
    --spiffe-id spiffe://example.org/gate --out "$WORK/server" >/dev/null 2>&1
"$FIRST" cert create --ca-dir "$WORK/ca" --profile client \
    --spiffe-id spiffe://example.org/bench --out "$WORK/client" >/dev/null 2>&1
taskset -c "$LOAD_CPU" python3 -u "$ROOT/crates/ward/tests/gate_grpc/grpc_upstream.py" \
    >"$WORK/upstream.out" 2>&1 &
PIDS+=($!)
UP_PORT=$(wait_line "$WORK/upstream.out" '^PORT ' | awk '{print $2}')
printf '\x00\x00\x00\x00\x05hello' >"$WORK/call.bin"
cat >"$WORK/gate.toml" <<TOML
audit_log = "off"
[listen]
address = "127.0.0.1:0"
[[tenants]]
name = "bench"
cert = "$WORK/server.crt"
key = "$WORK/server.key"
client_ca = "$WORK/ca/root.crt"
[[tenants.routes]]
name = "grpc"
upstream = "http://127.0.0.1:$UP_PORT"
protocol = "h2"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/bench"]
TOML
ticks() { local f a; read -r f <"/proc/$1/stat"; read -ra a <<<"${f##*) }"; echo $((a[11] + a[12])); }
io() { awk '/^syscr|^syscw/ { s += $2 } END { print s }' "/proc/$1/io"; }
HZ=$(getconf CLK_TCK)
printf 'binary\trun\tcalls\tfailed\tcpu_s\tus_per_call\tsyscalls_per_call\n'
for r in $(seq 1 "$REPEATS"); do
    for bin in "$@"; do
        : >"$WORK/gate.err"
        taskset -c "$SERVER_CPU" "$bin" gate serve --config "$WORK/gate.toml" >/dev/null 2>"$WORK/gate.err" &
        GATE=$!
        PIDS+=("$GATE")
        ADDR=$(wait_line "$WORK/gate.err" '^ward gate: listening on ' | awk '{print $5}')
        : >"$WORK/tunnel.err"
        taskset -c "$LOAD_CPU" "$FIRST" gate client --listen 127.0.0.1:0 --target "$ADDR" \
            --sni localhost --cert "$WORK/client.crt" --key "$WORK/client.key" \
            --ca "$WORK/ca/root.crt" >/dev/null 2>"$WORK/tunnel.err" &
        TUNNEL=$!
        PIDS+=("$TUNNEL")
        TADDR=$(wait_line "$WORK/tunnel.err" '^ward gate client: listening on ' | awk '{print $6}')
        h2() {
            taskset -c "$LOAD_CPU" timeout 300 h2load -H 'content-type: application/grpc' \
                -H 'te: trailers' -d "$WORK/call.bin" -c "$CONNS" -m $((CONCURRENCY / CONNS)) \
                "$@" "http://$TADDR/ward.test.Echo/Unary"
        }
        h2 -n 2000 >/dev/null 2>&1 || true # warm-up: connections, pool
        t0=$(ticks "$GATE"); s0=$(io "$GATE")
        out=$(h2 -n "$CALLS" 2>&1) || true
        t1=$(ticks "$GATE"); s1=$(io "$GATE")
        ok=$(awk '/^requests:/ { print $8 }' <<<"$out")
        failed=$(awk '/^requests:/ { print $10 + $12 }' <<<"$out")
        awk -v b="$bin" -v r="$r" -v ok="$ok" -v f="$failed" -v t="$((t1 - t0))" -v s="$((s1 - s0))" -v hz="$HZ" \
            'BEGIN { printf "%s\t%d\t%d\t%d\t%.2f\t%.1f\t%.2f\n", b, r, ok, f, t / hz, t / hz * 1e6 / ok, s / ok }'
        stop "$TUNNEL"; stop "$GATE"
    done
done
