//! Bootstrap token secrets: generation, parsing and hashing.
//!
//! A token is `wdt_` followed by 256 bits from the OS CSPRNG in base64url
//! (43 characters); the prefix lets secret scanners find leaked ones. Only
//! its SHA-256 is stored, so a lookup by hash is the comparison: no secret is
//! ever compared byte by byte in variable time.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

/// The prefix of every Ward bootstrap token.
pub const TOKEN_PREFIX: &str = "wdt_";
const SECRET_BYTES: usize = 32;
const ENCODED_LEN: usize = 43;

/// A bootstrap token secret. `Debug` never shows it; memory is wiped on drop.
pub struct TokenSecret(Zeroizing<String>);

impl TokenSecret {
    /// A fresh random token.
    pub fn generate() -> Result<Self, crate::Error> {
        let mut bytes = Zeroizing::new([0u8; SECRET_BYTES]);
        aws_lc_rs::rand::fill(&mut *bytes)
            .map_err(|_| crate::Error::Config("the system random generator failed".into()))?;
        let mut s = String::with_capacity(TOKEN_PREFIX.len() + ENCODED_LEN);
        s.push_str(TOKEN_PREFIX);
        s.push_str(&URL_SAFE_NO_PAD.encode(bytes.as_slice()));
        Ok(TokenSecret(Zeroizing::new(s)))
    }

    /// Parses a presented token; `None` when it cannot be a Ward token (the
    /// caller answers 401 without a lookup).
    pub fn parse(presented: &str) -> Option<Self> {
        let body = presented.trim().strip_prefix(TOKEN_PREFIX)?;
        let well_formed = body.len() == ENCODED_LEN
            && body
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        well_formed.then(|| TokenSecret(Zeroizing::new(format!("{TOKEN_PREFIX}{body}"))))
    }

    /// SHA-256 of the token text: the only form that is stored.
    pub fn hash(&self) -> [u8; 32] {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, self.0.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        out
    }

    /// The token text, for showing once at creation.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret([redacted])")
    }
}

/// A new public token id: `tok_` and 16 hex digits.
pub fn new_token_id() -> Result<String, crate::Error> {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| crate::Error::Config("the system random generator failed".into()))?;
    Ok(format!(
        "tok_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_parse_hash_and_hide() {
        let t = TokenSecret::generate().unwrap();
        assert!(t.expose().starts_with("wdt_"));
        assert_eq!(t.expose().len(), 4 + 43);
        let again = TokenSecret::parse(t.expose()).unwrap();
        assert_eq!(again.hash(), t.hash());
        assert!(!format!("{t:?}").contains(&t.expose()[4..]));
        assert_ne!(TokenSecret::generate().unwrap().hash(), t.hash());
    }

    #[test]
    fn malformed_tokens_are_rejected_before_lookup() {
        let t = TokenSecret::generate().unwrap();
        for bad in [
            "",
            "wdt_",
            &t.expose()[4..],
            &format!("{}x", t.expose()),
            &t.expose().replace("wdt_", "WDT_"),
            &format!("wdt_{}", "+".repeat(43)),
        ] {
            assert!(TokenSecret::parse(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn token_ids_look_right() {
        let id = new_token_id().unwrap();
        assert!(id.starts_with("tok_") && id.len() == 20, "{id}");
    }
}
