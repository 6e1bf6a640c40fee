#!/usr/bin/env python3
"""Markdown tables for bench/gate.sh, from its raw JSON lines.

Usage: gate_table.py RUNS.jsonl   (context from the environment, see gate.sh)

Also imported by bench/summary.py for the Ward/peer pairs of a full run
(`load`, `pairs`), so both read the numbers the same way.
"""

import json
import os
import statistics
import sys


def load(path):
    """Runs by label (lists of result dicts, with CPU shares added)."""
    runs = {}
    for line in open(path):
        r = json.loads(line)
        res = dict(r["result"])
        if "cpu" in r:
            cpu = r["cpu"]
            w = cpu["window_s"]
            direct = r["label"].startswith("direct-")
            res["proxy_pct"] = 100 * cpu["proxy_cpu_s"] / w
            res["up_pct"] = 0.0 if direct else 100 * cpu["upstream_cpu_s"] / w
            res["load_pct"] = 100 * cpu["load_cpu_s"] / w
            # CPU per successful request, from the CPU rate and the request rate.
            res["proxy_us"] = 1e6 * (cpu["proxy_cpu_s"] / w) / max(res["rps"], 1e-9)
        if "rss_before_kb" in r:
            res["rss_before_kb"] = r["rss_before_kb"]
            res["rss_after_kb"] = r["rss_after_kb"]
            held = max(res.get("established", 0), 1)
            res["per_conn_kib"] = (r["rss_after_kb"] - r["rss_before_kb"]) / held
        runs.setdefault(r["label"], []).append(res)
    return runs


def med(rs, k):
    return statistics.median(r.get(k, 0) for r in rs)


def ceiling(runs):
    c = runs.get("ceiling")
    return c[0] if c else None


def pairs(runs):
    """Ward against each peer: (what, ward, peer, ratio, target) rows.

    `ratio` is Ward ÷ peer for rates (bigger is better for Ward) and
    peer ÷ Ward for CPU per request and memory (also: bigger is better for
    Ward), so every ratio reads "how many times better Ward is"."""
    out = []
    for peer in ("before", "nocache", "bare", "nginx", "haproxy"):
        name = {"before": "Ward before", "nocache": "Ward without chain cache",
                "bare": "bare rustls (proxies nothing)",
                "nginx": "nginx", "haproxy": "HAProxy"}[peer]
        for wl, what, target in (("hs", "full mTLS handshakes/s", 1.1 if peer == "bare" else 4.5),
                                 ("rs", "resumed mTLS handshakes/s", None),
                                 ("ka", "keep-alive requests/s", 1.5 if peer == "haproxy" else None)):
            if peer in ("before", "nocache") or (peer == "bare" and wl != "hs"):
                target = None
            a, b = runs.get(f"ward-{wl}"), runs.get(f"{peer}-{wl}")
            if not a or not b:
                continue
            out.append((f"{what}, Ward ÷ {name}", med(a, "rps"), med(b, "rps"),
                        med(a, "rps") / max(med(b, "rps"), 1e-9), target, "/s"))
            if wl == "hs":
                out.append((f"full handshakes per core-second of proxy CPU, Ward ÷ {name}",
                            1e6 / med(a, "proxy_us"), 1e6 / med(b, "proxy_us"),
                            med(b, "proxy_us") / max(med(a, "proxy_us"), 1e-9), target, "/s"))
        for v in ("hs", "req"):
            a, b = runs.get(f"ward-mem-{v}"), runs.get(f"{peer}-mem-{v}")
            if a and b:
                wa, pb = med(a, "per_conn_kib"), med(b, "per_conn_kib")
                out.append((f"memory per idle mTLS connection ({'after one request' if v == 'req' else 'after the handshake'}), "
                            f"{name} ÷ Ward", wa, pb, pb / max(wa, 1e-9), None, "KiB"))
    return out


