//! Post-quantum identities end to end (issue 23): ML-DSA hierarchies from
//! `ward ca init` / `ward cert create`, an online ML-DSA CA (`/v1/issue`
//! with `key_type`, `/v1/sign` with a CSR from the `ward-client` library,
//! CRL and OCSP signed with ML-DSA), ML-DSA TLS between library instances,
//! and an implementation nobody here wrote judging every signature: pyca
//! `cryptography` (its wheels carry an OpenSSL with ML-DSA), or `openssl`
//! when it is 3.5 or newer. Each test prints which one it used.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly
#![allow(dead_code, unused_imports, unused_macros)] // the shared harness serves several test binaries

#[path = "common/mod.rs"]
mod common;
#[path = "ca_server/harness/mod.rs"]
#[macro_use]
mod harness;

mod pq {
    pub(crate) mod independent;
    pub(crate) mod online;
}
