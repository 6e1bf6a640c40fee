#!/usr/bin/env bash
# Gate benchmark: full and resumed mTLS handshakes/s and keep-alive
# requests/s through `ward gate serve` and, as peers when available, nginx
# and HAProxy (same certificates, same upstream); keep-alive requests/s
# straight to the plain upstream; the latency the gate adds at a fixed
# rate; each proxy's memory per idle mTLS connection; and the public-key
# ceiling of a full mTLS handshake on this machine (`ward-bench ceiling`).
#
# Proxy pinned to one core, load generator (ward-bench) to the other; the
# upstream (`ward-bench upstream`) shares the proxy's core for keep-alive
# and latency runs, the load's core for handshake runs. Each configuration
# runs REPEATS times, interleaved (A B C … A B C …) so drift on a shared
# machine hits all of them; the median of each metric is reported. Prints a
# markdown table and appends it to bench/RESULTS.md. See bench/README.md.
#
# Environment (all optional):
#   CONCURRENCY=32 DURATION=10s WARMUP=2s REPEATS=3 RATE=1000
#   SERVER_CPU=0 LOAD_CPU=1
#   KX_GROUP=x25519      group the client offers in the main handshake runs
#   SKIP_CHAIN_VERIFY=1  client skips verifying the server chain (0 = verify)
#   SKIP_NGINX=1 SKIP_HAPROXY=1 SKIP_PQ=1 SKIP_RESUME=1 SKIP_LAT=1
#                        skip nginx / HAProxy / X25519MLKEM768 / resumed
#                        handshakes / fixed-rate latency configurations
#   SKIP_MEM=1           skip the idle-connection memory runs
#   MEM_CONNS=10000      idle mTLS connections held for the memory runs
#   MEM_VARIANTS="hs req"  hs: idle right after the handshake; req: idle
#                        after one request each (empty = no memory runs)
#   INSTALL_NGINX=0 INSTALL_HAPROXY=0   do not try `apt-get install`
#   CONFIGS="ward-hs nginx-hs …"  run exactly these configurations
#   RAW_OUT=path         also copy the raw JSON lines of every run there
#   RESULTS=path         where to append the table ("" = don't)
#   PERF_DIR=dir         perf-record the proxy during the first repeat of
#                        each proxied configuration; reports there
#   PERF_CALLGRAPH=dwarf perf's call-graph mode (default fp; dwarf gives
#                        Rust stacks for the by-class breakdown)
#   KEEP=1               keep the temporary directory
#   BUILD=0              use the release binaries already built
#   WARD_BIN=path        the ward binary to measure (default: the release build)
#   BENCH_BIN=path       the ward-bench binary (default: the release build)
#   WARD_BASE=path       a second ward binary (say, the commit before a
#                        refactor), run as server "before" in the same
#                        rotation as every other server
#   WITH_NOCACHE=1       also run the gate with its chain cache off
#                        (--verify-cache-entries 0) as server "nocache"
#   SKIP_BARE=1          skip server "bare": the bare-rustls reference
#                        (`ward-bench bare`: rustls + aws-lc-rs, mTLS, a
#                        fixed 200 answered itself, nothing proxied)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
REPEATS=${REPEATS:-3}
RATE=${RATE:-1000}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
KX_GROUP=${KX_GROUP:-x25519}
SKIP_CHAIN_VERIFY=${SKIP_CHAIN_VERIFY:-1}
SKIP_NGINX=${SKIP_NGINX:-0}
SKIP_HAPROXY=${SKIP_HAPROXY:-0}
SKIP_PQ=${SKIP_PQ:-0}
SKIP_RESUME=${SKIP_RESUME:-0}
SKIP_LAT=${SKIP_LAT:-0}
SKIP_MEM=${SKIP_MEM:-0}
WITH_NOCACHE=${WITH_NOCACHE:-0}
SKIP_BARE=${SKIP_BARE:-0}
MEM_CONNS=${MEM_CONNS:-10000}
MEM_VARIANTS=${MEM_VARIANTS-hs req}
INSTALL_NGINX=${INSTALL_NGINX:-1}
INSTALL_HAPROXY=${INSTALL_HAPROXY:-1}
CONFIGS_ENV=${CONFIGS:-}
RAW_OUT=${RAW_OUT:-}
RESULTS=${RESULTS-$ROOT/bench/RESULTS.md}
PERF_DIR=${PERF_DIR:-}
PERF_CALLGRAPH=${PERF_CALLGRAPH:-fp}
KEEP=${KEEP:-0}
BUILD=${BUILD:-1}

