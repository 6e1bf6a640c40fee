#!/usr/bin/env bash
# SNI passthrough benchmark (issue 19): the gate forwarding raw TLS by SNI
# (`[[passthrough]]`) against HAProxy `mode tcp` routing on `req.ssl_sni`,
# same backends, same load generators, in one run.
#
# Two measurements per proxy, each REPEATS times, interleaved:
# - new connections: `ward-bench handshake` (a new TCP + TLS 1.3 connection
#   per GET, client certificate presented) through the proxy to
#   `ward-bench bare`, an mTLS responder that terminates TLS itself;
# - large transfers: PARALLEL curls each downloading a 256 MiB file through
#   the proxy from nginx (TLS).
# The proxy is pinned to SERVER_CPU; the backends and the load share
# LOAD_CPU, so the proxy is rarely the bottleneck: the figure of merit is
# per proxy core, connections (or MB) per second of proxy CPU time
# (utime + stime from /proc), next to the absolute rates.
#
# Environment (all optional):
#   CONCURRENCY=32 DURATION=8s WARMUP=1s REPEATS=3 PARALLEL=4
#   SERVER_CPU=0 LOAD_CPU=1 RESULTS=path ("" = don't append) BUILD=0 KEEP=1
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-8s}
WARMUP=${WARMUP:-1s}
REPEATS=${REPEATS:-3}
PARALLEL=${PARALLEL:-4}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
RESULTS=${RESULTS-$ROOT/bench/RESULTS.md}
BUILD=${BUILD:-1}
KEEP=${KEEP:-0}
BIG_MIB=256

log() { printf 'passthrough.sh: %s\n' "$*" >&2; }
for tool in haproxy nginx curl taskset python3; do
    command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] ||
        { log "$tool is required (apt-get install haproxy nginx-light curl util-linux)"; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-passthrough.XXXXXX")
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
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

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
secs() { awk -v d="$1" 'BEGIN { sub(/s$/, "", d); print d + 0 }'; }
# utime + stime (clock ticks) of a process and its children, summed.
ticks() {
    local p c total=0 f
    for p in "$@"; do
        for c in "$p" $(pgrep -P "$p" 2>/dev/null || true); do
            read -r f <"/proc/$c/stat" 2>/dev/null || continue
            f=${f##*) }
            total=$((total + $(awk '{print $12 + $13}' <<<"$f")))
        done
    done
    echo "$total"
}
HZ=$(getconf CLK_TCK)

# ---------------------------------------------------------------- PKI
CA=$WORK/ca
"$WARD" ca init --dir "$CA" --trust-domain example.org >/dev/null
"$WARD" cert create --ca-dir "$CA" --profile server --dns localhost --dns big.test \
    --ip 127.0.0.1 --out "$WORK/backend" >/dev/null 2>&1
"$WARD" cert create --ca-dir "$CA" --profile server --dns gate.test --out "$WORK/gate" >/dev/null 2>&1
"$WARD" cert create --ca-dir "$CA" --profile client --spiffe-id spiffe://example.org/bench \
    --out "$WORK/client" >/dev/null 2>&1

# ---------------------------------------------------------------- backends (LOAD_CPU)
err=$WORK/bare.err
taskset -c "$LOAD_CPU" "$BENCH" bare --listen 127.0.0.1:0 --cert "$WORK/backend.crt" \
    --key "$WORK/backend.key" --client-ca "$CA/root.crt" >/dev/null 2>"$err" &
PIDS+=($!)
BARE=""
for ((i = 0; i < 200; i++)); do
    BARE=$(grep -o 'ward-bench bare: listening on [^ ]*' "$err" | head -n1 | awk '{print $5}' || true)
    [[ -n $BARE ]] && break
    sleep 0.05
done
[[ -n $BARE ]] || { log "ward-bench bare did not start"; cat "$err" >&2; exit 1; }

mkdir -p "$WORK/nginx/html"
truncate -s "${BIG_MIB}M" "$WORK/nginx/html/big"
NGINX_PORT=$(free_port)
user=""
[[ $(id -u) == 0 ]] && user="user root;"
cat >"$WORK/nginx/nginx.conf" <<EOF
$user
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$NGINX_PORT ssl;
        ssl_certificate $WORK/backend.crt;
        ssl_certificate_key $WORK/backend.key;
        ssl_protocols TLSv1.3;
        root $WORK/nginx/html;
    }
}
EOF
taskset -c "$LOAD_CPU" "$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>"$WORK/nginx/start.err" &
PIDS+=($!)

