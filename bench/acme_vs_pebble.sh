#!/usr/bin/env bash
# Side by side: the same lego (Debian) invocations and the same raw probes
# against Ward's ACME server and against Pebble (Debian), one after the
# other, so behaviour differences show up in one report. Not a benchmark:
# what differs is written down in docs/acme.md ("Differences").
#
# Both servers resolve names through one pebble-challtestsrv (every name
# → 127.0.0.1, TXT records set through lego's exec provider) and validate
# against lego's own http-01 / tls-alpn-01 servers.
#
# Environment (optional): PROFILE=debug|release (default debug), BUILD=0,
# KEEP=1 (keep the work directory).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PROFILE=${PROFILE:-debug}
BUILD=${BUILD:-1}
KEEP=${KEEP:-0}
log() { printf 'acme_vs_pebble.sh: %s\n' "$*" >&2; }
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
for tool in lego pebble pebble-challtestsrv curl python3; do
    command -v "$tool" >/dev/null || { log "$tool is missing"; exit 1; }
done

PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-acme-pebble.XXXXXX")
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
    flag=()
    [[ $PROFILE == release ]] && flag=(--release)
    (cd "$ROOT" && cargo build "${flag[@]}" -q -p ward)
fi
WARD=${WARD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE/ward}

DNS_PORT=$(free_port)
MGMT_PORT=$(free_port)
pebble-challtestsrv -dns01 "127.0.0.1:$DNS_PORT" -management "127.0.0.1:$MGMT_PORT" \
    -http01 "" -https01 "" -tlsalpn01 "" -defaultIPv4 127.0.0.1 -defaultIPv6 "" \
    >"$WORK/dns.log" 2>&1 &
PIDS+=("$!")
for ((i = 0; i < 200; i++)); do
    curl -s -o /dev/null "http://127.0.0.1:$MGMT_PORT/" && break
    sleep 0.05
done
HTTP_PORT=$(free_port)
TLS_PORT=$(free_port)
cat >"$WORK/dns-exec.sh" <<EOF
#!/bin/sh
case "\$1" in
  present) curl -sf -X POST -d "{\"host\":\"\$2\",\"value\":\"\$3\"}" http://127.0.0.1:$MGMT_PORT/set-txt ;;
  cleanup) curl -sf -X POST -d "{\"host\":\"\$2\"}" http://127.0.0.1:$MGMT_PORT/clear-txt ;;
esac
EOF
chmod +x "$WORK/dns-exec.sh"

# Ward.
CA=$WORK/ca
"$WARD" ca init --dir "$CA" --trust-domain example.org >/dev/null
cat >>"$CA/ca.toml" <<EOF

[acme]
http01_port = $HTTP_PORT
tlsalpn01_port = $TLS_PORT
dns_resolver = "127.0.0.1:$DNS_PORT"

[acme.provisioners.web]
allow_dns = ["*.acme.test"]
EOF
"$WARD" ca serve --dir "$CA" --listen 127.0.0.1:0 >/dev/null 2>"$WORK/ward.err" &
PIDS+=("$!")
for ((i = 0; i < 400; i++)); do
    WARD_URL=$(grep -o 'listening on https://[^ ]*' "$WORK/ward.err" | head -n1 | sed 's/^listening on //' || true)
    [[ -n $WARD_URL ]] && break
    sleep 0.05
done
[[ -n $WARD_URL ]] || { cat "$WORK/ward.err" >&2; exit 1; }

# Pebble, with an HTTPS certificate from Ward's CA (one root for both).
"$WARD" cert create --ca-dir "$CA" --profile server --ip 127.0.0.1 --dns localhost \
    --out "$WORK/pebble-tls" >/dev/null
