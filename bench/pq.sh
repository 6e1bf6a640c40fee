#!/usr/bin/env bash
# Post-quantum identities (issue 23): what ML-DSA certificates cost next to
# ECDSA P-256.
#
#   1. certificate and chain sizes (DER bytes) per key type, from
#      `ward ca init` / `ward cert create`;
#   2. full mTLS handshakes/s through `ward gate serve` with server and
#      client chains of each key type (leaf + intermediate, same key type
#      throughout), X25519MLKEM768 key exchange in every run so only the
#      signatures differ;
#   3. CA issuance/s per key type through `ward ca serve`: `/v1/sign` (one
#      CSR of the key type, the CA verifies it and signs with its own key of
#      that type) and `/v1/issue` (the CA also generates the key).
#
# Server (gate or CA) pinned to SERVER_CPU, load generator (ward-bench) to
# LOAD_CPU; every configuration runs REPEATS times, interleaved, medians
# reported. Bounded: each run lasts WARMUP + DURATION. Prints markdown and
# appends it to bench/RESULTS.md. See bench/README.md.
#
# Environment (all optional):
#   KEY_TYPES="ecdsa-p256 ml-dsa-44 ml-dsa-65 ml-dsa-87"
#   CONCURRENCY=32 DURATION=10s WARMUP=2s REPEATS=3 SERVER_CPU=0 LOAD_CPU=1
#   SKIP_GATE=1 SKIP_ISSUANCE=1
#   BUILD=0          use the binaries already built
#   PROFILE=release  cargo profile of the binaries (debug for a smoke run)
#   RESULTS=path     where to append ("" = don't)
#   KEEP=1           keep the temporary directory
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KEY_TYPES=${KEY_TYPES:-ecdsa-p256 ml-dsa-44 ml-dsa-65 ml-dsa-87}
CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
REPEATS=${REPEATS:-3}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
SKIP_GATE=${SKIP_GATE:-0}
SKIP_ISSUANCE=${SKIP_ISSUANCE:-0}
BUILD=${BUILD:-1}
PROFILE=${PROFILE:-release}
RESULTS=${RESULTS-$ROOT/bench/RESULTS.md}
KEEP=${KEEP:-0}

log() { printf 'pq.sh: %s\n' "$*" >&2; }

