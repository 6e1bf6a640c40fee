#!/usr/bin/env bash
# Gate benchmark: full mTLS handshakes/s and keep-alive requests/s through
# `ward gate serve` (and nginx, when available, as a peer), keep-alive
# requests/s straight to the plain upstream, and the latency the gate adds
# at a fixed rate.
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
#   SKIP_NGINX=1 SKIP_PQ=1   skip the nginx / X25519MLKEM768 configurations
#   INSTALL_NGINX=0      do not try `apt-get install nginx-light`
#   RESULTS=path         where to append the table ("" = don't)
#   PERF_DIR=dir         perf-record the proxy during the first repeat of
#                        each proxied configuration; reports there
#   KEEP=1               keep the temporary directory
#   BUILD=0              use the release binaries already built
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
SKIP_PQ=${SKIP_PQ:-0}
INSTALL_NGINX=${INSTALL_NGINX:-1}
RESULTS=${RESULTS-$ROOT/bench/RESULTS.md}
PERF_DIR=${PERF_DIR:-}
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
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
WARD=$TARGET_DIR/release/ward
BENCH=$TARGET_DIR/release/ward-bench

# ---------------------------------------------------------------- certificates
# ECDSA P-256 root + intermediate; the server and client leaves are sent with
# the intermediate (PREFIX.crt = leaf + intermediate).
CA=$WORK/ca
"$WARD" ca init --dir "$CA" --trust-domain example.org >/dev/null
"$WARD" cert create --ca-dir "$CA" --profile server --dns localhost --ip 127.0.0.1 \
    --spiffe-id spiffe://example.org/gate --out "$WORK/server" >/dev/null
"$WARD" cert create --ca-dir "$CA" --profile client \
    --spiffe-id spiffe://example.org/bench --out "$WORK/client" >/dev/null

# ---------------------------------------------------------------- nginx
HAVE_NGINX=0
NGINX_VERSION=""
if [[ $SKIP_NGINX == 1 ]]; then
    log "nginx skipped (SKIP_NGINX=1)"
else
    if ! command -v nginx >/dev/null && [[ $INSTALL_NGINX == 1 ]] && [[ $(id -u) == 0 ]]; then
        log "installing nginx-light"
        apt-get install -y -q nginx-light >/dev/null 2>&1 ||
            { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q nginx-light >/dev/null 2>&1; } ||
            log "apt-get install nginx-light failed"
    fi
    if command -v nginx >/dev/null; then
        HAVE_NGINX=1
        NGINX_VERSION=$(nginx -v 2>&1 | sed 's/^nginx version: nginx\///')
    else
        log "nginx skipped: not installed"
    fi
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

start_gate() {
    local err=$WORK/gate.err addr i
    : >"$err"
    taskset -c "$SERVER_CPU" "$WARD" gate serve --listen 127.0.0.1:0 \
        --cert "$WORK/server.crt" --key "$WORK/server.key" --client-ca "$CA/root.crt" \
        --upstream "$UP_URL" --allow-spiffe-id 'spiffe://example.org/*' --audit-log off \
        >/dev/null 2>"$err" &
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
events { worker_connections 8192; }
http {
    access_log off;
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
    for ((i = 0; i < 200; i++)); do
        if curl -sf -o /dev/null --cacert "$CA/root.crt" --cert "$WORK/client.crt" \
            --key "$WORK/client.key" "$PROXY_URL"; then
            return 0
        fi
        kill -0 "$PROXY_PID" 2>/dev/null || break
        sleep 0.05
    done
    log "nginx did not start:"
    cat "$dir/stdout" "$dir/error.log" >&2 2>/dev/null || true
    exit 1
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

run_one() { # label rep
    local label=$1 rep=$2 mode url kx=$KX_GROUP rate=() tls=() up_cpu=$SERVER_CPU
    local measured perf_pid="" bench_pid line
    case $label in
        *-hs | *-hs-pq) mode=handshake; up_cpu=$LOAD_CPU ;;
        *-ka) mode=keepalive ;;
        *-lat) mode=keepalive; rate=(--rate "$RATE") ;;
    esac
    [[ $label == *-pq ]] && kx=default
    start_upstream "$up_cpu"
    case $label in
        ward-*) start_gate; url=$PROXY_URL; tls=("${TLS_ARGS[@]}" --kx-group "$kx") ;;
        nginx-*) start_nginx; url=$PROXY_URL; tls=("${TLS_ARGS[@]}" --kx-group "$kx") ;;
        direct-*) PROXY_PID=$UP_PID; url=$UP_URL/ ;;
    esac
    if [[ -n $PERF_DIR && $rep == 1 && $label != direct-* ]]; then
        mkdir -p "$PERF_DIR"
        local perf_pids=$PROXY_PID
        [[ $label == nginx-* ]] && perf_pids=$(pgrep -P "$PROXY_PID" | paste -sd,)
        (sleep "$(to_secs "$WARMUP")" && exec perf record -q -e cpu-clock -F 999 -g \
            -p "$perf_pids" -o "$WORK/perf.$label.data" -- sleep "$(to_secs "$DURATION")") >/dev/null 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
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
        } >"$PERF_DIR/perf-$label.txt" || true
    fi
    [[ $label == direct-* ]] || stop_pid "$PROXY_PID"
    stop_pid "$UP_PID"
    measured=$(awk -v p=$((p1 - p0)) -v b=$((b1 - b0)) -v u=$((u1 - u0)) -v hz="$HZ" -v d="$cpu_window" \
        'BEGIN { printf "{\"proxy_cpu_s\":%.2f,\"upstream_cpu_s\":%.2f,\"load_cpu_s\":%.2f,\"window_s\":%s}", p / hz, u / hz, b / hz, d }')
    log "$label #$rep: $line $measured"
    printf '{"label":"%s","rep":%s,"result":%s,"cpu":%s}\n' "$label" "$rep" "$line" "$measured" >>"$RAW"
}

