#!/usr/bin/env bash
# Thread wake-ups per `/v1/sign`: the context switches of every thread of
# `ward ca serve` (SQLite) over N requests sent one at a time on one
# keep-alive connection (Python stdlib client), divided by N. Counts the
# cost callgrind cannot see: hand-offs between Tokio's workers and the
# thread sqlx runs the SQLite connection on (each a futex wake-up and a
# switch). Read from /proc/PID/task/*/status before and after the requests.
#
# Environment (all optional):
#   N=500                   requests
#   WARD_BIN=path           the ward binary (default: the debug build)
#   SERVER_CPU=0            core the server is pinned to
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
N=${N:-500}
SERVER_CPU=${SERVER_CPU:-0}
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WARD=${WARD_BIN:-$TARGET_DIR/debug/ward}

log() { printf 'switches_sign.sh: %s\n' "$*" >&2; }

SERVER_PID=""
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-switches.XXXXXX")
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

CA=$WORK/ca
"$WARD" ca init --dir "$CA" --trust-domain example.org >/dev/null
sed -i -E 's/^(per_(address|token)_(per_second|burst)) = .*/\1 = 100000000/' "$CA/ca.toml"
"$WARD" token create --dir "$CA" --spiffe-id spiffe://example.org/bench \
    --uses 0 --expires-in 2h 2>/dev/null | head -n1 >"$WORK/token"
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj / \
    -keyout "$WORK/csr.key" -out "$WORK/csr.pem" 2>/dev/null

err=$WORK/serve.err
taskset -c "$SERVER_CPU" "$WARD" ca serve --dir "$CA" --listen 127.0.0.1:0 >/dev/null 2>"$err" &
SERVER_PID=$!
URL=""
for ((i = 0; i < 200; i++)); do
    URL=$(grep -o 'listening on https://[^ ]*:[0-9]*$' "$err" | head -n1 | sed 's/^listening on //' || true)
    [[ -n $URL ]] && break
    kill -0 "$SERVER_PID" 2>/dev/null || break
    sleep 0.05
done
[[ -n $URL ]] || { log "ward ca serve did not start:"; cat "$err" >&2; exit 1; }

python3 - "$URL" "$CA/root.crt" "$WORK/token" "$WORK/csr.pem" "$N" "$SERVER_PID" <<'PY'
import glob, http.client, json, ssl, sys, time, urllib.parse
url, root, token, csr, n, pid = sys.argv[1:7]
n = int(n)

def switches():
    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            for line in open(status):
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
        except FileNotFoundError:
            pass
    return total

u = urllib.parse.urlsplit(url)
ctx = ssl.create_default_context(cafile=root)
conn = http.client.HTTPSConnection(u.hostname, u.port, context=ctx, timeout=60)
body = json.dumps({"token": open(token).read().strip(), "csr": open(csr).read()})

def one():
    conn.request("POST", "/v1/sign", body, {"content-type": "application/json"})
    r = conn.getresponse()
    data = r.read()
    if r.status != 201:
        sys.exit(f"{r.status} {data[:200]!r}")

for _ in range(20):  # warm: connection, caches, the token cache
    one()
before, t = switches(), time.perf_counter()
for _ in range(n):
    one()
elapsed, after = time.perf_counter() - t, switches()
print(json.dumps({"requests": n, "switches_per_request": round((after - before) / n, 2),
                  "ms_per_request": round(1000 * elapsed / n, 3)}))
PY
