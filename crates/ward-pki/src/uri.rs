//! Checks for the URLs Ward writes into certificates (CRL distribution
//! points, OCSP responders) or connects to (upstreams, CRL sources, a CA).
//!
//! A URL read from configuration must never carry a control character, a
//! space or a non-ASCII character: a CR/LF in a `crl_url` would be copied
//! into every certificate and, through HTTP clients that trust it, into
//! request heads. Errors say which character and where, without echoing the
//! URL itself (the caller names the field and may show it `{:?}`-escaped).

/// The first character of `text` that has no place in a name or URI: a
/// control character (C0, DEL, C1), as `(byte offset, char)`.
pub fn first_control_char(text: &str) -> Option<(usize, char)> {
    text.char_indices().find(|(_, c)| c.is_control())
}

/// Checks `url`: printable ASCII only, one of `schemes` (without `://`), and
/// a host. The error completes "URL …" (e.g. "contains the control
/// character U+000D at byte 17").
pub fn check_url(url: &str, schemes: &[&str]) -> Result<(), String> {
    check_chars(url)?;
    let wanted = || {
        schemes
            .iter()
            .map(|s| format!("{s}://"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("has no scheme; expected one of {}", wanted()));
    };
    if !schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme)) {
        return Err(format!(
            "has the scheme {scheme:?}; expected one of {}",
            wanted()
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.is_empty() || host.starts_with(':') {
        return Err("has no host".into());
    }
    Ok(())
}

/// Checks that `url` holds printable ASCII only (what [`check_url`] checks
/// first), for callers that parse the rest themselves.
pub fn check_chars(url: &str) -> Result<(), String> {
    if let Some((at, c)) = first_control_char(url) {
        return Err(format!(
            "contains the control character U+{:04X} at byte {at}",
            u32::from(c)
        ));
    }
    if let Some((at, c)) = url.char_indices().find(|(_, c)| !c.is_ascii_graphic()) {
        return Err(if c == ' ' {
            format!("contains a space at byte {at}; percent-encode it as %20")
        } else {
            format!("contains the non-ASCII character {c:?} at byte {at}; percent-encode it")
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const WEB: &[&str] = &["http", "https"];

    #[test]
    fn good_urls_pass() {
        for url in [
            "http://ca.example.org/v1/crl",
            "https://127.0.0.1:8443/ocsp",
            "HTTP://[::1]:80/x?y=1#z",
            "http://user@host/p%20q",
        ] {
            assert_eq!(check_url(url, WEB), Ok(()), "{url}");
        }
    }

    #[test]
    fn control_characters_are_named_with_their_position() {
        let e = check_url("http://ca.example/crl\r\nX-Injected: 1", WEB).unwrap_err();
        assert_eq!(e, "contains the control character U+000D at byte 21");
        let e = check_url("http://a/\u{7f}", WEB).unwrap_err();
        assert!(e.contains("U+007F at byte 9"), "{e}");
        let e = check_url("http://a/\u{85}", WEB).unwrap_err();
        assert!(e.contains("U+0085"), "{e}");
        let e = check_url("http://a\tb/", WEB).unwrap_err();
        assert!(e.contains("U+0009 at byte 8"), "{e}");
    }

    #[test]
    fn other_defects_are_named() {
        let cases = [
            ("http://a b/", "contains a space at byte 8"),
            ("http://ä/", "non-ASCII character 'ä' at byte 7"),
            (
                "ca.example.org/crl",
                "has no scheme; expected one of http://, https://",
            ),
            ("ftp://a/", "has the scheme \"ftp\""),
            ("http:///crl", "has no host"),
            ("http://u@:80/", "has no host"),
        ];
        for (url, want) in cases {
            let e = check_url(url, WEB).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
    }

    #[test]
    fn first_control_char_finds_c0_del_and_c1() {
        assert_eq!(first_control_char("plain name"), None);
        assert_eq!(first_control_char("a\nb"), Some((1, '\n')));
        assert_eq!(first_control_char("é\u{9b}"), Some((2, '\u{9b}')));
    }
}
