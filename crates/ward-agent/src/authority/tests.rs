use super::*;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// (type, flags, stream, payload) of every frame after the preface.
fn frames(mut bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
    assert!(bytes.starts_with(PREFACE), "the preface passes first");
    bytes = &bytes[PREFACE.len()..];
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let len = usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]);
        let stream = u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]);
        out.push((bytes[3], bytes[4], stream, bytes[9..9 + len].to_vec()));
        bytes = &bytes[9 + len..];
    }
    out
}

/// Feeds `input` in pieces of `step` bytes, as a socket might deliver it.
fn rewrite(input: &[u8], step: usize) -> Result<Vec<u8>, Malformed> {
    let mut rewriter = Rewriter::default();
    let (mut pending, mut out) = (BytesMut::new(), BytesMut::new());
    for piece in input.chunks(step) {
        pending.extend_from_slice(piece);
        rewriter.process(&mut pending, &mut out)?;
    }
    assert!(pending.is_empty(), "everything complete was consumed");
    Ok(out.to_vec())
}

fn request(authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", "/SpiffeWorkloadAPI/FetchX509SVID"),
        (":authority", authority),
        ("content-type", "application/grpc"),
        ("workload.spiffe.io", "true"),
    ]
    .iter()
    .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
    .collect()
}

fn encode(encoder: &mut loona_hpack::Encoder<'_>, headers: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    encoder.encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())))
}

fn with_authority(headers: &[(Vec<u8>, Vec<u8>)], authority: &str) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut want = headers.to_vec();
    want[3].1 = authority.as_bytes().to_vec();
    want
}

#[test]
fn unparsable_authorities_become_localhost_and_everything_else_passes() {
    let mut encoder = loona_hpack::Encoder::new();
    let c_core = request("tmp%2Fdir%2Fagent.sock");
    let java = request("/tmp/dir/agent.sock");
    let valid = request("example.org:8080");
    let first = encode(&mut encoder, &c_core);
    // The same headers again: the client now refers to its dynamic table.
    let again = encode(&mut encoder, &c_core);
    assert!(
        again.len() < first.len(),
        "the second block uses the dynamic table"
    );
    let java_block = encode(&mut encoder, &java);
    let valid_block = encode(&mut encoder, &valid);

    let mut input = PREFACE.to_vec();
    input.extend(frame(0x4, 0, 0, &[0, 3, 0, 0, 0, 100])); // SETTINGS
    // Stream 1: padded, with priority, split over HEADERS + CONTINUATION.
    let (a, b) = first.split_at(first.len() / 2);
    let mut payload = vec![4u8]; // pad length
    payload.extend([0x80, 0, 0, 0, 15]); // exclusive, depends on 0, weight 15
    payload.extend_from_slice(a);
    payload.extend([0u8; 4]);
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_PADDED | FLAG_PRIORITY,
        1,
        &payload,
    ));
    input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, b));
    input.extend(frame(0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0"));
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        3,
        &again,
    ));
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        5,
        &java_block,
    ));
    input.extend(frame(
        TYPE_HEADERS,
        FLAG_END_HEADERS | FLAG_END_STREAM,
        7,
        &valid_block,
    ));
    input.extend(frame(0x8, 0, 0, &[0, 0, 0x10, 0])); // WINDOW_UPDATE

    for step in [1, 7, input.len()] {
        let out = rewrite(&input, step).unwrap();
        let got = frames(&out);
        assert_eq!(got.len(), 7, "{got:?}");
        assert_eq!(
            (got[0].0, got[0].3.as_slice()),
            (0x4, &[0, 3, 0, 0, 0, 100][..])
        );
        // h2 decodes what it gets with its own, fresh decoder.
        let mut h2_side = loona_hpack::Decoder::new();
        let (kind, flags, stream, payload) = &got[1];
        assert_eq!(
            (*kind, *flags, *stream),
            (TYPE_HEADERS, FLAG_PRIORITY | FLAG_END_HEADERS, 1)
        );
        assert_eq!(
            &payload[..5],
            &[0x80, 0, 0, 0, 15],
            "the priority fields are kept"
        );
        let localhost = with_authority(&c_core, "localhost");
        assert_eq!(h2_side.decode(&payload[5..]).unwrap(), localhost);
        assert_eq!(got[2], (0x0, FLAG_END_STREAM, 1, b"\0\0\0\0\0".to_vec()));
        let flags = FLAG_END_HEADERS | FLAG_END_STREAM;
        assert_eq!((got[3].0, got[3].1, got[3].2), (TYPE_HEADERS, flags, 3));
        assert_eq!(h2_side.decode(&got[3].3).unwrap(), localhost);
        assert_eq!(
            h2_side.decode(&got[4].3).unwrap(),
            with_authority(&java, "localhost")
        );
        assert_eq!(
            h2_side.decode(&got[5].3).unwrap(),
            valid,
            "a valid authority is kept"
        );
        assert_eq!(got[6], (0x8, 0, 0, vec![0, 0, 0x10, 0]));
    }
}

