#!/usr/bin/env bash
# Web console at scale (issue 21): with ROWS certificates (default
# 1,000,000) in the CA's store, how long the server takes to answer the
# overview and the searches. Loads the rows straight into the store (SQLite
# with the sqlite3 shell; PostgreSQL with psql when BACKEND=postgres), starts
# `ward ca serve` pinned to core 0, signs in with `ward ca console-login`,
# then asks each page REPEATS times with curl pinned to core 1 and prints the
# median and maximum of the server's time per page: curl's time from the
# request sent to the first byte back (time_starttransfer - time_pretransfer,
# the TLS handshake excluded), and for the overview also the database time
# the page reports in its `Server-Timing` header.
#
# The rows imitate a month of a busy CA: one certificate every ~2.6 s, most
# living 1 h (so most are expired), every 50th 24 h, 1 % revoked, 1 in 1000
# issued from one token; SPIFFE IDs spread over 100 namespaces x 5000
# services, and one DNS name each, svc-S.ns-N.example.test (the digits of S
# and N reversed, so the loader can write the index's reversed form
# directly); profiles `peer`, `server` (offline) and `default` (ACME).
# Bounded: ROWS rows, REPEATS requests per page, then it stops and
# removes everything it made.
#
# Environment (all optional):
#   ROWS=1000000   certificates to load
#   REPEATS=21     requests per page
#   BACKEND=sqlite sqlite or postgres (needs WARD_TEST_DATABASE_URL; a
#                  fresh database is created and dropped)
#   WARD=…         the ward binary (default: target/release/ward, built if missing)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROWS=${ROWS:-1000000}
REPEATS=${REPEATS:-21}
BACKEND=${BACKEND:-sqlite}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
WARD=${WARD:-$TARGET/release/ward}
if [ ! -x "$WARD" ]; then
    (cd "$ROOT" && cargo build --release -p ward)
fi
for tool in curl taskset; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 2; }
done

WORK=$(mktemp -d)
SERVER_PID=
DB_NAME=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    if [ -n "$DB_NAME" ]; then psql -q "$WARD_TEST_DATABASE_URL" -c "DROP DATABASE IF EXISTS $DB_NAME" >/dev/null 2>&1 || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

CA=$WORK/ca
db_args=()
if [ "$BACKEND" = postgres ]; then
    : "${WARD_TEST_DATABASE_URL:?BACKEND=postgres needs WARD_TEST_DATABASE_URL}"
    DB_NAME=ward_console_bench_$$
    psql -q "$WARD_TEST_DATABASE_URL" -c "CREATE DATABASE $DB_NAME" >/dev/null
    DB_URL="${WARD_TEST_DATABASE_URL%/*}/$DB_NAME"
    db_args=(--database "$DB_URL")
fi
"$WARD" ca init --dir "$CA" --trust-domain example.org "${db_args[@]}" >/dev/null
TOKEN_ID=$("$WARD" token create --dir "$CA" --spiffe-id spiffe://example.org/ns/7/svc/7 \
    --uses 0 --expires-in 1h --format json | sed -n 's/.*"id": *"\(tok_[0-9a-f]*\)".*/\1/p')
[ -n "$TOKEN_ID" ] || { echo "token create printed no id" >&2; exit 1; }
NOW_US=$(( $(date +%s) * 1000000 ))
MONTH_US=$(( 30 * 86400 * 1000000 ))

echo "loading $ROWS certificates into $BACKEND…" >&2
load_started=$(date +%s)
if [ "$BACKEND" = sqlite ]; then
    sqlite3 "$CA/ward.db" <<SQL
PRAGMA synchronous = OFF;
BEGIN;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $ROWS),
r AS (SELECT i, $NOW_US - (i * ($MONTH_US / $ROWS)) AS t FROM n)
INSERT INTO certificates (serial, spiffe_id, token_id, not_before, not_after, der, fingerprint,
    issued_at, renewed_from, revoked_at, revocation_reason, origin, profile)
