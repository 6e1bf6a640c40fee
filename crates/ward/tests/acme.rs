//! End-to-end tests of the CA's ACME server (issue 17): a real `ward ca
//! serve`, real ACME clients nobody here wrote (lego from Debian; certbot
//! from PyPI), `pebble-challtestsrv` as the DNS server the validator and
//! lego share, and openssl as the judge of certificates and OCSP answers.
//! Hostile requests are built by hand (`acme/jws.rs`) to hit each refusal.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly
#![allow(dead_code, unused_imports)] // the shared harness serves several test binaries

#[path = "common/mod.rs"]
mod common;
#[path = "ca_server/harness/mod.rs"]
#[macro_use]
mod harness;
#[path = "revocation/server.rs"]
mod dual;

mod acme {
    pub(crate) mod certbot;
    pub(crate) mod hostile;
    pub(crate) mod jws;
    pub(crate) mod lego;
    pub(crate) mod more;
    pub(crate) mod setup;
}
