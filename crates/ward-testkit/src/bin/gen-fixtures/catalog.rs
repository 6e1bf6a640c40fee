//! The list of every fixture file, what it is for and how it must fail.
//!
//! `fixtures/README.md` is rendered from this list, and the generator refuses
//! to finish unless every listed file was written, so the README cannot drift
//! from what is on disk.

use std::fmt::Write as _;

/// One fixture: its files and what a test should expect of it.
pub(crate) struct Fixture {
    /// The files, certificates first.
    pub(crate) files: &'static [&'static str],
    /// What it is.
    pub(crate) what: &'static str,
    /// How a correct verifier must treat it.
    pub(crate) expect: &'static str,
}

/// A titled group of fixtures.
pub(crate) struct Section {
    /// Heading in the README.
    pub(crate) title: &'static str,
    /// The fixtures, in README order.
    pub(crate) fixtures: &'static [Fixture],
}

/// Every fixture the generator and `gen-legacy.sh` write.
pub(crate) const CATALOG: &[Section] = &[
    Section {
        title: "Certificate authorities",
        fixtures: &[
            Fixture {
                files: &["root.crt", "root.key"],
                what: "Root CA `O=example.org, CN=example.org Root CA`, ECDSA P-256, pathLen 1. The one trust anchor.",
                expect: "Trust it.",
            },
            Fixture {
                files: &["intermediate.crt", "intermediate.key"],
                what: "Intermediate CA `O=example.org, CN=example.org Intermediate CA`, RSA 2048 (so `gen-legacy.sh` can make a `sha1WithRSAEncryption` signature), pathLen 0. Signs every leaf below except `imposter`.",
                expect: "Valid under `root.crt`.",
            },
            Fixture {
                files: &["other-root.crt"],
                what: "A second root with exactly the same subject as `root.crt` but another key. Its intermediate (same subject as `intermediate.crt`) is the second certificate of `imposter.crt`.",
                expect: "Never trusted by anything that trusts `root.crt` alone.",
            },
        ],
    },
    Section {
        title: "Good leaves",
        fixtures: &[
            Fixture {
                files: &["server.crt", "server.key"],
                what: "Server leaf: `spiffe://example.org/server`, DNS `localhost`, IP `127.0.0.1`; EKU serverAuth only.",
                expect: "Valid as a server; wrong EKU as a client.",
            },
            Fixture {
                files: &["client.crt", "client.key"],
                what: "Client leaf: `spiffe://example.org/client`, no DNS or IP; EKU clientAuth only.",
                expect: "Valid as a client; wrong EKU as a server.",
            },
            Fixture {
                files: &["peer.crt", "peer.key"],
                what: "Peer leaf (like a SPIRE X509-SVID): `spiffe://example.org/peer`, DNS `localhost`, IP `127.0.0.1`; EKU serverAuth and clientAuth.",
                expect: "Valid as a server and as a client.",
            },
        ],
    },
    Section {
        title: "Hostile leaves",
        fixtures: &[
            Fixture {
                files: &["expired.crt", "expired.key"],
                what: "Valid from 2020-12-31T23:59:30Z to 2021-01-02T00:00:00Z.",
                expect: "Expired.",
            },
            Fixture {
                files: &["not-yet-valid.crt", "not-yet-valid.key"],
                what: "Valid from 2099-12-31T23:59:30Z to 2101-01-01T00:00:00Z.",
                expect: "Not yet valid.",
            },
            Fixture {
                files: &["server-only.crt", "server-only.key"],
                what: "EKU serverAuth only, meant to be presented as a client certificate.",
                expect: "Wrong EKU when used as a client (valid as a server).",
            },
            Fixture {
                files: &["no-eku.crt", "no-eku.key"],
                what: "No extendedKeyUsage extension at all (built with rcgen directly: ward-pki always writes one). OpenSSL and webpki's plain usage checks accept it for any purpose.",
                expect: "Wrong EKU for both purposes: Ward requires the EKU to be present.",
            },
            Fixture {
                files: &["imposter.crt", "imposter.key"],
                what: "Claims the server's names (`spiffe://example.org/server`, `localhost`, `127.0.0.1`), EKU serverAuth and clientAuth, signed by the imposter intermediate, which is sent along. Every issuer name matches the real hierarchy; no key does.",
                expect: "Unknown issuer under `root.crt` (webpki reaches the signature check and fails it; OpenSSL stops earlier, as the key identifiers differ); valid under `other-root.crt`.",
            },
            Fixture {
                files: &["missing-intermediate.crt", "missing-intermediate.key"],
                what: "A valid peer leaf, but the file holds the leaf only.",
                expect: "Unknown issuer when only `root.crt` is trusted.",
            },
            Fixture {
                files: &["ca-leaf.crt", "ca-leaf.key"],
                what: "CA:true (with keyCertSign) used as an end-entity certificate, subject `CN=ca-leaf` (built with rcgen directly: ward-pki never makes such a leaf). OpenSSL's `verify` accepts it.",
                expect: "Rejected: a CA is not an end entity.",
            },
            Fixture {
                files: &["two-uris.crt", "two-uris.key"],
                what: "Two URI SANs, `spiffe://example.org/two-uris/a` and `spiffe://example.org/two-uris/b` (built with rcgen directly). Otherwise a valid peer leaf.",
                expect: "Path valid, but not an X509-SVID: an SVID has exactly one URI SAN.",
            },
            Fixture {
                files: &["wrong-td.crt", "wrong-td.key"],
                what: "A valid peer leaf from the real intermediate whose SPIFFE ID is in another trust domain: `spiffe://evil.example/x`.",
                expect: "Path valid; SPIFFE ID mismatch for any `spiffe://example.org/...` policy.",
            },
        ],
    },
    Section {
        title: "Legacy leaves (made by `gen-legacy.sh` with the openssl command)",
        fixtures: &[
            Fixture {
                files: &["rsa-1024.crt", "rsa-1024.key"],
                what: "A peer leaf with a 1024-bit RSA key, signed by the real intermediate with SHA-256. Valid from generation time until about 2119-12-30.",
                expect: "Rejected as a weak key (OpenSSL from `-auth_level 2`; ward-pki's `verify` does not check this yet).",
            },
            Fixture {
                files: &["sha1.crt", "sha1.key"],
                what: "A peer leaf (ECDSA P-256 key) signed by the real intermediate with `sha1WithRSAEncryption`. Valid from generation time until about 2119-12-30.",
                expect: "Rejected: SHA-1 signatures are not supported (OpenSSL from `-auth_level 1`).",
            },
        ],
    },
];