SELECT printf('7%07x%08x', i, abs(random()) % 4294967296),
       'spiffe://example.org/ns/' || (i % 100) || '/svc/' || (i % 5000),
       CASE WHEN i % 1000 = 0 THEN '$TOKEN_ID' END,
       t, t + CASE WHEN i % 50 = 0 THEN 86400000000 ELSE 3600000000 END,
       randomblob(450), lower(hex(randomblob(32))), t, NULL,
       CASE WHEN i % 100 = 1 THEN t + 60000000 END,
       CASE WHEN i % 100 = 1 THEN 1 END,
       CASE WHEN i % 1000 = 0 THEN 'token' WHEN i % 10 = 3 THEN 'offline' WHEN i % 10 = 5 THEN 'acme'
            WHEN i % 2 = 0 THEN 'renewal' ELSE 'token' END,
       CASE WHEN i % 1000 = 0 THEN 'peer' WHEN i % 10 = 3 THEN 'server' WHEN i % 10 = 5 THEN 'default'
            ELSE 'peer' END
FROM r;
WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $ROWS)
INSERT INTO cert_dns (name_rev, issued_at, serial)
SELECT 'tset.elpmaxe.' || (i % 100) || '-sn.' || (i % 5000) || '-cvs', c.issued_at, c.serial
FROM n JOIN certificates c ON c.serial >= printf('7%07x', i) AND c.serial < printf('7%07x', i + 1);
-- Loaded with its names: nothing for the CA to backfill.
DELETE FROM cert_dns_backfill;
COMMIT;
ANALYZE;
SQL
else
    psql -q "$DB_URL" <<SQL
INSERT INTO certificates (serial, spiffe_id, token_id, not_before, not_after, der, fingerprint,
    issued_at, renewed_from, revoked_at, revocation_reason, origin, profile)
SELECT '7' || lpad(to_hex(i), 7, '0') || lpad(to_hex((random() * 4294967295)::bigint), 8, '0'),
       'spiffe://example.org/ns/' || (i % 100) || '/svc/' || (i % 5000),
       CASE WHEN i % 1000 = 0 THEN '$TOKEN_ID' END,
       t, t + CASE WHEN i % 50 = 0 THEN interval '24 hours' ELSE interval '1 hour' END,
       decode(repeat(md5(i::text), 28), 'hex'), md5(i::text) || md5((i + 1)::text), t, NULL,
       CASE WHEN i % 100 = 1 THEN t + interval '1 minute' END,
       CASE WHEN i % 100 = 1 THEN 1 END,
       CASE WHEN i % 1000 = 0 THEN 'token' WHEN i % 10 = 3 THEN 'offline' WHEN i % 10 = 5 THEN 'acme'
            WHEN i % 2 = 0 THEN 'renewal' ELSE 'token' END,
       CASE WHEN i % 1000 = 0 THEN 'peer' WHEN i % 10 = 3 THEN 'server' WHEN i % 10 = 5 THEN 'default'
            ELSE 'peer' END
FROM (SELECT i, to_timestamp(($NOW_US - i * ($MONTH_US / $ROWS)) / 1e6) AS t
      FROM generate_series(1, $ROWS) AS i) AS r;
INSERT INTO cert_dns (name_rev, issued_at, serial)
SELECT 'tset.elpmaxe.' || (i % 100) || '-sn.' || (i % 5000) || '-cvs', c.issued_at, c.serial
FROM generate_series(1, $ROWS) AS i
JOIN certificates c ON c.serial >= '7' || lpad(to_hex(i), 7, '0') AND c.serial < '7' || lpad(to_hex(i + 1), 7, '0');
-- Loaded with its names: nothing for the CA to backfill.
DELETE FROM cert_dns_backfill;
ANALYZE certificates;
ANALYZE cert_dns;
SQL
fi
echo "loaded in $(( $(date +%s) - load_started )) s" >&2

taskset -c 0 "$WARD" ca serve --dir "$CA" --listen 127.0.0.1:0 --audit-log "$WORK/audit.log" \
    "${db_args[@]}" 2>"$WORK/serve.log" &
SERVER_PID=$!
for _ in $(seq 1 600); do
    grep -q 'listening on https://' "$WORK/serve.log" && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
    sleep 0.1
done
ADDR=$(sed -n 's/^ward ca: listening on https:\/\/\(.*\)$/\1/p' "$WORK/serve.log")
[ -n "$ADDR" ] || { echo "the CA did not start" >&2; cat "$WORK/serve.log" >&2; exit 1; }
BASE=https://$ADDR
LINK=$("$WARD" ca console-login --dir "$CA" --url "$BASE" "${db_args[@]}" 2>/dev/null)
COOKIE=$(curl -sS -o /dev/null -D - --cacert "$CA/root.crt" --data-urlencode "token=${LINK#*token=}" \
    "$BASE/console/login" | sed -n 's/^set-cookie: \([^;]*\);.*/\1/Ip' | tr -d '\r')