PIDS=()
WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-pq-bench.XXXXXX")
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    if [[ $KEEP == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# Stops one process started here and forgets it.
stop_pid() {
    local pid=$1 keep=() p
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    for p in "${PIDS[@]}"; do [[ $p == "$pid" ]] || keep+=("$p"); done
    PIDS=("${keep[@]}")
}

# Waits until FILE has a line matching REGEX (the process PID is alive);
# prints the first match.
wait_line() { # pid file regex what
    local i match
    for ((i = 0; i < 400; i++)); do
        match=$(grep -o -m1 -E "$3" "$2" || true)
        if [[ -n $match ]]; then
            printf '%s\n' "$match"
            return 0
        fi
        kill -0 "$1" 2>/dev/null || break
        sleep 0.05
    done
    log "$4 did not start:"
    cat "$2" >&2
    exit 1
}

# ---------------------------------------------------------------- build
CARGO_PROFILE=$PROFILE
OUT_DIR=$PROFILE
[[ $PROFILE == debug || $PROFILE == dev ]] && { CARGO_PROFILE=dev; OUT_DIR=debug; }
if [[ $BUILD == 1 ]]; then
    log "building ward and ward-bench ($CARGO_PROFILE)"
    (cd "$ROOT" && cargo build --profile "$CARGO_PROFILE" -q -p ward -p ward-bench)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WARD=${WARD_BIN:-$TARGET_DIR/$OUT_DIR/ward}
BENCH=${BENCH_BIN:-$TARGET_DIR/$OUT_DIR/ward-bench}

# ---------------------------------------------------------------- PKIs
# One CA per key type (root and intermediate of that type), a server leaf
# and a client leaf of that type; PREFIX.crt = leaf + intermediate.
der_sizes() { # pem files… → DER bytes of each certificate, space-separated
    python3 - "$@" <<'PY'
import base64, re, sys
out = []
for path in sys.argv[1:]:
    text = open(path).read()
    for body in re.findall(r"-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----", text, re.S):
        out.append(str(len(base64.b64decode("".join(body.split())))))
print(" ".join(out))
PY
}
# Runs a command, showing its output only when it fails.
quiet() {
    local out
    if ! out=$("$@" 2>&1); then
        printf '%s\n' "$out" >&2
        exit 1
    fi
}
SIZES=$WORK/sizes.tsv
: >"$SIZES"
for kt in $KEY_TYPES; do
    d=$WORK/$kt
    quiet "$WARD" ca init --dir "$d/ca" --trust-domain example.org --key-type "$kt"
    quiet "$WARD" cert create --ca-dir "$d/ca" --profile server --dns localhost --ip 127.0.0.1 \
        --spiffe-id spiffe://example.org/gate --key-type "$kt" --out "$d/server"
    quiet "$WARD" cert create --ca-dir "$d/ca" --profile client \
        --spiffe-id spiffe://example.org/bench --key-type "$kt" --out "$d/client"
    read -r root <<<"$(der_sizes "$d/ca/root.crt")"
    read -r leaf int <<<"$(der_sizes "$d/client.crt")"
    key=$(wc -c <"$d/client.key")
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$kt" "$root" "$int" "$leaf" "$((leaf + int))" "$key" >>"$SIZES"
    # Issuance: limits far above what one core can sign, a reusable token.
    sed -i -E 's/^(per_(address|token)_(per_second|burst)) = .*/\1 = 100000000/' "$d/ca/ca.toml"
    out=$("$WARD" token create --dir "$d/ca" --spiffe-id spiffe://example.org/bench \
        --uses 0 --expires-in 2h 2>/dev/null)
    printf '%s\n' "${out%%$'\n'*}" >"$d/token"
done

# ---------------------------------------------------------------- runs
RAW=$WORK/runs.jsonl
: >"$RAW"
UP_PID=""
UP_URL=""
start_upstream() {
    local err=$WORK/upstream.err
    : >"$err"
    taskset -c "$LOAD_CPU" "$BENCH" upstream --listen 127.0.0.1:0 --threads 1 2>"$err" &
    UP_PID=$!
    PIDS+=("$UP_PID")
    UP_URL=$(wait_line "$UP_PID" "$err" 'http://[0-9.:]+' "ward-bench upstream")
}

gate_run() { # key-type
    local kt=$1 d=$WORK/$1 err=$WORK/gate.err addr pid line
    : >"$err"
    taskset -c "$SERVER_CPU" "$WARD" gate serve --listen 127.0.0.1:0 \
        --cert "$d/server.crt" --key "$d/server.key" --client-ca "$d/ca/root.crt" \
        --upstream "$UP_URL" --allow-spiffe-id 'spiffe://example.org/*' --audit-log off \
        >/dev/null 2>"$err" &
    pid=$!
    PIDS+=("$pid")
    addr=$(wait_line "$pid" "$err" 'listening on [0-9.:]+' "ward gate serve")
    addr=${addr#listening on }
    # As in gate.sh, the client skips verifying the gate's chain (it still
    # checks the gate's CertificateVerify) so one core of load outruns one
    # core of gate; the gate verifies the whole client chain.
    line=$(taskset -c "$LOAD_CPU" "$BENCH" handshake --url "https://$addr/" \
        --ca-bundle "$d/ca/root.crt" --cert "$d/client.crt" --key "$d/client.key" \
        --skip-chain-verify --kx-group x25519mlkem768 --concurrency "$CONCURRENCY" --duration "$DURATION" \
        --warmup "$WARMUP")
    stop_pid "$pid"
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["label"]=sys.argv[2]; print(json.dumps(d))' \
        "$line" "gate $kt" >>"$RAW"
}

ca_run() { # key-type mode
    local kt=$1 mode=$2 d=$WORK/$1 err=$WORK/ca.err url pid line
    : >"$err"
    taskset -c "$SERVER_CPU" "$WARD" ca serve --dir "$d/ca" --listen 127.0.0.1:0 \
        >/dev/null 2>"$err" &
    pid=$!
    PIDS+=("$pid")
    url=$(wait_line "$pid" "$err" 'https://[0-9.:]+' "ward ca serve")
    line=$(taskset -c "$LOAD_CPU" "$BENCH" issue --url "$url" --ca-bundle "$d/ca/root.crt" \
        --token-file "$d/token" --mode "$mode" --key-type "$kt" \
        --concurrency "$CONCURRENCY" --duration "$DURATION" --warmup "$WARMUP")
    stop_pid "$pid"
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["label"]=sys.argv[2]; print(json.dumps(d))' \
        "$line" "$mode $kt" >>"$RAW"
}

[[ $SKIP_GATE == 1 ]] || start_upstream
for ((rep = 1; rep <= REPEATS; rep++)); do
    for kt in $KEY_TYPES; do
        if [[ $SKIP_GATE != 1 ]]; then
            log "repeat $rep: gate handshakes, $kt"
            gate_run "$kt"
        fi
        if [[ $SKIP_ISSUANCE != 1 ]]; then
            for mode in sign issue; do
                log "repeat $rep: /v1/$mode, $kt"
                ca_run "$kt" "$mode"
            done
        fi
    done
done
[[ -z $UP_PID ]] || stop_pid "$UP_PID"

# ---------------------------------------------------------------- report
REPORT=$WORK/report.md
python3 - "$RAW" "$SIZES" "$KEY_TYPES" >"$REPORT" <<'PY'
import json, statistics, sys
raw, sizes_path, key_types = sys.argv[1], sys.argv[2], sys.argv[3].split()
runs = {}
for line in open(raw):
    d = json.loads(line)
    runs.setdefault(d["label"], []).append(d)
def med(label, field):
    vals = [r[field] for r in runs.get(label, [])]
    return statistics.median(vals) if vals else None
def fmt(x, digits=0):
    return "—" if x is None else f"{x:,.{digits}f}"
print("### Sizes (DER bytes; PKCS#8 PEM key file bytes)\n")
print("| key type | root | intermediate | client leaf | chain sent (leaf + intermediate) | key file |")
print("|---|---:|---:|---:|---:|---:|")
base = None
for row in open(sizes_path):
    kt, root, inter, leaf, chain, key = row.split()
    base = base or int(chain)
    print(f"| {kt} | {int(root):,} | {int(inter):,} | {int(leaf):,} | {int(chain):,} ({int(chain)/base:.1f}×) | {int(key):,} |")
if any(l.startswith("gate ") for l in runs):
    print("\n### Full mTLS handshakes/s through the gate (X25519MLKEM768, chains of the key type on both sides)\n")
    print("| key type | handshakes/s | vs ecdsa-p256 | p50 ms | p99 ms | errors |")
    print("|---|---:|---:|---:|---:|---:|")
    ref = med("gate ecdsa-p256", "hps")
    for kt in key_types:
        hps = med(f"gate {kt}", "hps")
        ratio = "—" if not (hps and ref) else f"{hps/ref:.2f}"
        print(f"| {kt} | {fmt(hps)} | {ratio} | {fmt(med(f'gate {kt}', 'p50_ms'), 2)} | {fmt(med(f'gate {kt}', 'p99_ms'), 2)} | {fmt(med(f'gate {kt}', 'errors'))} |")
if any(l.startswith(("sign ", "issue ")) for l in runs):
    print("\n### CA issuance/s per key type (`ward ca serve`, SQLite; CA, CSR and issued keys all of the key type)\n")
    print("| key type | /v1/sign per s | /v1/sign p99 ms | /v1/issue per s | /v1/issue p99 ms |")
    print("|---|---:|---:|---:|---:|")
    for kt in key_types:
        print(f"| {kt} | {fmt(med(f'sign {kt}', 'rps'))} | {fmt(med(f'sign {kt}', 'p99_ms'), 2)} | {fmt(med(f'issue {kt}', 'rps'))} | {fmt(med(f'issue {kt}', 'p99_ms'), 2)} |")
PY

{
    echo
    echo "## Post-quantum identities (bench/pq.sh), $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo
    commit=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
    [[ -z $(cd "$ROOT" && git status --porcelain 2>/dev/null) ]] || commit="$commit (dirty)"
    echo "Commit $commit, profile $PROFILE; $(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //'), $(nproc) cores;" \
        "load average $(cut -d' ' -f1-3 /proc/loadavg) at the end; server on CPU $SERVER_CPU," \
        "ward-bench on CPU $LOAD_CPU; concurrency $CONCURRENCY, $REPEATS × $DURATION (+$WARMUP warm-up), medians."
    echo
    cat "$REPORT"
} | tee "$WORK/section.md"
if [[ -n $RESULTS ]]; then
    cat "$WORK/section.md" >>"$RESULTS"
    log "appended to $RESULTS"
fi