log() { printf 'gate.sh: %s\n' "$*" >&2; }
# 500ms / 10s / 2m / 10 → seconds, for sleep.
to_secs() {
    awk -v d="$1" 'BEGIN {
        if (d ~ /ms$/) { sub(/ms$/, "", d); print d / 1000 }
        else if (d ~ /m$/) { sub(/m$/, "", d); print d * 60 }
        else { sub(/s$/, "", d); print d + 0 } }'
}
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-gate-bench.XXXXXX")

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
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
    log "building release binaries"
    (cd "$ROOT" && cargo build --release -q -p ward -p ward-bench)
fi
TARGET_DIR=$(cd "$ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null ||
    echo "${CARGO_TARGET_DIR:-$ROOT/target}")
WARD=${WARD_BIN:-$TARGET_DIR/release/ward}
BENCH=${BENCH_BIN:-$TARGET_DIR/release/ward-bench}

# ---------------------------------------------------------------- certificates
# ECDSA P-256 root + intermediate; the server and client leaves are sent with
# the intermediate (PREFIX.crt = leaf + intermediate).
CA=$WORK/ca
"$WARD" ca init --dir "$CA" --trust-domain example.org >/dev/null
"$WARD" cert create --ca-dir "$CA" --profile server --dns localhost --ip 127.0.0.1 \
    --spiffe-id spiffe://example.org/gate --out "$WORK/server" >/dev/null
"$WARD" cert create --ca-dir "$CA" --profile client \
    --spiffe-id spiffe://example.org/bench --out "$WORK/client" >/dev/null

# ---------------------------------------------------------------- peers
# have_peer CMD PACKAGE SKIP INSTALL: 0 when CMD is (or, as root, could be
# made) available.
have_peer() {
    local cmd=$1 pkg=$2 skip=$3 install=$4
    if [[ $skip == 1 ]]; then
        log "$cmd skipped (SKIP)"
        return 1
    fi
    if ! command -v "$cmd" >/dev/null && [[ $install == 1 ]] && [[ $(id -u) == 0 ]]; then
        log "installing $pkg"
        apt-get install -y -q "$pkg" >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q "$pkg" >/dev/null 2>&1; } ||
            log "apt-get install $pkg failed"
    fi
    if command -v "$cmd" >/dev/null; then
        return 0
    fi
    log "$cmd skipped: not installed"
    return 1
}
HAVE_NGINX=0
NGINX_VERSION=""
if have_peer nginx nginx-light "$SKIP_NGINX" "$INSTALL_NGINX"; then
    HAVE_NGINX=1
    NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: nginx\///')
fi
HAVE_HAPROXY=0
HAPROXY_VERSION=""
if have_peer haproxy haproxy "$SKIP_HAPROXY" "$INSTALL_HAPROXY"; then
    HAVE_HAPROXY=1
    HAPROXY_VERSION=$(haproxy -v 2>&1 | awk 'NR == 1 { sub(/-.*/, "", $3); print $3 }')
fi
# HAProxy wants the certificate chain and its key in one file.
cat "$WORK/server.crt" "$WORK/server.key" >"$WORK/server.pem"

# Memory runs hold MEM_CONNS connections: the load generator and the
# proxy each need that many descriptors.
if [[ $SKIP_MEM != 1 && -n $MEM_VARIANTS ]]; then
    NOFILE=$((MEM_CONNS + 1000))
    if (($(ulimit -n) < NOFILE)); then
        ulimit -n "$NOFILE" 2>/dev/null || ulimit -n "$(ulimit -Hn)" || true
    fi
    if (($(ulimit -n) < NOFILE)); then
        log "open-file limit $(ulimit -n) is below $NOFILE: memory runs may fall short of $MEM_CONNS"
    fi