/// Every file in the catalog, in README order.
pub(crate) fn files() -> impl Iterator<Item = &'static str> {
    CATALOG
        .iter()
        .flat_map(|s| s.fixtures)
        .flat_map(|f| f.files.iter().copied())
}

/// The text of `fixtures/README.md`.
pub(crate) fn readme() -> String {
    let mut out = String::from(
        "# Ward test fixtures\n\
         \n\
         Generated by `cargo run -p ward-testkit --bin gen-fixtures` (which runs\n\
         `gen-legacy.sh` at the end; that script needs the `openssl` command and\n\
         GNU `date`). Do not edit by hand: this README is rendered from\n\
         `src/bin/gen-fixtures/catalog.rs`. The keys are public test keys.\n\
         \n\
         Every key is PKCS#8 PEM. Every leaf `X.crt` holds the leaf and then the\n\
         intermediate that signed it (except `missing-intermediate.crt`). Unless\n\
         noted, a leaf has an ECDSA P-256 key, an empty subject (so a critical SAN\n\
         extension), the SANs `spiffe://example.org/NAME`, DNS `localhost` and IP\n\
         `127.0.0.1`, CA:false, keyUsage digitalSignature, and EKU serverAuth and\n\
         clientAuth.\n\
         \n\
         The CAs and the good leaves are valid from 2020-01-01T00:00:00Z to\n\
         2120-01-01T00:00:00Z. Each hostile leaf differs from a good one in one\n\
         way only, so a test that expects one failure sees that failure.\n\
         \n\
         `tests/fixtures.rs` checks each claim below with `openssl verify`,\n\
         `openssl x509 -text` and ward-pki's `verify`.\n",
    );
    for section in CATALOG {
        let _ = write!(
            out,
            "\n## {}\n\n| Files | What it is | Expect |\n| --- | --- | --- |\n",
            section.title
        );
        for f in section.fixtures {
            let files: Vec<String> = f.files.iter().map(|n| format!("`{n}`")).collect();
            let _ = writeln!(out, "| {} | {} | {} |", files.join(", "), f.what, f.expect);
        }
    }
    out.push_str(
        "\n`gen-legacy.sh` is committed here too: it is the generator of the legacy\n\
         leaves, not a fixture.\n",
    );
    out
}