CONFIGS=(ward-hs)
[[ $HAVE_NGINX == 1 ]] && CONFIGS+=(nginx-hs)
[[ $SKIP_PQ == 1 ]] || CONFIGS+=(ward-hs-pq)
CONFIGS+=(ward-ka)
[[ $HAVE_NGINX == 1 ]] && CONFIGS+=(nginx-ka)
CONFIGS+=(direct-ka ward-lat direct-lat)
LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)

for ((rep = 1; rep <= REPEATS; rep++)); do
    for label in "${CONFIGS[@]}"; do
        run_one "$label" "$rep"
    done
done
LOADAVG_END=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- table
CPU_MODEL=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
CORES=$(nproc --all)
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] && COMMIT="$COMMIT (+uncommitted changes)"
NOTES=""
[[ $HAVE_NGINX == 1 ]] || NOTES+=" nginx skipped (not installed or SKIP_NGINX)."

TABLE=$(
    DATE_UTC=$(date -u +%Y-%m-%dT%H:%MZ) COMMIT=$COMMIT CPU_MODEL=$CPU_MODEL CORES=$CORES \
        LOADAVG=$LOADAVG LOADAVG_END=$LOADAVG_END CONCURRENCY=$CONCURRENCY DURATION=$DURATION \
        WARMUP=$WARMUP REPEATS=$REPEATS RATE=$RATE SERVER_CPU=$SERVER_CPU LOAD_CPU=$LOAD_CPU \
        KX_GROUP=$KX_GROUP SKIP_CHAIN_VERIFY=$SKIP_CHAIN_VERIFY NGINX_VERSION=$NGINX_VERSION \
        NOTES=$NOTES python3 - "$RAW" <<'EOF'
import json, os, statistics, sys
e = os.environ
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    res = r["result"]
    cpu = r["cpu"]
    w = cpu["window_s"]
    direct = r["label"].startswith("direct-")
    res["proxy_pct"] = 100 * cpu["proxy_cpu_s"] / w
    res["up_pct"] = 0.0 if direct else 100 * cpu["upstream_cpu_s"] / w
    res["load_pct"] = 100 * cpu["load_cpu_s"] / w
    # CPU per successful request, from the CPU rate and the request rate.
    res["proxy_us"] = 1e6 * (cpu["proxy_cpu_s"] / w) / max(res["rps"], 1e-9)
    runs.setdefault(r["label"], []).append(res)
kx = e["KX_GROUP"]
nginx = f"nginx {e['NGINX_VERSION']}"
names = {
    "ward-hs": ("full mTLS handshakes", "Ward gate", kx),
    "nginx-hs": ("full mTLS handshakes", nginx, kx),
    "ward-hs-pq": ("full mTLS handshakes", "Ward gate", "default (X25519MLKEM768)"),
    "ward-ka": (f"keep-alive, c={e['CONCURRENCY']}", "Ward gate", kx),
    "nginx-ka": (f"keep-alive, c={e['CONCURRENCY']}", nginx, kx),
    "direct-ka": (f"keep-alive, c={e['CONCURRENCY']}", "direct (plain HTTP)", "–"),
    "ward-lat": (f"keep-alive at {e['RATE']}/s", "Ward gate", kx),
    "direct-lat": (f"keep-alive at {e['RATE']}/s", "direct (plain HTTP)", "–"),
}
med = lambda rs, k: statistics.median(r[k] for r in rs)
print(f"### Gate, {e['DATE_UTC']}, commit {e['COMMIT']}")
print()
print(f"{e['CPU_MODEL']}, {e['CORES']} cores; proxy pinned to core {e['SERVER_CPU']}, "
      f"ward-bench to core {e['LOAD_CPU']}; upstream (`ward-bench upstream`, 1 thread) on the "
      f"proxy's core for keep-alive and latency rows, on the load's core for handshake rows; "
      f"TLS 1.3, ECDSA P-256, client chain leaf + intermediate, no resumption; "
      f"client {'skips the server chain check' if e['SKIP_CHAIN_VERIFY'] == '1' else 'verifies the server chain'}; "
      f"{e['DURATION']} windows after {e['WARMUP']} warmup; median of {e['REPEATS']} interleaved runs; "
      f"load average {e['LOADAVG']} at start, {e['LOADAVG_END']} at end.{e['NOTES']}")
print()
print("| workload | server | kx group | req/s | p50 ms | p90 ms | p99 ms | max ms | errors "
      "| proxy CPU % | proxy µs/req | upstream CPU % | load CPU % | req/s per run |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
for label, (work, srv, group) in names.items():
    rs = runs.get(label)
    if not rs:
        continue
    per_run = ", ".join(f"{r['rps']:.0f}" for r in rs)
    errors = sum(r["errors"] for r in rs)
    print(f"| {work} | {srv} | {group} | {med(rs, 'rps'):.0f} | {med(rs, 'p50_ms'):.3f} | "
          f"{med(rs, 'p90_ms'):.3f} | {med(rs, 'p99_ms'):.3f} | {med(rs, 'max_ms'):.2f} | "
          f"{errors} | {med(rs, 'proxy_pct'):.0f} | {med(rs, 'proxy_us'):.0f} | "
          f"{med(rs, 'up_pct'):.0f} | {med(rs, 'load_pct'):.0f} | {per_run} |")
print()
def ratio(a, b, k="rps"):
    return med(runs[a], k) / max(med(runs[b], k), 1e-9)
if "ward-hs" in runs:
    hs = runs["ward-hs"]
    full = 1e6 / med(hs, "proxy_us")
    print(f"- Gate handshakes per second of gate CPU (1e6 ÷ proxy µs/req): {full:.0f}/s "
          f"({100 * full / 4360:.0f} % of issue 7's public-key ceiling of 4,360/s; target ≥ 55 %).")
if "ward-hs" in runs and "nginx-hs" in runs:
    print(f"- Handshakes, Ward ÷ nginx: {ratio('ward-hs', 'nginx-hs'):.2f}× measured, "
          f"{ratio('nginx-hs', 'ward-hs', 'proxy_us'):.2f}× per CPU second (target ≥ 4×).")
if "ward-ka" in runs and "nginx-ka" in runs:
    print(f"- Keep-alive, Ward ÷ nginx: {ratio('ward-ka', 'nginx-ka'):.2f}×.")
if "ward-ka" in runs and "direct-ka" in runs:
    print(f"- Keep-alive through the gate ÷ direct: {ratio('ward-ka', 'direct-ka'):.2f}×.")
if "ward-lat" in runs and "direct-lat" in runs:
    d50 = med(runs["ward-lat"], "p50_ms") - med(runs["direct-lat"], "p50_ms")
    d99 = med(runs["ward-lat"], "p99_ms") - med(runs["direct-lat"], "p99_ms")
    print(f"- Added latency at {e['RATE']}/s (gate − direct): p50 {d50:+.3f} ms, p99 {d99:+.3f} ms "
          f"(target p99 ≤ 1 ms).")
EOF
)

printf '%s\n' "$TABLE"
if [[ -n $RESULTS ]]; then
    printf '\n%s\n' "$TABLE" >>"$RESULTS"
    log "appended to $RESULTS"
fi