[ -n "$COOKIE" ] || { echo "signing in failed" >&2; exit 1; }
SERIAL=$(printf '7%07x' 424242)
SERIAL=$(curl -sS --cacert "$CA/root.crt" -H "Cookie: $COOKIE" \
    "$BASE/console/certificates?by=spiffe&q=spiffe%3A%2F%2Fexample.org%2Fns%2F42%2Fsvc%2F4242" |
    grep -o 'href="/console/certificates/7[0-9a-f]*"' | sed -n 1p | sed 's/.*certificates\/\([0-9a-f]*\)"/\1/')

median_max() { sort -n | awk '{ v[NR] = $1 } END { printf "%.1f %.1f", v[int((NR + 1) / 2)], v[NR] }'; }
measure() { # name path
    local name=$1 path=$2 times=() dbs=()
    for _ in $(seq 1 "$REPEATS"); do
        local out
        out=$(taskset -c 1 curl -sS -o /dev/null -D "$WORK/h" --cacert "$CA/root.crt" -H "Cookie: $COOKIE" \
            -w '%{http_code} %{time_pretransfer} %{time_starttransfer}' "$BASE$path")
        set -- $out
        [ "$1" = 200 ] || { echo "$name answered $1" >&2; exit 1; }
        times+=("$(awk -v a="$2" -v b="$3" 'BEGIN { printf "%.2f", (b - a) * 1000 }')")
        local db
        db=$(sed -n 's/^server-timing: db;dur=\([0-9.]*\).*/\1/Ip' "$WORK/h" | tr -d '\r')
        [ -n "$db" ] && dbs+=("$db")
    done
    local mm dbmm="–"
    mm=$(printf '%s\n' "${times[@]}" | median_max)
    if [ ${#dbs[@]} -gt 0 ]; then dbmm=$(printf '%s\n' "${dbs[@]}" | median_max); fi
    printf '| %s | `%s` | %s | %s | %s |\n' "$name" "$path" "${mm% *}" "${mm#* }" "${dbmm% *}"
}

echo
echo "### Console at $ROWS certificates, $(date -u +%Y-%m-%dT%H:%MZ), commit $(git -C "$ROOT" rev-parse --short HEAD)"
echo
echo "$(lscpu | sed -n 's/^Model name: *//p' | head -n1), $(nproc) cores; $BACKEND; server pinned to core 0, curl to core 1; median and max of $REPEATS requests; load average at start $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| page | path | server ms (median) | max ms | overview DB ms (median) |"
echo "|---|---|---:|---:|---:|"
measure overview "/console/"
measure "search: SPIFFE ID prefix (1 namespace, 10,000 matches)" "/console/certificates?by=spiffe&q=spiffe%3A%2F%2Fexample.org%2Fns%2F42%2F"
measure "search: SPIFFE ID prefix (whole trust domain)" "/console/certificates?q=spiffe%3A%2F%2Fexample.org%2F"
measure "search: serial" "/console/certificates?q=$SERIAL"
measure "search: token (1,000 matches)" "/console/certificates?q=$TOKEN_ID"
# svc-S.ns-N with S = 4242, N = 42 written reversed: 200 certificates.
# The searches must find what was loaded, not just answer 200.
for q in "svc-$(echo 4242 | rev).ns-$(echo 42 | rev).example.test" ".ns-$(echo 42 | rev).example.test" ".example.test" "$TOKEN_ID"; do
    n=$(taskset -c 1 curl -sS --cacert "$CA/root.crt" -H "Cookie: $COOKIE" "$BASE/console/certificates?q=$q" |
        grep -o 'href="/console/certificates/7[0-9a-f]*"' | wc -l)
    [ "$n" -gt 0 ] || { echo "search $q found nothing" >&2; exit 1; }
    echo "search $q: $n rows shown" >&2
done
measure "search: DNS name (200 matches)" "/console/certificates?q=svc-$(echo 4242 | rev).ns-$(echo 42 | rev).example.test"
measure "search: DNS suffix (1 namespace, 10,000 matches)" "/console/certificates?q=.ns-$(echo 42 | rev).example.test"
measure "search: DNS suffix (all 1,000,000)" "/console/certificates?q=.example.test"
measure "newest certificates" "/console/certificates"
measure "certificate page" "/console/certificates/$SERIAL"
