#!/usr/bin/env python3
"""Where a profiled server's CPU goes: crypto, kernel, or something else.

Usage: perf script -i perf.data | perf_classify.py [--top N]

Reads `perf script` output (best recorded with `--call-graph dwarf`, so
Rust frames are present) and puts every sample in one class:

- crypto: the sampled function is aws-lc (or another primitive: P-256,
  X25519, SHA, AES-GCM, HMAC/HKDF) — the work a TLS server cannot avoid;
- kernel: the sample is in the kernel (syscalls, TCP, scheduling: I/O);
- allocator/copy: malloc, free, memcpy/memmove and friends in libc,
  charged to the first Rust crate above them in the stack;
- otherwise the crate of the sampled function (rustls, hyper, tokio,
  ward_gate, …), walking up past `core`/`alloc`/`std` frames.

Prints each class's share of all samples, then the top functions outside
crypto and kernel: the candidates for removal.
"""

import re
import sys
from collections import Counter

CRYPTO = re.compile(
    r"aws_lc_0_|aws_lc_rs::|ecp_nistz256|beeu_mod|curve25519|x25519|_block_data_order|"
    r"SHA(1|256|384|512)_|sha(256|512)_|aesni|aes_(hw|nohw|gcm)|gcm_(init|gmult|ghash)|ghash|"
    r"HMAC_|hkdf|HKDF|ECDSA_|EC_|ec_GFp|bn_(mul|sqr|mod|from|to)|BN_|p256_|mlkem|MLKEM|"
    r"OPENSSL_|CRYPTO_|EVP_|evp_|fiat_|poly1305|chacha|constant_time_|value_barrier|"
    r"rand_bytes|ctr_drbg|CTR_DRBG|CBB_|CBS_|cbb_|copy_conditional|calc_wvalue|uses_prehash|"
    r"do_sigver_init|free_it")
ALLOC = re.compile(r"^(malloc|free|calloc|realloc|cfree|_int_malloc|_int_free|_int_realloc|"
                   r"unlink_chunk|malloc_consolidate|__libc_malloc|__libc_free|__libc_calloc|"
                   r"__memmove|__memcpy|__memset|memcpy|memmove|memset|__mem|tcache|"
                   r"__GI___libc)")
# Crypto samples split by primitive, first match wins.
CRYPTO_KINDS = [
    ("P-256 (ECDSA sign/verify)", re.compile(r"nistz256|p256|P256|beeu_|ecdsa|ECDSA|EC_|ec_|bn_|BN_", re.I)),
    ("X25519", re.compile(r"curve25519|x25519", re.I)),
    ("ML-KEM", re.compile(r"mlkem|kyber", re.I)),
    ("SHA-384/512 (TLS_AES_256_GCM_SHA384 key schedule, transcript)", re.compile(r"sha512|SHA384|SHA512", re.I)),
    ("SHA-256", re.compile(r"sha256|SHA256", re.I)),
    ("AES-GCM records", re.compile(r"aes|gcm|ghash", re.I)),
    ("HMAC/HKDF glue", re.compile(r"hmac|hkdf", re.I)),
]
GENERIC = ("core::", "alloc::", "std::", "<core::", "<alloc::", "<std::", "__rust", "_rust")


def crate_of(sym):
    """The crate a demangled Rust symbol belongs to, or None."""
    s = sym.lstrip("<&*")
    if s.startswith("dyn "):
        s = s[4:]
    m = re.match(r"([A-Za-z_][A-Za-z0-9_]*)::", s)
    return m.group(1) if m else None


def samples(lines):
    """Yields each sample's stack as a list of (symbol, dso), leaf first."""
    stack = []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if stack:
                yield stack
            stack = []
            continue
        if line.startswith("\t") or line.startswith(" "):
            m = re.match(r"\s*[0-9a-f]+\s+(.*?)\s+\((.*)\)\s*$", line)
            if m:
                sym = re.sub(r"\+0x[0-9a-f]+$", "", m.group(1))
                stack.append((sym, m.group(2)))
    if stack:
        yield stack


def classify(stack):
    sym, dso = stack[0]
    if "kernel" in dso or dso.startswith("[k"):
        return "kernel (syscalls, TCP, scheduling)", sym
    if CRYPTO.search(sym):
        return "crypto (aws-lc primitives)", sym
    if not ALLOC.match(sym) and "libc" in dso:
        return "libc I/O (syscall wrappers)", sym
    if ALLOC.match(sym):
        for s, _ in stack[1:]:
            if CRYPTO.search(s):
                return "crypto (aws-lc primitives)", sym
            c = crate_of(s)
            if c and not s.startswith(GENERIC) and c not in ("core", "alloc", "std"):
                return f"allocator/copy, from {c}", f"{sym} ← {s}"
        return "allocator/copy, caller unknown", sym
    for s, _ in stack:
        if CRYPTO.search(s):
            return "crypto (aws-lc primitives)", sym
        c = crate_of(s)
        if c and c not in ("core", "alloc", "std"):
            return c, s
    return "other", sym


def main():
    top = 25
    if "--top" in sys.argv:
        top = int(sys.argv[sys.argv.index("--top") + 1])
    classes, funcs, kinds = Counter(), Counter(), Counter()
    n = 0
    for stack in samples(sys.stdin):
        n += 1
        cls, fn = classify(stack)
        classes[cls] += 1
        if not cls.startswith(("crypto", "kernel", "libc I/O")):
            funcs[(cls, fn)] += 1
        if cls.startswith("crypto"):
            kind = next((k for k, rx in CRYPTO_KINDS if rx.search(fn)), f"other: {fn}")
            kinds[kind] += 1
    if n == 0:
        print("no samples")
        return
    print(f"{n} samples")
    print()
    print("| class | share |")
    print("|---|---:|")
    for cls, k in classes.most_common():
        print(f"| {cls} | {100 * k / n:.1f} % |")
    print()
    print("| crypto by primitive | share of all samples |")
    print("|---|---:|")
    for kind, k in kinds.most_common():
        print(f"| {kind} | {100 * k / n:.1f} % |")
    print()
    print("Top functions outside crypto and kernel (of all samples):")
    print()
    print("| share | class | function |")
    print("|---:|---|---|")
    for (cls, fn), k in funcs.most_common(top):
        fn = fn if len(fn) < 140 else fn[:137] + "..."
        print(f"| {100 * k / n:.1f} % | {cls} | `{fn}` |")


if __name__ == "__main__":
    main()
