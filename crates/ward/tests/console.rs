//! End-to-end tests of the CA's web console (issue 21): real `ward ca serve`
//! processes, Debian's headless Chromium through WebDriver, curl, openssl,
//! `ward agent run` and lego as clients and judges.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a failure should panic loudly
#![allow(dead_code, unused_imports, unused_macros)] // the shared harness serves several test binaries

#[path = "common/mod.rs"]
mod common;
#[path = "ca_server/harness/mod.rs"]
#[macro_use]
mod harness;
#[path = "acme/setup.rs"]
mod acme_setup;
#[path = "agent/procs.rs"]
mod procs;

mod console {
    pub(crate) mod acme;
    pub(crate) mod browser;
    pub(crate) mod refusals;
    pub(crate) mod server;
    pub(crate) mod webdriver;
}
