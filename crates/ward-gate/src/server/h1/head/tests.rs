use super::*;

fn parse_req<'b>(
    raw: &'b [u8],
    fields: &'b mut [httparse::Header<'b>],
) -> (String, String, Vec<httparse::Header<'b>>) {
    let mut req = httparse::Request::new(fields);
    assert!(matches!(req.parse(raw), Ok(httparse::Status::Complete(_))));
    let method = req.method.unwrap().to_owned();
    let path = req.path.unwrap().to_owned();
    (method, path, req.headers.to_vec())
}

fn rewrite(raw: &[u8], fields: &[(&'static str, &[u8])]) -> String {
    rewrite_from(raw, fields, false)
}

fn rewrite_from(raw: &[u8], fields: &[(&'static str, &[u8])], trusted: bool) -> String {
    let mut storage = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (method, path, headers) = parse_req(raw, &mut storage);
    let content_length = content_length(&headers).unwrap();
    let mut out = Vec::new();
    write_request_head(
        &mut out,
        &method,
        &path,
        &headers,
        &Added {
            client_ip: "192.0.2.7",
            fields,
            default_host: "backend:8080",
            trusted,
            content_length,
        },
    );
    String::from_utf8(out).unwrap()
}

#[test]
fn request_head_drops_hop_by_hop_and_spoofed_identity() {
    let got = rewrite(
        b"POST /a?b=1 HTTP/1.1\r\nHost: api.example\r\nConnection: keep-alive, X-Secret\r\n\
          X-Secret: s\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: basic x\r\n\
          X-Forwarded-Client-Cert: By=evil\r\nX-Ward-Spiffe-Id: spiffe://evil/x\r\n\
          x-ward-anything: 1\r\nClient-Cert: :AAA=:\r\nX-Forwarded-Proto: http\r\n\
          Content-Length: 3\r\nAccept: */*\r\n\r\n",
        &[("x-ward-spiffe-id", b"spiffe://good/y")],
    );
    assert_eq!(
        got,
        "POST /a?b=1 HTTP/1.1\r\nHost: api.example\r\nContent-Length: 3\r\nAccept: */*\r\n\
         x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: https\r\n\
         x-ward-spiffe-id: spiffe://good/y\r\n\r\n"
    );
}

#[test]
fn request_head_appends_to_a_trusted_x_forwarded_for_and_adds_a_missing_host() {
    let got = rewrite_from(
        b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2 \r\n\r\n",
        &[],
        true,
    );
    assert_eq!(
        got,
        "GET / HTTP/1.1\r\nhost: backend:8080\r\n\
         x-forwarded-for: 10.0.0.1, 10.0.0.2, 192.0.2.7\r\nx-forwarded-proto: https\r\n\r\n"
    );
}

#[test]
fn request_head_drops_untrusted_forwarding_fields_and_underscore_spellings() {
    let raw = b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\n\
          X-Real-IP: 6.6.6.6\r\nX-Forwarded-Host: evil\r\nx_ward_spiffe_id: spiffe://evil/x\r\n\
          x_forwarded_client_cert: By=evil\r\nx_forwarded_for: 7.7.7.7\r\ntransfer_encoding: chunked\r\n\
          x_custom: kept\r\n\r\n";
    assert_eq!(
        rewrite(raw, &[]),
        "GET / HTTP/1.1\r\nHost: a\r\nx_custom: kept\r\n\
         x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: https\r\n\r\n"
    );
    // A trusted proxy keeps its forwarding fields, never the underscore ones.
    assert_eq!(
        rewrite_from(raw, &[], true),
        "GET / HTTP/1.1\r\nHost: a\r\nForwarded: for=6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\n\
         X-Forwarded-Host: evil\r\nx_custom: kept\r\n\
         x-forwarded-for: 6.6.6.6, 192.0.2.7\r\nx-forwarded-proto: https\r\n\r\n"
    );
}

#[test]
fn request_head_sends_one_content_length() {
    let got = rewrite(
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\ncontent-length: 5\r\n\r\n",
        &[],
    );
    assert_eq!(
        got,
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\
         x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: https\r\n\r\n"
    );
}

#[test]
fn content_length_rules() {
    let h = |v: &'static [u8]| {
        vec![httparse::Header {
            name: "Content-Length",
            value: v,
        }]
    };
    assert_eq!(content_length(&[]), Ok(None));
    assert_eq!(content_length(&h(b"42")), Ok(Some(42)));
    assert_eq!(content_length(&h(b"42, 42")), Ok(Some(42)));
    assert_eq!(content_length(&h(b"42, 43")), Err(()));
    assert_eq!(content_length(&h(b"-1")), Err(()));
    assert_eq!(content_length(&h(b"+1")), Err(()));
    assert_eq!(content_length(&h(b"0x10")), Err(()));
    assert_eq!(content_length(&h(b"")), Err(()));
    assert_eq!(content_length(&h(b"99999999999999999999")), Err(()));
    let two = [
        httparse::Header {
            name: "content-length",
            value: b"1",
        },
        httparse::Header {
            name: "Content-Length",
            value: b"2",
        },
    ];
    assert_eq!(content_length(&two), Err(()));
}

#[test]
fn host_rules() {
    let h = |v: &'static [u8]| httparse::Header {
        name: "Host",
        value: v,
    };
    assert_eq!(
        host(&[h(b"API.Example:8443")]),
        Ok(Some("api.example".into()))
    );
    assert_eq!(host(&[h(b"api.example")]), Ok(Some("api.example".into())));
    assert_eq!(host(&[h(b"[::1]:443")]), Ok(Some("[::1]".into())));
    assert_eq!(host(&[]), Ok(None));
    assert_eq!(host(&[h(b"a"), h(b"b")]), Err(()));
}

fn respond(raw: &[u8], head_request: bool, close: bool) -> (ResponseHead, String) {
    let mut out = Vec::new();
    let head = parse_response(raw, head_request, close, &mut out)
        .unwrap()
        .unwrap();
    (head, String::from_utf8(out).unwrap())
}

#[test]
fn response_framing() {
    let (h, out) = respond(
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nhello",
        false,
        false,
    );
    assert_eq!(h.framing, Framing::Length(5));
    assert!(h.reusable && !h.close_client && !h.interim);
    assert_eq!(h.len, 62, "the whole upstream head");
    assert_eq!(out, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");

    let (h, out) = respond(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n",
        false,
        false,
    );
    assert_eq!(h.framing, Framing::Chunked);
    assert!(!h.reusable, "both framings: the connection is not reused");
    assert_eq!(out, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");

    let (h, out) = respond(b"HTTP/1.1 200 OK\r\nServer: x\r\n\r\n", false, false);
    assert_eq!(h.framing, Framing::UntilClose);
    assert!(!h.reusable && h.close_client);
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nServer: x\r\nconnection: close\r\n\r\n"
    );

    let (h, _) = respond(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, false);
    assert_eq!(h.framing, Framing::Empty, "HEAD has no body");
    let (h, _) = respond(
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
        false,
        false,
    );
    assert_eq!(h.framing, Framing::Empty);
    let (h, _) = respond(b"HTTP/1.1 204 No Content\r\n\r\n", false, false);
    assert_eq!(h.framing, Framing::Empty);
    assert!(h.reusable);

    let (h, _) = respond(
        b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
        false,
        false,
    );
    assert!(!h.reusable, "HTTP/1.0 upstream connections are not reused");
    let (h, out) = respond(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n",
        false,
        true,
    );
    assert!(!h.reusable && h.close_client);
    assert_eq!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nconnection: close\r\n\r\n"
    );
}

#[test]
fn response_interim_and_errors() {
    let (h, out) = respond(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
        false,
        false,
    );
    assert!(h.interim);
    assert!(out.is_empty());
    let mut out = Vec::new();
    assert_eq!(
        parse_response(b"HTTP/1.1 200 OK\r\nContent", false, false, &mut out),
        Ok(None)
    );
    assert_eq!(
        parse_response(b"HTTP/1.1 101 Switching\r\n\r\n", false, false, &mut out),
        Err(BadResponse::Malformed("101 without an upgrade request"))
    );
    assert!(matches!(
        parse_response(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\n",
            false,
            false,
            &mut out
        ),
        Err(BadResponse::Malformed(_))
    ));
    assert!(matches!(
        parse_response(b"garbage\r\n\r\n", false, false, &mut out),
        Err(BadResponse::Malformed(_))
    ));
    let mut huge = b"HTTP/1.1 200 OK\r\n".to_vec();
    while huge.len() < MAX_HEAD {
        huge.extend_from_slice(b"x-filler: 0123456789012345678901234567890123456789\r\n");
    }
    assert_eq!(
        parse_response(&huge, false, false, &mut out),
        Err(BadResponse::TooLarge)
    );
    let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
    for i in 0..=MAX_HEADERS {
        many.extend_from_slice(format!("x-{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    assert_eq!(
        parse_response(&many, false, false, &mut out),
        Err(BadResponse::TooLarge)
    );
}

#[test]
fn error_responses_are_complete_messages() {
    let mut out = Vec::new();
    error_response(&mut out, &Refusal::forbidden("no \"way\"".into()), true);
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"));
    assert!(head.contains("connection: close"));
    assert!(head.contains(&format!("content-length: {}", body.len())));
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"], "forbidden");
    assert_eq!(v["message"], "no \"way\"");
}