fi
# HAProxy refuses to start unless 2 × maxconn (a client and a server side
# per connection) fits the open-file limit, so with the common hard limit
# of 20,000 it holds a few less than 10,000 idle connections.
HAPROXY_MAXCONN=$((MEM_CONNS + 1000))
if (((($(ulimit -n) - 100) / 2) < HAPROXY_MAXCONN)); then
    HAPROXY_MAXCONN=$((($(ulimit -n) - 100) / 2))
fi

# ---------------------------------------------------------------- servers
UP_PID=""
UP_URL=""
PROXY_PID=""
PROXY_URL=""

start_upstream() { # cpu
    local err=$WORK/upstream.err i
    : >"$err"
    taskset -c "$1" "$BENCH" upstream --listen 127.0.0.1:0 --threads 1 2>"$err" &
    UP_PID=$!
    PIDS+=("$UP_PID")
    for ((i = 0; i < 200; i++)); do
        UP_URL=$(grep -o 'listening on http://[^ ]*' "$err" | head -n1 | sed 's/^listening on //' || true)
        [[ -n $UP_URL ]] && return 0
        kill -0 "$UP_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "ward-bench upstream did not start:"
    cat "$err" >&2
    exit 1
}

# The gate from flags (as in SPEC §4); with `mem`, from an equivalent
# config file that raises max_connections and the header-read timeout so
# neither cuts a memory run short.
start_gate() { # [mem] [nocache]
    local err=$WORK/gate.err addr i args tls_section=""
    : >"$err"
    args=(--listen 127.0.0.1:0 --cert "$WORK/server.crt" --key "$WORK/server.key"
        --client-ca "$CA/root.crt" --upstream "$UP_URL"
        --allow-spiffe-id 'spiffe://example.org/*' --audit-log off)
    if [[ ${2:-} == nocache ]]; then
        args+=(--verify-cache-entries 0)
        tls_section=$'[tls]\nverify_cache_entries = 0'
    fi
    if [[ ${1:-} == mem ]]; then
        cat >"$WORK/gate.toml" <<EOF
audit_log = "off"
[listen]
address = "127.0.0.1:0"
max_connections = $((MEM_CONNS + 1000))
$tls_section
[timeouts]
header_read = "300s"
[[tenants]]
name = "bench"
default = true
cert = "$WORK/server.crt"
key = "$WORK/server.key"
client_ca = "$CA/root.crt"
[[tenants.routes]]
name = "all"
upstream = "$UP_URL"
[tenants.routes.allow]
spiffe_ids = ["spiffe://example.org/*"]
EOF
        args=(--config "$WORK/gate.toml")
    fi
    taskset -c "$SERVER_CPU" "$WARD" gate serve "${args[@]}" >/dev/null 2>"$err" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    for ((i = 0; i < 200; i++)); do
        addr=$(grep -o 'ward gate: listening on [^ ]*' "$err" | head -n1 | awk '{print $5}' || true)
        if [[ -n $addr ]]; then
            PROXY_URL=https://$addr/
            return 0
        fi
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "ward gate serve did not start:"
    cat "$err" >&2
    exit 1
}

# The bare-rustls reference (`ward-bench bare`): same server chain and key,
# same client root, TLS 1.3, client certificate required; it answers every
# request itself with a fixed 200, so it does the TLS work of an mTLS
# server and nothing a proxy adds (HTTP parsing, policy, the upstream).
start_bare() {
    local err=$WORK/bare.err addr i
    : >"$err"
    taskset -c "$SERVER_CPU" "$BENCH" bare --listen 127.0.0.1:0 --cert "$WORK/server.crt" \
        --key "$WORK/server.key" --client-ca "$CA/root.crt" >/dev/null 2>"$err" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    for ((i = 0; i < 200; i++)); do
        addr=$(grep -o 'ward-bench bare: listening on [^ ]*' "$err" | head -n1 | awk '{print $5}' || true)
        if [[ -n $addr ]]; then
            PROXY_URL=https://$addr/
            return 0
        fi
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "ward-bench bare did not start:"
    cat "$err" >&2
    exit 1
}

# Waits until PROXY_URL answers an mTLS GET with 2xx (curl, OpenSSL).
wait_proxy() { # name logfiles...
    local name=$1 i
    shift
    for ((i = 0; i < 200; i++)); do
        if curl -sf -o /dev/null --cacert "$CA/root.crt" --cert "$WORK/client.crt" \
            --key "$WORK/client.key" "$PROXY_URL"; then
            return 0
        fi
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "$name did not start:"
    cat "$@" >&2 2>/dev/null || true
    exit 1
}