PEBBLE_PORT=$(free_port)
cat >"$WORK/pebble.json" <<EOF
{"pebble": {"listenAddress": "127.0.0.1:$PEBBLE_PORT",
  "managementListenAddress": "127.0.0.1:$(free_port)",
  "certificate": "$WORK/pebble-tls.crt", "privateKey": "$WORK/pebble-tls.key",
  "httpPort": $HTTP_PORT, "tlsPort": $TLS_PORT,
  "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF
PEBBLE_VA_NOSLEEP=1 pebble -config "$WORK/pebble.json" -dnsserver "127.0.0.1:$DNS_PORT" \
    >"$WORK/pebble.log" 2>&1 &
PIDS+=("$!")
for ((i = 0; i < 400; i++)); do
    curl -s -o /dev/null --cacert "$CA/root.crt" "https://127.0.0.1:$PEBBLE_PORT/dir" && break
    sleep 0.05
done

declare -A DIRS=(
    [ward]="$WARD_URL/acme/web/directory"
    [pebble]="https://127.0.0.1:$PEBBLE_PORT/dir"
)

lego_run() { # server name args...
    local server=$1 name=$2
    shift 2
    LEGO_CA_CERTIFICATES=$CA/root.crt EXEC_PATH=$WORK/dns-exec.sh \
        lego --server "${DIRS[$server]}" --accept-tos --email ops@acme.test \
        --path "$WORK/lego-$server" "$@" >"$WORK/$server.$name.out" 2>&1
}

report() { # name ward-result pebble-result
    printf '| %s | %s | %s |\n' "$1" "$2" "$3"
}
outcome() { # server name args...
    local server=$1 name=$2
    shift 2
    if lego_run "$server" "$name" "$@"; then echo ok; else
        echo "FAILED: $(grep -o 'urn:ietf:params:acme:error:[A-Za-z]*[^"]\{0,80\}' "$WORK/$server.$name.out" | head -n1)"
    fi
}

echo "| probe | Ward | Pebble |"
echo "|---|---|---|"
declare -A R
for s in ward pebble; do
    R[$s.http]=$(outcome "$s" http --http --http.port "127.0.0.1:$HTTP_PORT" -d "http-$s.acme.test" run)
    R[$s.alpn]=$(outcome "$s" alpn --tls --tls.port "127.0.0.1:$TLS_PORT" -d "alpn-$s.acme.test" run)
    R[$s.dns]=$(outcome "$s" dns --dns exec --dns.resolvers "127.0.0.1:$DNS_PORT" \
        --dns.disable-cp -d "*.w-$s.acme.test" run)
    R[$s.renew]=$(outcome "$s" renew --http --http.port "127.0.0.1:$HTTP_PORT" \
        -d "http-$s.acme.test" renew --days 10000)
    R[$s.revoke]=$(outcome "$s" revoke -d "http-$s.acme.test" revoke)
    R[$s.ip]=$(outcome "$s" ip --http --http.port "127.0.0.1:$HTTP_PORT" -d "127.0.0.1" run)
done
report "lego http-01" "${R[ward.http]}" "${R[pebble.http]}"
report "lego tls-alpn-01" "${R[ward.alpn]}" "${R[pebble.alpn]}"
report "lego dns-01 wildcard" "${R[ward.dns]}" "${R[pebble.dns]}"
report "lego renew (same account, same name)" "${R[ward.renew]}" "${R[pebble.renew]}"
report "lego revoke" "${R[ward.revoke]}" "${R[pebble.revoke]}"
report "lego IP identifier 127.0.0.1 (http-01)" "${R[ward.ip]}" "${R[pebble.ip]}"

# Raw probes of the protocol surface.
probe() { # server → prints directory keys, nonce answers
    local dir=${DIRS[$1]} nonce_url
    curl -s --cacert "$CA/root.crt" "$dir" >"$WORK/$1.dir.json"
    nonce_url=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["newNonce"])' "$WORK/$1.dir.json")
    curl -s -I --cacert "$CA/root.crt" "$nonce_url" >"$WORK/$1.head"
    curl -s -o /dev/null -w '%{http_code}' --cacert "$CA/root.crt" "$nonce_url" >"$WORK/$1.get"
}
probe ward
probe pebble
keys() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(" ".join(sorted(d)) + " | meta: " + " ".join(sorted(d.get("meta", {}))))' "$1"; }
report "directory keys" "$(keys "$WORK/ward.dir.json")" "$(keys "$WORK/pebble.dir.json")"
hdr() { grep -i "^$2:" "$1" | tr -d '\r' | cut -d: -f2- | sed 's/^ //' | head -n1; }
report "HEAD newNonce status" "$(head -n1 "$WORK/ward.head" | tr -d '\r')" "$(head -n1 "$WORK/pebble.head" | tr -d '\r')"
report "HEAD newNonce Cache-Control" "$(hdr "$WORK/ward.head" cache-control)" "$(hdr "$WORK/pebble.head" cache-control)"
report "GET newNonce status" "$(cat "$WORK/ward.get")" "$(cat "$WORK/pebble.get")"
report "nonce length" "$(hdr "$WORK/ward.head" replay-nonce | tr -d '\n' | wc -c)" "$(hdr "$WORK/pebble.head" replay-nonce | tr -d '\n' | wc -c)"
