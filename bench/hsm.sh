#!/usr/bin/env bash
# Issuance with the CA keys in a PKCS#11 token (SoftHSM2) against the same
# CA with key files: `/v1/sign` certificates per second, server pinned to
# one core and ward-bench to the other, REPEATS interleaved runs, medians.
# Prints a markdown table and appends it to bench/RESULTS.md.
#
# Environment (all optional):
#   CONCURRENCY=32 DURATION=10s WARMUP=2s REPEATS=3 KEY_TYPE=ecdsa-p256
#   SERVER_CPU=0 LOAD_CPU=1
#   WARD_BIN=path BENCH_BIN=path   binaries to use (default: release builds)
#   BUILD=0                        do not build them
#   BUILD_NOTE=text                written into the table ("debug build", …)
#   RESULTS=path                   where to append the table ("" = don't)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONCURRENCY=${CONCURRENCY:-32}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
REPEATS=${REPEATS:-3}
KEY_TYPE=${KEY_TYPE:-ecdsa-p256}
SERVER_CPU=${SERVER_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
BUILD=${BUILD:-1}
BUILD_NOTE=${BUILD_NOTE:-release build}
RESULTS=${RESULTS-$ROOT/bench/RESULTS.md}
MODULE=${MODULE:-/usr/lib/softhsm/libsofthsm2.so}

log() { printf 'hsm.sh: %s\n' "$*" >&2; }

[[ -e $MODULE ]] || { log "$MODULE is missing: apt-get install softhsm2"; exit 1; }
if [[ $BUILD == 1 ]]; then
    log "building ward and ward-bench (release)"
    (cd "$ROOT" && cargo build --release -q -p ward -p ward-bench)
fi
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
WARD=${WARD_BIN:-$TARGET_DIR/release/ward}
BENCH=${BENCH_BIN:-$TARGET_DIR/release/ward-bench}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ward-hsm-bench.XXXXXX")
SERVER_PID=""
cleanup() {
    if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# A token of this run's own.
mkdir -p "$WORK/tokens"
export SOFTHSM2_CONF=$WORK/softhsm2.conf
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
    "$WORK/tokens" >"$SOFTHSM2_CONF"
PIN=$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')
printf '%s\n' "$PIN" >"$WORK/pin"
softhsm2-util --init-token --free --label ward-bench --pin "$PIN" --so-pin "$PIN$PIN" >/dev/null

make_ca() { # name [init flags]
    local ca=$WORK/$1
    shift
    "$WARD" ca init --dir "$ca" --trust-domain example.org --key-type "$KEY_TYPE" "$@" >/dev/null
    sed -i -E 's/^(per_(address|token)_(per_second|burst)) = .*/\1 = 100000000/' "$ca/ca.toml"
    "$WARD" token create --dir "$ca" --spiffe-id spiffe://example.org/bench \
        --uses 0 --expires-in 2h 2>/dev/null | head -n1 >"$ca.token"
}
make_ca files
make_ca token --pkcs11-module "$MODULE" --pkcs11-token ward-bench --pin-file "$WORK/pin"

RAW=$WORK/runs.jsonl
: >"$RAW"
run_one() { # name rep
    local name=$1 rep=$2 err=$WORK/serve.$1.err url="" i line
    : >"$err"
    taskset -c "$SERVER_CPU" "$WARD" ca serve --dir "$WORK/$name" --listen 127.0.0.1:0 \
        >/dev/null 2>"$err" &
    SERVER_PID=$!
    for ((i = 0; i < 400; i++)); do
        url=$(grep -o 'listening on https://[^ ]*' "$err" | head -n1 | sed 's/^listening on //' || true)
        [[ -n $url ]] && break
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    [[ -n $url ]] || { log "ward ca serve ($name) did not start:"; cat "$err" >&2; exit 1; }
    line=$(taskset -c "$LOAD_CPU" "$BENCH" issue --url "$url" --ca-bundle "$WORK/$name/root.crt" \
        --token-file "$WORK/$name.token" --mode sign --concurrency "$CONCURRENCY" \
        --duration "$DURATION" --warmup "$WARMUP")
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
    log "$name #$rep: $line"
    printf '{"label":"%s","result":%s}\n' "$name" "$line" >>"$RAW"
}

LOADAVG=$(cut -d' ' -f1-3 /proc/loadavg)
for ((rep = 1; rep <= REPEATS; rep++)); do
    run_one files "$rep"
    run_one token "$rep"
done

TABLE=$(
    DATE_UTC=$(date -u +%Y-%m-%dT%H:%MZ) COMMIT=$(git -C "$ROOT" rev-parse --short HEAD) \
        CPU_MODEL=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//') \
        CORES=$(nproc --all) LOADAVG=$LOADAVG BUILD_NOTE=$BUILD_NOTE KEY_TYPE=$KEY_TYPE \
        CONCURRENCY=$CONCURRENCY DURATION=$DURATION REPEATS=$REPEATS \
        SOFTHSM=$(dpkg-query -W -f '${Version}' softhsm2 2>/dev/null || echo unknown) \
        python3 - "$RAW" <<'EOF'
import json, os, statistics, sys
e = os.environ
runs = {}
for line in open(sys.argv[1]):
    r = json.loads(line)
    runs.setdefault(r["label"], []).append(r["result"])
med = lambda rs, k: statistics.median(r[k] for r in rs)
print(f"### CA keys in a PKCS#11 token vs key files, {e['DATE_UTC']}, commit {e['COMMIT']}")
print()
print(f"{e['CPU_MODEL']}, {e['CORES']} cores; {e['BUILD_NOTE']}; SoftHSM2 {e['SOFTHSM']}; "
      f"{e['KEY_TYPE']} CA keys; `/v1/sign` on SQLite, concurrency {e['CONCURRENCY']}, "
      f"{e['DURATION']} windows, median of {e['REPEATS']} interleaved runs; "
      f"load average at start {e['LOADAVG']}.")
print()
print("| CA keys | certs/s | p50 ms | p99 ms | errors | certs/s per run |")
print("|---|---:|---:|---:|---:|---|")
for label, name in (("files", "key files"), ("token", "SoftHSM2 token (PKCS#11)")):
    rs = runs[label]
    per_run = ", ".join("%.0f" % r["rps"] for r in rs)
    print(f"| {name} | {med(rs, 'rps'):.0f} | {med(rs, 'p50_ms'):.2f} | {med(rs, 'p99_ms'):.2f} | "
          f"{sum(r['errors'] for r in rs)} | {per_run} |")
print()
print(f"Token ÷ files: {med(runs['token'], 'rps') / max(med(runs['files'], 'rps'), 1e-9):.2f}×")
EOF
)
printf '%s\n' "$TABLE"
if [[ -n $RESULTS ]]; then
    printf '\n%s\n' "$TABLE" >>"$RESULTS"
fi