# nginx 1.22 (Debian nginx-light, OpenSSL 3.0): one worker, TLS 1.3 only,
# client certificate required and verified against the same root, the same
# server certificate, proxy_pass with pooled keep-alive to the same upstream.
start_nginx() {
    local dir=$WORK/nginx port i user=""
    mkdir -p "$dir/tmp"
    port=$(free_port)
    [[ $(id -u) == 0 ]] && user="user root;"
    cat >"$dir/nginx.conf" <<EOF
$user
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
worker_rlimit_nofile $((MEM_CONNS + 1000));
events { worker_connections $((MEM_CONNS + 1000)); }
http {
    access_log off;
    client_header_timeout 300s;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    keepalive_requests 100000000;
    keepalive_timeout 75s;
    upstream bench_upstream { server ${UP_URL#http://}; keepalive 64; }
    server {
        listen 127.0.0.1:$port ssl;
        ssl_protocols TLSv1.3;
        ssl_certificate $WORK/server.crt;
        ssl_certificate_key $WORK/server.key;
        ssl_client_certificate $CA/root.crt;
        ssl_verify_client on;
        ssl_verify_depth 3;
        location / {
            proxy_pass http://bench_upstream;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
    taskset -c "$SERVER_CPU" nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' \
        >"$dir/stdout" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    PROXY_URL=https://127.0.0.1:$port/
    wait_proxy nginx "$dir/stdout" "$dir/error.log"
}

# HAProxy 2.6 (Debian, OpenSSL 3.0): one thread, TLS 1.3 only, client
# certificate required and verified against the same root, the same server
# certificate, HTTP keep-alive on both sides with connection reuse to the
# same upstream. TLS session tickets and the session cache at their
# defaults (on), as for nginx and the gate.
start_haproxy() {
    local dir=$WORK/haproxy port
    mkdir -p "$dir"
    port=$(free_port)
    cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $HAPROXY_MAXCONN
    ssl-default-bind-options ssl-min-ver TLSv1.3
defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 300s
    timeout server 30s
    timeout http-request 300s
    timeout http-keep-alive 300s
frontend bench
    bind 127.0.0.1:$port ssl crt $WORK/server.pem ca-file $CA/root.crt verify required alpn http/1.1
    default_backend upstream
backend upstream
    http-reuse always
    server up ${UP_URL#http://}
EOF
    taskset -c "$SERVER_CPU" haproxy -db -f "$dir/haproxy.cfg" >"$dir/stdout" 2>&1 &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    PROXY_URL=https://127.0.0.1:$port/
    wait_proxy haproxy "$dir/stdout"
}

# utime + stime (clock ticks) of the given processes and their children
# (nginx's worker), summed.
ticks() {
    local p c total=0 f a
    for p in "$@"; do
        for c in "$p" $(pgrep -P "$p" 2>/dev/null || true); do
            read -r f <"/proc/$c/stat" 2>/dev/null || continue
            read -ra a <<<"${f##*) }"
            total=$((total + a[11] + a[12]))
        done
    done
    echo "$total"
}

# ---------------------------------------------------------------- runs
RAW=$WORK/runs.jsonl
: >"$RAW"
HZ=$(getconf CLK_TCK)
TLS_ARGS=(--ca-bundle "$CA/root.crt" --cert "$WORK/client.crt" --key "$WORK/client.key")
[[ $SKIP_CHAIN_VERIFY == 1 ]] && TLS_ARGS+=(--skip-chain-verify)

start_proxy() { # ward|nginx|haproxy [mem]
    case $1 in
        ward) start_gate "${2:-}" ;;
        before) WARD=$WARD_BASE start_gate "${2:-}" ;;
        nocache) start_gate "${2:-}" nocache ;;
        bare) start_bare ;;
        nginx) start_nginx ;;
        haproxy) start_haproxy ;;
    esac
}

