#!/usr/bin/env bash
# CRL polling benchmark (issue 22, item 4): how many CRL polls one CA core
# answers when many gates poll with `If-None-Match` and the CRL has not
# changed (304), and how many full CRL downloads (200). nginx serving the
# same DER file from disk (its own ETag) is the peer, with the same load
# generator (h2load, HTTP/1.1 keep-alive, plain HTTP as CRL distribution
# points conventionally are).
#
# Server (ward ca serve --http-listen, or nginx with one worker) pinned to
# one core, h2load to the other; configurations run REPEATS times,
# interleaved; medians reported. Appends a markdown table to
# bench/RESULTS.md.
#
# Environment (all optional):
#   CLIENTS=64 DURATION=8 REPEATS=3 SERVER_CPU=0 LOAD_CPU=1
#   REVOKED=200         serials revoked before measuring (CRL size)
#   RESULTS=path        where to append the table ("" = don't)
#   BUILD=0             use the release binary already built
#   KEEP=1              keep the temporary directory
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLIENTS=${CLIENTS:-64}
DURATION=${DURATION:-8}
REPEATS=${REPEATS:-3}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
REVOKED=${REVOKED:-200}
RESULTS=${RESULTS-$ROOT/bench/RESULTS.md}
BUILD=${BUILD:-1}
KEEP=${KEEP:-0}

log() { printf 'crl.sh: %s\n' "$*" >&2; }

for tool in h2load nginx taskset curl sqlite3; do
    command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] ||
        { log "$tool is required (apt-get install nghttp2-client nginx-light util-linux curl sqlite3)"; exit 1; }
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-crl.XXXXXX")
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
    log "building ward (release)"
    (cd "$ROOT" && cargo build --release -q -p ward)
fi
WARD=${WARD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/ward}

# ---------------------------------------------------------------- CA
CA=$WORK/ca
"$WARD" ca init --dir "$CA" --trust-domain example.org >/dev/null
# A CRL of realistic size: REVOKED serials, revoked through the CLI's own
# path would take minutes; issue them offline and revoke them in one go.
log "issuing and revoking $REVOKED certificates"
for ((i = 0; i < REVOKED; i++)); do
    "$WARD" cert create --ca-dir "$CA" --profile client --spiffe-id "spiffe://example.org/crl/$i" \
        --out "$WORK/leaf" >/dev/null 2>&1
    serial=$(openssl x509 -in "$WORK/leaf.crt" -noout -serial | cut -d= -f2)
    "$WARD" revoke "$serial" --dir "$CA" >/dev/null 2>&1 ||
        { log "ward revoke failed for $serial"; exit 1; }
done

taskset -c "$SERVER_CPU" "$WARD" ca serve --dir "$CA" --listen 127.0.0.1:0 \
    --http-listen 127.0.0.1:0 >/dev/null 2>"$WORK/ca.err" &
PIDS+=($!)
CA_HTTP=""
for ((i = 0; i < 200; i++)); do
    CA_HTTP=$(grep -o 'listening on http://[^ ]*' "$WORK/ca.err" | head -n1 | sed 's/^listening on //' || true)
    [[ -n $CA_HTTP ]] && break
    sleep 0.05
done
[[ -n $CA_HTTP ]] || { log "ward ca serve did not start:"; cat "$WORK/ca.err" >&2; exit 1; }

curl -sS -D "$WORK/crl.headers" -o "$WORK/crl.der" "$CA_HTTP/v1/crl"
WARD_ETAG=$(grep -i '^etag:' "$WORK/crl.headers" | cut -d' ' -f2- | tr -d '\r')
CRL_BYTES=$(stat -c %s "$WORK/crl.der")
listed=$(openssl crl -inform DER -in "$WORK/crl.der" -noout -text | grep -c 'Serial Number' || true)
[[ $listed -ge $REVOKED ]] || { log "the CRL lists $listed serials, expected $REVOKED"; exit 1; }
[[ -n $WARD_ETAG ]] || { log "no ETag from the CA"; exit 1; }

