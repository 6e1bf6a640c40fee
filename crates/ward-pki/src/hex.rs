//! Lenient hex input (any case, optional colons) and canonical lowercase output.

use crate::Error;

/// Decodes hex in either case, with or without `:` separators.
pub(crate) fn decode(what: &'static str, input: &str) -> Result<Vec<u8>, Error> {
    let invalid = |reason| Error::InvalidHex {
        what,
        input: input.to_owned(),
        reason,
    };
    let digits: Vec<u8> = input.bytes().filter(|b| *b != b':').collect();
    if digits.is_empty() {
        return Err(invalid("empty"));
    }
    if !digits.len().is_multiple_of(2) {
        return Err(invalid("odd number of hex digits"));
    }
    digits
        .chunks(2)
        .map(|pair| {
            Ok(
                (nibble(pair[0]).ok_or_else(|| invalid("not a hex digit"))? << 4)
                    | nibble(pair[1]).ok_or_else(|| invalid("not a hex digit"))?,
            )
        })
        .collect()
}

/// The value of one hex digit, either case.
fn nibble(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

/// Lowercase hex without separators.
pub(crate) fn encode(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Uppercase hex with `:` separators, as `openssl x509 -fingerprint` prints it.
pub(crate) fn encode_colons(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}