# One throughput/latency run: label = SERVER-WORKLOAD[-pq], SERVER one of
# ward, before, nocache, bare, nginx, haproxy, direct; WORKLOAD hs (full handshakes), rs (resumed
# handshakes), ka (keep-alive, closed loop), lat (keep-alive at RATE/s).
run_one() { # label rep
    local label=$1 rep=$2 mode url kx=$KX_GROUP rate=() tls=() up_cpu=$SERVER_CPU
    local measured perf_pid="" bench_pid line server=${1%%-*}
    case $label in
        *-hs | *-hs-pq) mode=handshake; up_cpu=$LOAD_CPU ;;
        *-rs) mode=resume; up_cpu=$LOAD_CPU ;;
        *-ka) mode=keepalive ;;
        *-lat) mode=keepalive; rate=(--rate "$RATE") ;;
    esac
    [[ $label == *-pq ]] && kx=default
    start_upstream "$up_cpu"
    case $server in
        direct) PROXY_PID=$UP_PID; url=$UP_URL/ ;;
        *) start_proxy "$server"; url=$PROXY_URL; tls=("${TLS_ARGS[@]}" --kx-group "$kx") ;;
    esac
    if [[ -n $PERF_DIR && $rep == 1 && $server != direct ]]; then
        mkdir -p "$PERF_DIR"
        local perf_pids=$PROXY_PID
        [[ $server == nginx ]] && perf_pids=$(pgrep -P "$PROXY_PID" | paste -sd,)
        (sleep "$(to_secs "$WARMUP")" && exec perf record -q -e cpu-clock -F 999 \
            --call-graph "$PERF_CALLGRAPH" -p "$perf_pids" -o "$WORK/perf.$label.data" \
            -- sleep "$(to_secs "$DURATION")") >/dev/null 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
        # System calls by kind over the same window, for calls per request
        # (the I/O and wake-up calls a proxy makes; each traced call slows
        # the profiled run a little more).
        local sc ev=""
        for sc in read write readv writev recvfrom sendto recvmsg sendmsg epoll_wait \
            epoll_ctl futex accept4 close setsockopt; do
            ev+=${ev:+,}syscalls:sys_enter_$sc
        done
        (sleep "$(to_secs "$WARMUP")" && exec perf stat -x, -e "$ev" \
            -p "$perf_pids" -o "$WORK/syscalls.$label.csv" \
            -- sleep "$(to_secs "$DURATION")") >/dev/null 2>&1 &
        PIDS+=("$!")
    fi
    taskset -c "$LOAD_CPU" "$BENCH" "$mode" --url "$url" "${tls[@]}" "${rate[@]}" \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP" \
        >"$WORK/bench.out" 2>"$WORK/bench.err" &
    bench_pid=$!
    PIDS+=("$bench_pid")
    # CPU used by the proxy, the upstream and the load generator, sampled
    # 0.5 s inside each end of the window (ward-bench exits at its end).
    local p0 b0 u0 p1 b1 u1 cpu_window
    cpu_window=$(awk -v d="$(to_secs "$DURATION")" 'BEGIN { print d - 1 }')
    sleep "$(awk -v w="$(to_secs "$WARMUP")" 'BEGIN { print w + 0.5 }')"
    b0=$(ticks "$bench_pid"); p0=$(ticks "$PROXY_PID"); u0=$(ticks "$UP_PID")
    sleep "$cpu_window"
    b1=$(ticks "$bench_pid"); p1=$(ticks "$PROXY_PID"); u1=$(ticks "$UP_PID")
    wait "$bench_pid" || { log "ward-bench failed:"; cat "$WORK/bench.err" >&2; exit 1; }
    stop_pid "$bench_pid"
    [[ -s $WORK/bench.err ]] && log "$label: $(head -c 300 "$WORK/bench.err")"
    line=$(cat "$WORK/bench.out")
    if [[ -n $perf_pid ]]; then
        wait "$perf_pid" 2>/dev/null || true
        stop_pid "$perf_pid"
        {
            echo "# $label: proxy CPU samples over the $DURATION window (cpu-clock, 999 Hz)"
            perf report -i "$WORK/perf.$label.data" --no-children --sort dso --stdio -g none \
                2>/dev/null | grep -v '^$' | head -n 25
            perf report -i "$WORK/perf.$label.data" --no-children --sort dso,symbol --stdio -g none \
                --percent-limit 0.4 2>/dev/null | grep -v '^#' | grep -v '^$' | head -n 70
            echo
            echo "# $label: samples by class (bench/perf_classify.py)"
            perf script -i "$WORK/perf.$label.data" 2>/dev/null | python3 "$ROOT/bench/perf_classify.py"
            echo
            echo "# $label: system calls per request over the window"
            python3 - "$WORK/syscalls.$label.csv" "$line" <<'PY'
import json, sys
path, line = sys.argv[1], sys.argv[2]
requests = max(json.loads(line).get("requests", 0), 1)
counts = []
for row in open(path):
    f = row.strip().split(",")
    if len(f) > 2 and f[0].isdigit() and int(f[0]) > 0:
        counts.append((int(f[0]), f[2].replace("syscalls:sys_enter_", "")))
counts.sort(reverse=True)
print(f"| call | per request |\n|---|---:|")
print(f"| all | {sum(c for c, _ in counts) / requests:.2f} |")
for c, name in counts[:12]:
    print(f"| {name} | {c / requests:.2f} |")
PY
        } >"$PERF_DIR/perf-$label.txt" || true
        [[ $KEEP == 1 ]] && cp "$WORK/perf.$label.data" "$PERF_DIR/" 2>/dev/null
    fi
    [[ $server == direct ]] || stop_pid "$PROXY_PID"
    stop_pid "$UP_PID"
    measured=$(awk -v p=$((p1 - p0)) -v b=$((b1 - b0)) -v u=$((u1 - u0)) -v hz="$HZ" -v d="$cpu_window" \
        'BEGIN { printf "{\"proxy_cpu_s\":%.2f,\"upstream_cpu_s\":%.2f,\"load_cpu_s\":%.2f,\"window_s\":%s}", p / hz, u / hz, b / hz, d }')
    log "$label #$rep: $line $measured"
    printf '{"label":"%s","rep":%s,"result":%s,"cpu":%s}\n' "$label" "$rep" "$line" "$measured" >>"$RAW"
}

