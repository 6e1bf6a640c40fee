//! The HTTP/1 fast path's request head: parse, framing and host checks, and
//! the head written for the upstream.
//!
//! Input: the bytes at the start of a request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ward_gate::fuzzing::{RequestOutcome, request_head};

/// Fields a client may not pass to the upstream.
const DROPPED: [&str; 7] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "te",
    "upgrade",
    "proxy-authorization",
    "client-cert",
];

fuzz_target!(|data: &[u8]| {
    let RequestOutcome::Forward(head) = request_head(data) else {
        return;
    };
    assert!(head.len <= data.len());
    // The upstream head is one complete, well-formed request head whose
    // fields are the gate's, not the client's, where it matters.
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut req = httparse::Request::new(&mut fields);
    let n = match req.parse(&head.upstream) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("upstream head does not parse: {other:?}"),
    };
    assert_eq!(n, head.upstream.len(), "bytes after the upstream head");
    let count = |name: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .count()
    };
    assert_eq!(count("x-forwarded-for"), 1);
    assert_eq!(count("x-ward-spiffe-id"), 1);
    assert_eq!(count("x-forwarded-client-cert"), 1);
    assert_eq!(count("host"), 1);
    let value = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    assert_eq!(value("x-forwarded-proto"), Some(&b"https"[..]));
    for name in DROPPED {
        assert_eq!(count(name), 0, "{name} reached the upstream");
    }
    assert_eq!(
        value("x-ward-spiffe-id"),
        Some(&b"spiffe://example.org/fuzz"[..])
    );
});
