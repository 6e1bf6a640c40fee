//! OCSP requests: the CA's GET path decoding (percent, base64) and DER
//! request parsing, and its answering logic (statuses, nonce, signing) with
//! statuses derived from the serial instead of a store lookup.
//!
//! Input: the first byte picks GET (odd: the rest is the path segment) or
//! POST (even: the rest is the DER body).
#![no_main]

use std::sync::LazyLock;

use der::Decode as _;
use libfuzzer_sys::fuzz_target;
use time::OffsetDateTime;
use ward_ca::fuzzing::OcspResponder;

const ROOT: &str = include_str!("../../crates/ward-testkit/fixtures/root.crt");
const INTERMEDIATE: &str = include_str!("../../crates/ward-testkit/fixtures/intermediate.crt");
const INTERMEDIATE_KEY: &str = include_str!("../../crates/ward-testkit/fixtures/intermediate.key");

fn now() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_900_000_000).unwrap()
}

static RESPONDER: LazyLock<OcspResponder> = LazyLock::new(|| {
    let der = |pem: &str| ward_pki::pem::parse_certs_any(pem.as_bytes()).unwrap()[0].to_vec();
    OcspResponder::new(&der(ROOT), &der(INTERMEDIATE), INTERMEDIATE_KEY, now()).unwrap()
});

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let answer = if pick & 1 == 1 {
        let Ok(path) = std::str::from_utf8(rest) else {
            return;
        };
        RESPONDER.answer_get(path, now())
    } else {
        RESPONDER.answer(rest, now())
    };
    // Whatever came in, what goes out is an OCSPResponse.
    let response = x509_ocsp::OcspResponse::from_der(&answer.der)
        .unwrap_or_else(|e| panic!("the answer does not decode: {e}"));
    assert_eq!(
        answer.successful,
        response.response_status == x509_ocsp::OcspResponseStatus::Successful
    );
    assert!(answer.successful || answer.result != "good");
});
