//! The CA's JSON request bodies: `/v1/sign`, `/v1/issue`, `/v1/renew`,
//! `/v1/revoke`, `/v1/admin/tokens` and the seed route, parsed and
//! validated as their handlers do before authentication.
//!
//! Input: the first byte picks the route, the rest is the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_ca::fuzzing::{JsonRoute, json_body};

fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let route = JsonRoute::ALL[usize::from(pick) % JsonRoute::ALL.len()];
    if let Err(e) = json_body(route, body) {
        // Every refusal is a client error with a code and a message.
        assert!(e.status.is_client_error(), "{route:?}: {e:?}");
        assert!(!e.code.is_empty() && !e.message.is_empty());
    }
});