#[test]
fn large_blocks_are_split_into_frames_h2_accepts() {
    let mut headers = request("tmp%2Fdir%2Fagent.sock");
    headers.push((b"x-large".to_vec(), vec![b'v'; 40_000]));
    let block = loona_hpack::Encoder::new()
        .encode(headers.iter().map(|(n, v)| (n.as_slice(), v.as_slice())));
    let mut input = PREFACE.to_vec();
    let (a, rest) = block.split_at(10_000);
    let (b, c) = rest.split_at(10_000);
    input.extend(frame(TYPE_HEADERS, FLAG_END_STREAM, 1, a));
    input.extend(frame(TYPE_CONTINUATION, 0, 1, b));
    input.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, c));
    let got = frames(&rewrite(&input, 4096).unwrap());
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|f| f.3.len() <= MAX_FRAME && f.2 == 1));
    assert_eq!((got[0].0, got[0].1), (TYPE_HEADERS, FLAG_END_STREAM));
    assert_eq!((got[1].0, got[1].1), (TYPE_CONTINUATION, 0));
    assert_eq!((got[2].0, got[2].1), (TYPE_CONTINUATION, FLAG_END_HEADERS));
    let joined: Vec<u8> = got.iter().flat_map(|f| f.3.clone()).collect();
    let decoded = loona_hpack::Decoder::new().decode(&joined).unwrap();
    assert_eq!(decoded, with_authority(&headers, "localhost"));
}

#[test]
fn malformed_input_is_refused_not_passed_on() {
    let mut encoder = loona_hpack::Encoder::new();
    let block = encode(&mut encoder, &request("localhost"));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "continuation alone",
            frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &block),
        ),
        (
            "padding too long",
            frame(
                TYPE_HEADERS,
                FLAG_PADDED | FLAG_END_HEADERS,
                1,
                &[200, 1, 2],
            ),
        ),
        (
            "padded, empty",
            frame(TYPE_HEADERS, FLAG_PADDED | FLAG_END_HEADERS, 1, &[]),
        ),
        (
            "priority too short",
            frame(TYPE_HEADERS, FLAG_PRIORITY | FLAG_END_HEADERS, 1, &[0, 0]),
        ),
        (
            "bad index",
            frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0xff, 0xff, 0x7f]),
        ),
        ("data inside a block", {
            let mut v = frame(TYPE_HEADERS, 0, 1, &block);
            v.extend(frame(0x0, 0, 1, b"x"));
            v
        }),
        ("continuation of another stream", {
            let mut v = frame(TYPE_HEADERS, 0, 1, &block);
            v.extend(frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, &[]));
            v
        }),
        (
            "oversized block",
            frame(TYPE_HEADERS, 0, 1, &vec![0u8; MAX_BLOCK + 1]),
        ),
    ];
    for (what, bytes) in cases {
        let mut input = PREFACE.to_vec();
        input.extend(bytes);
        let mut rewriter = Rewriter::default();
        let (mut pending, mut out) = (BytesMut::from(&input[..]), BytesMut::new());
        let result = rewriter.process(&mut pending, &mut out);
        assert!(result.is_err(), "{what}: {result:?}");
        assert!(
            !out.windows(block.len()).any(|w| w == block.as_slice()),
            "{what}"
        );
    }
}

#[test]
fn integers_use_the_continuation_bytes_of_rfc_7541() {
    // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
    let mut out = Vec::new();
    integer(&mut out, 0, 5, 1337);
    assert_eq!(out, [31, 154, 10]);
    out.clear();
    integer(&mut out, 0x80, 7, 126);
    assert_eq!(out, [0x80 | 126]);
    out.clear();
    integer(&mut out, 0, 7, 127);
    assert_eq!(out, [127, 0]);
}
