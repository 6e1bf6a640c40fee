#!/usr/bin/env bash
# Instructions per `/v1/sign`, counted by valgrind's callgrind: repeatable
# on a noisy machine where timings are not (issue 22, item 2).
#
# `ward ca serve` (SQLite) runs under callgrind twice; a Python client
# (stdlib ssl + http.client, one keep-alive connection, one request at a
# time) sends FEW and then MANY `POST /v1/sign` with the same CSR. The
# instructions of the server per request are
#     (Ir(MANY) − Ir(FEW)) ÷ (MANY − FEW),
# which cancels start-up and shutdown. One request at a time means every
# request is its own commit (no group-commit batching): the worst case per
# request. The top inclusive functions of the MANY run are written next to
# the output file for a look at where the instructions go.
#
# Environment (all optional):
#   FEW=20 MANY=120         request counts of the two runs
#   WARD_BIN=path           the ward binary (default: the debug build)
#   OUT=path                where to write the per-function report
#                           (default: a temporary directory, printed)
#   KEEP=1                  keep the temporary directory
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
FEW=${FEW:-20}
MANY=${MANY:-120}
KEEP=${KEEP:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WARD=${WARD_BIN:-$TARGET_DIR/debug/ward}

log() { printf 'callgrind_sign.sh: %s\n' "$*" >&2; }
command -v valgrind >/dev/null || { log "valgrind is not installed (apt-get install valgrind)"; exit 1; }
(( MANY > FEW )) || { log "MANY must exceed FEW"; exit 1; }

SERVER_PID=""
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-callgrind.XXXXXX")
OUT=${OUT:-$WORK/callgrind-top.txt}
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

CA=$WORK/ca
"$WARD" ca init --dir "$CA" --trust-domain example.org >/dev/null
sed -i -E 's/^(per_(address|token)_(per_second|burst)) = .*/\1 = 100000000/' "$CA/ca.toml"
"$WARD" token create --dir "$CA" --spiffe-id spiffe://example.org/bench \
    --uses 0 --expires-in 2h 2>/dev/null | head -n1 >"$WORK/token"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj / \
    -keyout "$WORK/csr.key" -out "$WORK/csr.pem" 2>/dev/null

# One run: serve under callgrind, send N requests, stop; prints total Ir.
run() { # n
    local n=$1 err=$WORK/serve.$1.err url="" i
    : >"$err"
    valgrind --tool=callgrind --callgrind-out-file="$WORK/cg.$n" \
        "$WARD" ca serve --dir "$CA" --listen 127.0.0.1:0 >/dev/null 2>"$err" &
    SERVER_PID=$!
    for ((i = 0; i < 1200; i++)); do
        # A complete line only (valgrind's slow writes can be caught mid-line).
        url=$(grep -o 'listening on https://[^ ]*:[0-9]*$' "$err" | head -n1 | sed 's/^listening on //' || true)
        if [[ -n $url ]]; then
            sleep 0.5
            [[ $(grep -o 'listening on https://[^ ]*:[0-9]*$' "$err" | head -n1 | sed 's/^listening on //') == "$url" ]] && break
        fi
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n $url ]] || { log "ward ca serve did not start:"; cat "$err" >&2; exit 1; }
    if ! python3 - "$url" "$CA/root.crt" "$WORK/token" "$WORK/csr.pem" "$n" <<'PY'
import http.client, json, ssl, sys, urllib.parse
url, root, token, csr, n = sys.argv[1:6]
u = urllib.parse.urlsplit(url)
ctx = ssl.create_default_context(cafile=root)
conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=600)
body = json.dumps({"token": open(token).read().strip(), "csr": open(csr).read()})
for i in range(int(n)):
    conn.request("POST", "/v1/sign", body, {"content-type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 201:
        sys.exit(f"request {i}: {r.status} {data[:200]!r}")
conn.close()
PY
    then
        log "the client failed"
        exit 1
    fi
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    # "summary: N" (older valgrind) or "totals: N" in the output file.
    awk '/^(summary|totals):/ { print $2; exit }' "$WORK/cg.$n"
}

few=$(run "$FEW") || exit 1
many=$(run "$MANY") || exit 1
per=$(( (many - few) / (MANY - FEW) ))
callgrind_annotate --inclusive=yes "$WORK/cg.$MANY" 2>/dev/null | head -n 80 >"$OUT" || true
log "Ir: $FEW requests $few, $MANY requests $many; per-function report: $OUT"
printf '{"few":%s,"many":%s,"ir_few":%s,"ir_many":%s,"ir_per_request":%s}\n' \
    "$FEW" "$MANY" "$few" "$many" "$per"