# Resident memory (VmRSS, KiB) of a process and its children (nginx's
# worker), summed.
rss_kb() {
    local p c total=0 v
    for p in "$@"; do
        for c in "$p" $(pgrep -P "$p" 2>/dev/null || true); do
            v=$(awk '/^VmRSS:/ { print $2 }' "/proc/$c/status" 2>/dev/null || true)
            total=$((total + ${v:-0}))
        done
    done
    echo "$total"
}

# One memory run: label = SERVER-mem-VARIANT. The proxy starts, answers one
# request (its readiness check), settles; its RSS is read; `ward-bench idle`
# opens MEM_CONNS mTLS connections (VARIANT req: with one GET each) and
# holds them; once it says it holds them and a second has passed, the RSS
# is read again. Per connection = (after − before) ÷ connections held.
run_mem() { # label
    local label=$1 server=${1%%-*} variant=${1##*-} req=() before after err=$WORK/idle.err bench_pid i
    local conns=$MEM_CONNS
    [[ $variant == req ]] && req=(--request)
    [[ $server == haproxy ]] && ((conns > HAPROXY_MAXCONN - 50)) && conns=$((HAPROXY_MAXCONN - 50))
    start_upstream "$LOAD_CPU"
    start_proxy "$server" mem
    sleep 1
    before=$(rss_kb "$PROXY_PID")
    : >"$err"
    taskset -c "$LOAD_CPU" "$BENCH" idle --url "$PROXY_URL" "${TLS_ARGS[@]}" --kx-group "$KX_GROUP" \
        --connections "$conns" "${req[@]}" --hold 5s --setup-timeout 120s \
        >"$WORK/idle.out" 2>"$err" &
    bench_pid=$!
    PIDS+=("$bench_pid")
    for ((i = 0; i < 2600; i++)); do
        grep -q 'ward-bench idle: holding' "$err" && break
        kill -0 "$bench_pid" 2>/dev/null || break
        sleep 0.05
    done
    sleep 1
    after=$(rss_kb "$PROXY_PID")
    wait "$bench_pid" || { log "ward-bench idle failed:"; cat "$err" >&2; exit 1; }
    stop_pid "$bench_pid"
    stop_pid "$PROXY_PID"
    stop_pid "$UP_PID"
    [[ -s $err ]] && log "$label: $(head -c 300 "$err")"
    log "$label: RSS $before KiB → $after KiB; $(cat "$WORK/idle.out")"
    printf '{"label":"%s","rep":1,"result":%s,"rss_before_kb":%s,"rss_after_kb":%s}\n' \
        "$label" "$(cat "$WORK/idle.out")" "$before" "$after" >>"$RAW"
}

PEERS=()
[[ -n ${WARD_BASE:-} ]] && PEERS+=(before)
[[ $WITH_NOCACHE == 1 ]] && PEERS+=(nocache)
[[ $SKIP_BARE == 1 ]] || PEERS+=(bare)
[[ $HAVE_NGINX == 1 ]] && PEERS+=(nginx)
[[ $HAVE_HAPROXY == 1 ]] && PEERS+=(haproxy)
if [[ -n $CONFIGS_ENV ]]; then
    read -ra CONFIGS <<<"$CONFIGS_ENV"
else
    # Ward and each peer alternate within every workload (A B C A B C …
    # across repeats), so drift on a shared machine hits all of them.
    CONFIGS=(ward-hs)
    for p in "${PEERS[@]}"; do CONFIGS+=("$p-hs"); done
    [[ $SKIP_PQ == 1 ]] || CONFIGS+=(ward-hs-pq)
    if [[ $SKIP_RESUME != 1 ]]; then
        CONFIGS+=(ward-rs)
        for p in "${PEERS[@]}"; do CONFIGS+=("$p-rs"); done
    fi
    CONFIGS+=(ward-ka)
    for p in "${PEERS[@]}"; do CONFIGS+=("$p-ka"); done
    CONFIGS+=(direct-ka)
    [[ $SKIP_LAT == 1 ]] || CONFIGS+=(ward-lat direct-lat)
    if [[ $SKIP_MEM != 1 ]]; then
        for v in $MEM_VARIANTS; do
            CONFIGS+=("ward-mem-$v")
            for p in "${PEERS[@]}"; do CONFIGS+=("$p-mem-$v"); done
        done
    fi
fi
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

# The public-key ceiling, timed on the proxy's core before the runs.
CEILING=$(taskset -c "$SERVER_CPU" "$BENCH" ceiling)
log "ceiling: $CEILING"
printf '{"label":"ceiling","rep":1,"result":%s}\n' "$CEILING" >>"$RAW"

for ((rep = 1; rep <= REPEATS; rep++)); do
    for label in "${CONFIGS[@]}"; do
        if [[ $label == *-mem-* ]]; then
            # Memory is not a rate: one run is enough.
            [[ $rep == 1 ]] && run_mem "$label"
        else
            run_one "$label" "$rep"
        fi
    done
done
LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)
[[ -n $RAW_OUT ]] && cp "$RAW" "$RAW_OUT"