def main():
    e = os.environ
    runs = load(sys.argv[1])
    kx = e["KX_GROUP"]
    servers = {
        "ward": "Ward gate",
        "before": "Ward gate (before: WARD_BASE)",
        "nocache": "Ward gate, chain cache off",
        "bare": "bare rustls + aws-lc-rs (no proxying)",
        "nginx": f"nginx {e.get('NGINX_VERSION', '')}".strip(),
        "haproxy": f"HAProxy {e.get('HAPROXY_VERSION', '')}".strip(),
        "direct": "direct (plain HTTP)",
    }
    work = {
        "hs": "full mTLS handshakes",
        "rs": "resumed mTLS handshakes",
        "ka": f"keep-alive, c={e['CONCURRENCY']}",
        "lat": f"keep-alive at {e['RATE']}/s",
    }
    print(f"### Gate, {e['DATE_UTC']}, commit {e['COMMIT']}")
    print()
    print(f"{e['CPU_MODEL']}, {e['CORES']} cores; proxy pinned to core {e['SERVER_CPU']}, "
          f"ward-bench to core {e['LOAD_CPU']}; upstream (`ward-bench upstream`, 1 thread) on the "
          f"proxy's core for keep-alive and latency rows, on the load's core for handshake rows; "
          f"TLS 1.3, ECDSA P-256, client chain leaf + intermediate; "
          f"client {'skips the server chain check' if e['SKIP_CHAIN_VERIFY'] == '1' else 'verifies the server chain'}; "
          f"{e['DURATION']} windows after {e['WARMUP']} warmup; median of {e['REPEATS']} interleaved runs; "
          f"load average {e['LOADAVG']} at start, {e['LOADAVG_END']} at end.{e.get('NOTES', '')}")
    print()
    c = ceiling(runs)
    if c:
        print(f"Public-key ceiling on core {e['SERVER_CPU']} (`ward-bench ceiling`, aws-lc through "
              f"Ward's provider, thread CPU time): X25519 {c['x25519_us']:.1f} µs, ECDSA P-256 sign "
              f"{c['ecdsa_p256_sign_us']:.1f} µs, verify {c['ecdsa_p256_verify_us']:.1f} µs; "
              f"1 X25519 + 1 sign + 3 verifies = {c['handshake_us']:.1f} µs → "
              f"**{c['ceiling_hps']:.0f} full mTLS handshakes/s per core**.")
        print()
    print("| workload | server | kx group | req/s | resumed % | p50 ms | p90 ms | p99 ms | max ms | errors "
          "| proxy CPU % | proxy µs/req | upstream CPU % | load CPU % | req/s per run |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    order = [(srv, wl, suffix) for wl in ("hs", "rs", "ka", "lat") for suffix in ("", "-pq")
             for srv in ("ward", "before", "nocache", "bare", "nginx", "haproxy", "direct")]
    for srv, wl, suffix in order:
        rs = runs.get(f"{srv}-{wl}{suffix}")
        if not rs:
            continue
        group = "–" if srv == "direct" else ("default (X25519MLKEM768)" if suffix else kx)
        per_run = ", ".join(f"{r['rps']:.0f}" for r in rs)
        errors = sum(r["errors"] for r in rs)
        hs = sum(r.get("handshakes", 0) for r in rs)
        resumed = f"{100 * sum(r.get('resumed', 0) for r in rs) / hs:.0f}" if hs and wl in ("hs", "rs") else "–"
        print(f"| {work[wl]} | {servers[srv]} | {group} | {med(rs, 'rps'):.0f} | {resumed} | "
              f"{med(rs, 'p50_ms'):.3f} | {med(rs, 'p90_ms'):.3f} | {med(rs, 'p99_ms'):.3f} | "
              f"{med(rs, 'max_ms'):.2f} | {errors} | {med(rs, 'proxy_pct'):.0f} | "
              f"{med(rs, 'proxy_us'):.0f} | {med(rs, 'up_pct'):.0f} | {med(rs, 'load_pct'):.0f} | "
              f"{per_run} |")
    mem = [(label, rs[0]) for label, rs in runs.items() if "-mem-" in label]
    if mem:
        print()
        print("| idle mTLS connections | server | held | open at end | setup handshakes/s "
              "| RSS before MiB | RSS after MiB | KiB per connection |")
        print("|---|---|---:|---:|---:|---:|---:|---:|")
        for v, what in (("hs", "after the handshake"), ("req", "after one request")):
            for srv in ("ward", "before", "bare", "nginx", "haproxy"):
                r = dict(mem).get(f"{srv}-mem-{v}")
                if not r:
                    continue
                print(f"| {what} | {servers[srv]} | {r['established']} | {r['open_at_end']} | "
                      f"{r['setup_hps']:.0f} | {r['rss_before_kb'] / 1024:.1f} | "
                      f"{r['rss_after_kb'] / 1024:.1f} | {r['per_conn_kib']:.1f} |")
    print()
    if c and "ward-hs" in runs:
        per_core = 1e6 / med(runs["ward-hs"], "proxy_us")
        print(f"- Gate full handshakes per second of gate CPU (1e6 ÷ proxy µs/req): {per_core:.0f}/s, "
              f"{100 * per_core / c['ceiling_hps']:.0f} % of the measured ceiling of "
              f"{c['ceiling_hps']:.0f}/s (target ≥ 55 %).")
    for what, ward, peer, ratio, target, unit in pairs(runs):
        goal = f" (target ≥ {target:g}×)" if target else ""
        print(f"- {what}: {ratio:.2f}× ({ward:.1f} vs {peer:.1f} {unit}){goal}.")
    if "ward-ka" in runs and "direct-ka" in runs:
        r = med(runs["ward-ka"], "rps") / max(med(runs["direct-ka"], "rps"), 1e-9)
        print(f"- Keep-alive through the gate ÷ direct: {r:.2f}×.")
    if "ward-lat" in runs and "direct-lat" in runs:
        d50 = med(runs["ward-lat"], "p50_ms") - med(runs["direct-lat"], "p50_ms")
        d99 = med(runs["ward-lat"], "p99_ms") - med(runs["direct-lat"], "p99_ms")
        print(f"- Added latency at {e['RATE']}/s (gate − direct): p50 {d50:+.3f} ms, p99 {d99:+.3f} ms "
              f"(target p99 ≤ 1 ms).")
    for v in ("hs", "req"):
        rs = runs.get(f"ward-mem-{v}")
        if rs:
            print(f"- Gate memory per idle mTLS connection ({'after one request' if v == 'req' else 'after the handshake'}): "
          f"{med(rs, 'per_conn_kib'):.1f} KiB (target ≤ 16 KiB).")


if __name__ == "__main__":
    main()
