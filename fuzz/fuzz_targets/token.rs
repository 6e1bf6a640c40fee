//! Bootstrap token parsing: the `Authorization: Bearer` header, the token
//! text itself, and a token's allowed source networks.
//!
//! Input: lines. The first is an `Authorization` header value, the second a
//! network (`allowed_cidrs` entry), the third an address to match.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use ward_pki::cidr::Cidr;
use ward_ca::token::{TOKEN_PREFIX, TokenSecret};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let header = parts.next().unwrap_or_default();
    let network = parts.next().unwrap_or_default();
    let address = parts.next().unwrap_or_default();

    let presented = ward_ca::fuzzing::bearer_token(header)
        .or_else(|| std::str::from_utf8(header).ok().map(str::to_owned));
    if let Some(presented) = presented
        && let Some(secret) = TokenSecret::parse(&presented)
    {
        let text = secret.expose();
        assert!(text.starts_with(TOKEN_PREFIX));
        assert_eq!(text.len(), TOKEN_PREFIX.len() + 43);
        // What was parsed is what is hashed, however it was presented.
        let again = TokenSecret::parse(text).expect("a parsed token parses again");
        assert_eq!(again.hash(), secret.hash());
        assert!(!format!("{secret:?}").contains(&text[TOKEN_PREFIX.len()..]));
    }

    if let Ok(net) = std::str::from_utf8(network).unwrap_or("").parse::<Cidr>() {
        let shown = net.to_string();
        assert_eq!(shown.parse::<Cidr>(), Ok(net), "{shown}");
        if let Ok(ip) = std::str::from_utf8(address).unwrap_or("").parse::<IpAddr>() {
            let _ = net.contains(ip);
        }
    }
});
