//! The bootstrap token, a secret that must never reach a log.

use std::fmt;

use zeroize::Zeroizing;

use crate::ClientError;

/// Largest token accepted (Ward's are 48 characters; this leaves room for
/// other formats without accepting a whole file by mistake).
const MAX_TOKEN_LEN: usize = 4096;

/// A bootstrap token (`wdt_…`). `Debug` and `Display` never show it; the
/// memory holding it is wiped on drop.
#[derive(Clone)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// A token from text as read from a file or the environment: surrounding
    /// whitespace (a trailing newline) is removed; empty, over-long or
    /// multi-line input is refused without quoting it.
    pub fn new(text: &str) -> Result<Self, ClientError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(ClientError::Config("the bootstrap token is empty".into()));
        }
        if trimmed.len() > MAX_TOKEN_LEN {
            return Err(ClientError::Config(format!(
                "the bootstrap token is longer than {MAX_TOKEN_LEN} bytes"
            )));
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ClientError::Config(
                "the bootstrap token contains whitespace or control characters".into(),
            ));
        }
        Ok(Token(Zeroizing::new(trimmed.to_owned())))
    }

    /// The secret itself, to put in a request body.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token([redacted])")
    }
}

impl fmt::Display for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted token]")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_trimmed_checked_and_never_shown() {
        let t = Token::new("wdt_secret\n").unwrap();
        assert_eq!(t.expose(), "wdt_secret");
        assert!(!format!("{t:?} {t}").contains("secret"));
        for bad in ["", "  \n", "a b", "a\nb"] {
            let err = Token::new(bad).unwrap_err().to_string();
            assert!(!err.contains(bad.trim()) || bad.trim().is_empty(), "{err}");
        }
        assert!(Token::new(&"x".repeat(MAX_TOKEN_LEN + 1)).is_err());
    }
}