# ---------------------------------------------------------------- table
CPU_MODEL=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
CORES=$(nproc --all)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] && COMMIT="$COMMIT (+uncommitted changes)"
NOTES=""
[[ $HAVE_NGINX == 1 ]] || NOTES+=" nginx skipped (not installed or SKIP_NGINX)."
[[ $HAVE_HAPROXY == 1 ]] || NOTES+=" HAProxy skipped (not installed or SKIP_HAPROXY)."

TABLE=$(
    DATE_UTC=$(date -u +%Y-%m-%dT%H:%MZ) COMMIT=$COMMIT CPU_MODEL=$CPU_MODEL CORES=$CORES \
        LOADAVG=$LOADAVG LOADAVG_END=$LOADAVG_END CONCURRENCY=$CONCURRENCY DURATION=$DURATION \
        WARMUP=$WARMUP REPEATS=$REPEATS RATE=$RATE SERVER_CPU=$SERVER_CPU LOAD_CPU=$LOAD_CPU \
        KX_GROUP=$KX_GROUP SKIP_CHAIN_VERIFY=$SKIP_CHAIN_VERIFY NGINX_VERSION=$NGINX_VERSION \
        HAPROXY_VERSION=$HAPROXY_VERSION MEM_CONNS=$MEM_CONNS NOTES=$NOTES \
        python3 "$ROOT/bench/gate_table.py" "$RAW"
)

printf '%s\n' "$TABLE"
if [[ -n $RESULTS ]]; then
    printf '\n%s\n' "$TABLE" >>"$RESULTS"
    log "appended to $RESULTS"
fi
