#!/usr/bin/env python3
"""The summary section bench/run-all.sh puts above the detailed tables.

Usage: summary.py GATE_RUNS.jsonl [ISSUANCE_RUNS.jsonl]
Context (date, commit, CPU, load average, mode) comes from the environment.
Prints markdown: a header, one row per Ward/peer pair with the ratio, and
issue 7's absolute targets with what was measured.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gate_table  # noqa: E402


def issuance_runs(path):
    runs = {}
    for line in open(path):
        r = json.loads(line)
        runs.setdefault(r["label"], []).append(r["result"])
    return runs


def main():
    e = os.environ
    gate = gate_table.load(sys.argv[1])
    iss = issuance_runs(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else {}
    med = gate_table.med

    print(f"## Full comparison (`bench/run-all.sh{' --quick' if e.get('QUICK') == '1' else ''}`), "
          f"{e['DATE_UTC']}, commit {e['COMMIT']}")
    print()
    print(f"{e['CPU_MODEL']}, {e['CORES']} cores; every server pinned to core {e['SERVER_CPU']}, "
          f"the load generator to core {e['LOAD_CPU']}; load average {e['LOADAVG']} at start, "
          f"{e['LOADAVG_END']} at end. Ward and each peer alternate run by run (A B A B); "
          f"medians of {e['REPEATS']} runs. Ratios read \"times better for Ward\" (rates: "
          f"Ward ÷ peer; CPU and memory: peer ÷ Ward). Details below.")
    print()
    print("| comparison | Ward | peer | ratio (× better for Ward) | target | met |")
    print("|---|---:|---:|---:|---:|---|")
    rows = list(gate_table.pairs(gate))
    for route, label in (("/v1/sign", "sqlite-sign"), ("/v1/issue", "sqlite-issue")):
        if label in iss and "cfssl-sign" in iss:
            w, c = med(iss[label], "rps"), med(iss["cfssl-sign"], "rps")
            rows.append((f"CA issuance certs/s, Ward {route} (SQLite, durable) ÷ cfssl /sign (no storage)",
                         w, c, w / max(c, 1e-9), 2.2 if route == "/v1/sign" else None, "/s"))
    for what, ward, peer, ratio, target, unit in rows:
        fmt = (lambda x: f"{x:.1f} {unit}") if unit == "KiB" else (lambda x: f"{x:.0f}{unit}")
        met = ("yes" if ratio >= target else "no") if target else ""
        print(f"| {what} | {fmt(ward)} | {fmt(peer)} | {ratio:.2f}× | "
              f"{f'≥ {target:g}×' if target else ''} | {met} |")
    print()

    targets = []
    c = gate_table.ceiling(gate)
    if c and "ward-hs" in gate:
        per_core = 1e6 / med(gate["ward-hs"], "proxy_us")
        pct = 100 * per_core / c["ceiling_hps"]
        targets.append(("gate full handshakes per core-second ÷ public-key ceiling",
                        f"{per_core:.0f}/s ÷ {c['ceiling_hps']:.0f}/s = {pct:.0f} %", "≥ 55 %", pct >= 55))
    if "ward-lat" in gate and "direct-lat" in gate:
        d99 = med(gate["ward-lat"], "p99_ms") - med(gate["direct-lat"], "p99_ms")
        d50 = med(gate["ward-lat"], "p50_ms") - med(gate["direct-lat"], "p50_ms")
        targets.append((f"added keep-alive latency at {e.get('RATE', '1000')}/s, gate − direct",
                        f"p50 {d50:+.3f} ms, p99 {d99:+.3f} ms", "p99 ≤ 1 ms", d99 <= 1.0))
    for v, what in (("hs", "after the handshake"), ("req", "after one request")):
        rs = gate.get(f"ward-mem-{v}")
        if rs:
            kib = med(rs, "per_conn_kib")
            held = rs[0].get("established", 0)
            targets.append((f"gate memory per idle mTLS connection ({what}, {held} held)",
                            f"{kib:.1f} KiB", "≤ 16 KiB", kib <= 16))
    if targets:
        print("| target | measured | goal | met |")
        print("|---|---|---|---|")
        for what, measured, goal, ok in targets:
            print(f"| {what} | {measured} | {goal} | {'yes' if ok else 'no'} |")
        print()


if __name__ == "__main__":
    main()