# ---------------------------------------------------------------- proxies (SERVER_CPU)
GATE_PORT=$(free_port)
cat >"$WORK/gate.toml" <<EOF
audit_log = "off"
[listen]
address = "127.0.0.1:$GATE_PORT"
max_connections = 4000
[[passthrough]]
sni = "localhost"
upstream = "$BARE"
[[passthrough]]
sni = "big.test"
upstream = "127.0.0.1:$NGINX_PORT"
# A terminating tenant on the same listener, as in a real edge.
[[tenants]]
name = "terminating"
sni = ["gate.test"]
cert = "$WORK/gate.crt"
key = "$WORK/gate.key"
client_ca = "$CA/root.crt"
[[tenants.routes]]
name = "all"
upstream = "http://127.0.0.1:9"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/*"]
EOF
taskset -c "$SERVER_CPU" "$WARD" gate serve --config "$WORK/gate.toml" >/dev/null 2>"$WORK/gate.err" &
GATE_PID=$!
PIDS+=("$GATE_PID")

HAPROXY_PORT=$(free_port)
cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4000
defaults
    mode tcp
    # The peer at its best: kernel splicing where HAProxy thinks it pays.
    option splice-auto
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend edge
    bind 127.0.0.1:$HAPROXY_PORT
    tcp-request inspect-delay 5s
    tcp-request content accept if { req_ssl_hello_type 1 }
    use_backend small if { req.ssl_sni -i localhost }
    use_backend big if { req.ssl_sni -i big.test }
backend small
    server s $BARE
backend big
    server b 127.0.0.1:$NGINX_PORT
EOF
taskset -c "$SERVER_CPU" haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.out" 2>&1 &
HAPROXY_PID=$!
PIDS+=("$HAPROXY_PID")

ready() { # port
    local i
    for ((i = 0; i < 200; i++)); do
        curl -s -o /dev/null --cacert "$CA/root.crt" --resolve "big.test:$1:127.0.0.1" \
            -r 0-0 "https://big.test:$1/big" && return 0
        sleep 0.05
    done
    log "nothing answers through port $1"
    cat "$WORK/gate.err" "$WORK/haproxy.out" >&2
    exit 1
}
ready "$GATE_PORT"
ready "$HAPROXY_PORT"

# ---------------------------------------------------------------- runs
# New connections through the proxy on `port` (pid): prints "conns/s conns-per-proxy-cpu-s".
connections() { # port pid
    local port=$1 pid=$2 t0 t1 out
    taskset -c "$LOAD_CPU" "$BENCH" handshake --url "https://localhost:$port/" \
        --ca-bundle "$CA/root.crt" --cert "$WORK/client.crt" --key "$WORK/client.key" \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" \
        >"$WORK/hs.out" 2>"$WORK/hs.err" &
    local bench=$!
    sleep "$(awk -v w="$(secs "$WARMUP")" 'BEGIN { print w + 0.2 }')"
    t0=$(ticks "$pid")
    local start=$EPOCHREALTIME
    wait "$bench" || { log "ward-bench failed"; cat "$WORK/hs.err" >&2; exit 1; }
    t1=$(ticks "$pid")
    local end=$EPOCHREALTIME
    out=$(cat "$WORK/hs.out")
    python3 - "$out" "$t0" "$t1" "$HZ" "$start" "$end" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
t0, t1, hz = int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
wall = float(sys.argv[6]) - float(sys.argv[5])
if r["errors"]:
    sys.exit(f"{r['errors']} failed requests: {r['status_counts']}")
cpu = max((t1 - t0) / hz, 1 / hz)
# Connections over the CPU window (wall clock from after warm-up to exit).
print(f"{r['rps']:.0f} {r['rps'] * wall / cpu:.0f}")
PY
}

# Large transfers: prints "MB/s MB-per-proxy-cpu-s".
transfers() { # port pid
    local port=$1 pid=$2 t0 t1 i pids=() start end
    t0=$(ticks "$pid")
    start=$EPOCHREALTIME
    for ((i = 0; i < PARALLEL; i++)); do
        taskset -c "$LOAD_CPU" curl -sS -o /dev/null --cacert "$CA/root.crt" \
            --resolve "big.test:$port:127.0.0.1" -w '%{size_download}\n' \
            "https://big.test:$port/big" >"$WORK/curl.$i" 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || { log "curl failed"; cat "$WORK"/curl.* >&2; exit 1; }; done
    end=$EPOCHREALTIME
    t1=$(ticks "$pid")
    local bytes
    bytes=$(cat "$WORK"/curl.* | awk '{s += $1} END {print s}')
    [[ $bytes == $((PARALLEL * BIG_MIB * 1048576)) ]] || { log "short transfer: $bytes bytes"; exit 1; }
    awk -v b="$bytes" -v s="$start" -v e="$end" -v t0="$t0" -v t1="$t1" -v hz="$HZ" 'BEGIN {
        cpu = (t1 - t0) / hz; if (cpu <= 0) cpu = 1 / hz
        printf "%.0f %.0f\n", b / 1e6 / (e - s), b / 1e6 / cpu }'
}

declare -A res
for ((r = 1; r <= REPEATS; r++)); do
    for p in ward haproxy; do
        if [[ $p == ward ]]; then port=$GATE_PORT pid=$GATE_PID; else port=$HAPROXY_PORT pid=$HAPROXY_PID; fi
        read -r cps cpc < <(connections "$port" "$pid")
        read -r mbs mbc < <(transfers "$port" "$pid")
        log "repeat $r $p: $cps conns/s ($cpc per proxy-CPU-s), $mbs MB/s ($mbc MB per proxy-CPU-s)"
        res[$p.cps]+=" $cps"; res[$p.cpc]+=" $cpc"; res[$p.mbs]+=" $mbs"; res[$p.mbc]+=" $mbc"
    done
done
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
row() { # label key
    local w h
    w=$(median "${res[ward.$2]}"); h=$(median "${res[haproxy.$2]}")
    printf '| %s | %.0f | %.0f | %s |\n' "$1" "$w" "$h" "$(ratio "$w" "$h")"
}
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
commit=$(cd "$ROOT" && git rev-parse --short HEAD)
dirty=$(cd "$ROOT" && git diff --quiet HEAD -- . 2>/dev/null || echo " (+uncommitted changes)")
table=$(
    cat <<EOF

### SNI passthrough vs HAProxy \`mode tcp\`, $(date -u +%Y-%m-%dT%H:%MZ), commit $commit$dirty

$(nproc) CPUs $cpu, load $(cut -d' ' -f1-3 /proc/loadavg); proxy on core $SERVER_CPU (one thread), backends and load on core $LOAD_CPU; medians of $REPEATS. New connections: \`ward-bench handshake\`, $CONCURRENCY workers, $DURATION, to an mTLS responder behind the proxy. Transfers: $PARALLEL parallel curl downloads of $BIG_MIB MiB from nginx (TLS 1.3) behind the proxy.

| | Ward gate | HAProxy $(haproxy -v 2>&1 | awk 'NR == 1 { sub(/-.*/, "", $3); print $3 }') | Ward / HAProxy |
|---|---:|---:|---:|
$(row "new connections/s" cps)
$(row "new connections per proxy-CPU-second" cpc)
$(row "transfer MB/s" mbs)
$(row "MB per proxy-CPU-second" mbc)
EOF
)
printf '%s\n' "$table"
if [[ -n $RESULTS ]]; then
    printf '%s\n' "$table" >>"$RESULTS"
fi
