//! The HTTP/1 fast path's upstream response head: parse, framing, and the
//! head written for the client.
//!
//! Input: the first byte's bits say whether the request was HEAD and
//! whether the client connection closes; the rest is the upstream's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, buf)) = data.split_first() else {
        return;
    };
    let Ok(Some(head)) = ward_gate::fuzzing::response_head(buf, flags & 1 == 1, flags & 2 == 2)
    else {
        return;
    };
    assert!(head.len <= buf.len());
    if head.interim {
        return;
    }
    let mut fields = [httparse::EMPTY_HEADER; 256];
    let mut resp = httparse::Response::new(&mut fields);
    let n = match resp.parse(&head.client) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("client head does not parse: {other:?}"),
    };
    assert_eq!(n, head.client.len(), "bytes after the client head");
    assert_eq!(resp.code, Some(head.status));
    let has = |name: &str| {
        resp.headers
            .iter()
            .any(|h| h.name.eq_ignore_ascii_case(name))
    };
    // One body length or none, never both (request smuggling).
    assert!(!(has("transfer-encoding") && has("content-length")));
    assert!(!has("keep-alive") && !has("upgrade") && !has("te"));
});