# ---------------------------------------------------------------- nginx
mkdir -p "$WORK/nginx/html/v1"
cp "$WORK/crl.der" "$WORK/nginx/html/v1/crl"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
# The worker reads files in this private directory: as root, run it as root.
user=""
[[ $(id -u) == 0 ]] && user="user root;"
cat >"$WORK/nginx/nginx.conf" <<EOF
$user
worker_processes 1;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    types { application/pkix-crl crl; }
    default_type application/pkix-crl;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port;
        root $WORK/nginx/html;
        etag on;
    }
}
EOF
taskset -c "$SERVER_CPU" "$NGINX" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" 2>"$WORK/nginx/start.err" &
PIDS+=($!)
NGINX_URL=http://127.0.0.1:$port
for ((i = 0; i < 200; i++)); do
    curl -s -o /dev/null "$NGINX_URL/v1/crl" && break
    sleep 0.05
done
curl -sS -D "$WORK/nginx.headers" -o /dev/null "$NGINX_URL/v1/crl"
NGINX_ETAG=$(grep -i '^etag:' "$WORK/nginx.headers" | cut -d' ' -f2- | tr -d '\r')

# ---------------------------------------------------------------- load
# One run: prints req/s; fails unless every request got the expected class.
run() { # url expected_class(2xx|3xx) [etag]
    local url=$1 class=$2 etag=${3:-} out done_n got
    local args=(--h1 -c "$CLIENTS" -t 1 -D "$DURATION" --warm-up-time 1)
    [[ -n $etag ]] && args+=(-H "if-none-match: $etag")
    out=$(taskset -c "$LOAD_CPU" h2load "${args[@]}" "$url/v1/crl" 2>&1)
    done_n=$(grep -o '[0-9]* done' <<<"$out" | head -n1 | cut -d' ' -f1)
    got=$(grep -o "[0-9]* $class" <<<"$out" | head -n1 | cut -d' ' -f1)
    if [[ -z $done_n || $done_n == 0 || $got != "$done_n" ]]; then
        log "unexpected answers from $url ($class expected):"
        printf '%s\n' "$out" >&2
        exit 1
    fi
    grep -o 'finished in [^,]*, [0-9.]* req/s' <<<"$out" | awk '{print $4}'
}

declare -A rates
configs=("ward-304" "nginx-304" "ward-200" "nginx-200")
for ((r = 1; r <= REPEATS; r++)); do
    for c in "${configs[@]}"; do
        case $c in
        ward-304) v=$(run "$CA_HTTP" 3xx "$WARD_ETAG") ;;
        nginx-304) v=$(run "$NGINX_URL" 3xx "$NGINX_ETAG") ;;
        ward-200) v=$(run "$CA_HTTP" 2xx) ;;
        nginx-200) v=$(run "$NGINX_URL" 2xx) ;;
        esac
        log "repeat $r $c: $v req/s"
        rates[$c]="${rates[$c]:-} $v"
    done
done
median() { tr ' ' '\n' <<<"$1" | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
w304=$(median "${rates[ward-304]}"); n304=$(median "${rates[nginx-304]}")
w200=$(median "${rates[ward-200]}"); n200=$(median "${rates[nginx-200]}")
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')
commit=$(cd "$ROOT" && git rev-parse --short HEAD)
dirty=$(cd "$ROOT" && git diff --quiet HEAD -- . 2>/dev/null || echo " (+uncommitted changes)")
table=$(cat <<EOF

### CRL polling, $(date -u +%Y-%m-%dT%H:%MZ), commit $commit$dirty

$(nproc) CPUs $cpu, load $(cut -d' ' -f1-3 /proc/loadavg); server on core $SERVER_CPU, h2load on core $LOAD_CPU; HTTP/1.1 keep-alive, $CLIENTS connections, ${DURATION} s per run, median of $REPEATS; CRL of $listed serials, $CRL_BYTES bytes DER.

| | Ward \`ca serve\` (req/s) | nginx, static file (req/s) | Ward / nginx |
|---|---:|---:|---:|
| \`If-None-Match\` → 304 | $(printf '%.0f' "$w304") | $(printf '%.0f' "$n304") | $(ratio "$w304" "$n304") |
| full CRL → 200 | $(printf '%.0f' "$w200") | $(printf '%.0f' "$n200") | $(ratio "$w200" "$n200") |
EOF
)
printf '%s\n' "$table"
if [[ -n $RESULTS ]]; then
    printf '%s\n' "$table" >>"$RESULTS"
fi
