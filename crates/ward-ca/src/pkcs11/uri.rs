//! RFC 7512 `pkcs11:` URIs naming a CA key in a token, with the module
//! that reaches the token and where its PIN is (`module-path`,
//! `pin-source`), so one line of `ca.toml` says everything.
//!
//! Only what Ward needs is accepted: the path attributes `token`, `object`,
//! `id`, `type` (which must be `private`), `manufacturer`, `model` and
//! `serial`; the query attributes `module-path` and `pin-source`
//! (`file:` only). A PIN in the URI (`pin-value`) is refused: it would sit
//! in a world-readable file.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Longest URI accepted, in bytes.
pub const MAX_URI: usize = 4096;

/// A CA key in a PKCS#11 token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyUri {
    /// The token's label (CKA_LABEL of the token).
    pub token: String,
    /// The key object's label (CKA_LABEL), if given.
    pub object: Option<String>,
    /// The key object's id (CKA_ID), if given.
    pub id: Option<Vec<u8>>,
    /// The token's serial number, if given.
    pub serial: Option<String>,
    /// The token's manufacturer, if given.
    pub manufacturer: Option<String>,
    /// The token's model, if given.
    pub model: Option<String>,
    /// The PKCS#11 module (shared library).
    pub module: PathBuf,
    /// The file holding the user PIN.
    pub pin_file: PathBuf,
}

/// Why a `pkcs11:` URI was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid PKCS#11 URI: {0}")]
pub struct UriError(String);

fn bad(why: impl Into<String>) -> UriError {
    UriError(why.into())
}

/// Decodes RFC 3986 percent-encoding.
fn unescape(value: &str) -> Result<Vec<u8>, UriError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| bad("a '%' is not followed by two hex digits"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn unescape_text(what: &str, value: &str) -> Result<String, UriError> {
    String::from_utf8(unescape(value)?).map_err(|_| bad(format!("{what} is not UTF-8")))
}

/// Percent-encodes everything but RFC 3986 unreserved characters (and `/`
/// in paths, which RFC 7512 allows unescaped in the query).
fn escape(bytes: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric()
            || matches!(b, b'-' | b'.' | b'_' | b'~')
            || (keep_slash && b == b'/')
        {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn path_from(bytes: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt as _;
    PathBuf::from(std::ffi::OsString::from_vec(bytes))
}

fn set<T>(slot: &mut Option<T>, name: &str, value: T) -> Result<(), UriError> {
    if slot.replace(value).is_some() {
        return Err(bad(format!("{name} appears twice")));
    }
    Ok(())
}

impl FromStr for KeyUri {
    type Err = UriError;

    fn from_str(input: &str) -> Result<Self, UriError> {
        if input.len() > MAX_URI {
            return Err(bad(format!("longer than {MAX_URI} bytes")));
        }
        let rest = input
            .strip_prefix("pkcs11:")
            .ok_or_else(|| bad("does not start with pkcs11:"))?;
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (mut token, mut object, mut id, mut kind) = (None, None, None, None);
        let (mut serial, mut manufacturer, mut model) = (None, None, None);
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| bad(format!("path attribute {attr:?} has no '='")))?;
            match name {
                "token" => set(&mut token, name, unescape_text(name, value)?)?,
                "object" => set(&mut object, name, unescape_text(name, value)?)?,
                "id" => set(&mut id, name, unescape(value)?)?,
                "type" => set(&mut kind, name, unescape_text(name, value)?)?,
                "serial" => set(&mut serial, name, unescape_text(name, value)?)?,
                "manufacturer" => set(&mut manufacturer, name, unescape_text(name, value)?)?,
                "model" => set(&mut model, name, unescape_text(name, value)?)?,
                other => {
                    return Err(bad(format!(
                        "path attribute {other:?} is not supported (token, object, id, type, serial, manufacturer, model)"
                    )));
                }
            }
        }
        let (mut module, mut pin) = (None, None);
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = attr
                .split_once('=')
                .ok_or_else(|| bad(format!("query attribute {attr:?} has no '='")))?;
            match name {
                "module-path" => set(&mut module, name, path_from(unescape(value)?))?,
                "pin-source" => {
                    let source = unescape(value)?;
                    let file = source
                        .strip_prefix(b"file:")
                        .ok_or_else(|| bad("pin-source must be a file: URI"))?;
                    // file:///path and file:/path both name /path.
                    let file = file.strip_prefix(b"//").unwrap_or(file);
                    set(&mut pin, name, path_from(file.to_vec()))?;
                }
                "pin-value" => {
                    return Err(bad(
                        "pin-value is refused: name a PIN file with pin-source=file:PATH",
                    ));
                }
                other => {
                    return Err(bad(format!(
                        "query attribute {other:?} is not supported (module-path, pin-source)"
                    )));
                }
            }
        }
        if let Some(kind) = kind
            && kind != "private"
        {
            return Err(bad(format!("type={kind} does not name a private key")));
        }
        let token = token.ok_or_else(|| bad("the token attribute is missing"))?;
        if object.is_none() && id.is_none() {
            return Err(bad("name the key with object= or id="));
        }
        Ok(KeyUri {
            token,
            object,
            id,
            serial,
            manufacturer,
            model,
            module: module.ok_or_else(|| bad("module-path is missing"))?,
            pin_file: pin.ok_or_else(|| bad("pin-source is missing"))?,
        })
    }
}

impl fmt::Display for KeyUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::ffi::OsStrExt as _;
        write!(f, "pkcs11:token={}", escape(self.token.as_bytes(), false))?;
        for (name, value) in [
            ("manufacturer", &self.manufacturer),
            ("model", &self.model),
            ("serial", &self.serial),
            ("object", &self.object),
        ] {
            if let Some(v) = value {
                write!(f, ";{name}={}", escape(v.as_bytes(), false))?;
            }
        }
        if let Some(id) = &self.id {
            f.write_str(";id=")?;
            for b in id {
                write!(f, "%{b:02X}")?;
            }
        }
        write!(
            f,
            ";type=private?module-path={}&pin-source=file:{}",
            escape(self.module.as_os_str().as_bytes(), true),
            escape(self.pin_file.as_os_str().as_bytes(), true)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_decode_percent_escapes() {
        let uri: KeyUri = "pkcs11:token=Ward%20CA;object=ward-root;id=%01%a0;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/ward/pin"
            .parse()
            .unwrap();
        assert_eq!(uri.token, "Ward CA");
        assert_eq!(uri.object.as_deref(), Some("ward-root"));
        assert_eq!(uri.id.as_deref(), Some(&[0x01, 0xa0][..]));
        assert_eq!(uri.module, PathBuf::from("/usr/lib/softhsm/libsofthsm2.so"));
        assert_eq!(uri.pin_file, PathBuf::from("/etc/ward/pin"));
        let again: KeyUri = uri.to_string().parse().unwrap();
        assert_eq!(again, uri);
        let file3: KeyUri = "pkcs11:token=t;id=%01?module-path=/m.so&pin-source=file:///p"
            .parse()
            .unwrap();
        assert_eq!(file3.pin_file, PathBuf::from("/p"));
    }

    #[test]
    fn hostile_or_incomplete_uris_are_refused_precisely() {
        let cases = [
            ("https://x", "does not start with pkcs11:"),
            (
                "pkcs11:object=k?module-path=/m&pin-source=file:/p",
                "token attribute is missing",
            ),
            (
                "pkcs11:token=t?module-path=/m&pin-source=file:/p",
                "object= or id=",
            ),
            (
                "pkcs11:token=t;object=k?pin-source=file:/p",
                "module-path is missing",
            ),
            (
                "pkcs11:token=t;object=k?module-path=/m",
                "pin-source is missing",
            ),
            (
                "pkcs11:token=t;object=k?module-path=/m&pin-value=1234",
                "pin-value is refused",
            ),
            (
                "pkcs11:token=t;object=k?module-path=/m&pin-source=|cat",
                "file: URI",
            ),
            (
                "pkcs11:token=t;object=k;type=public?module-path=/m&pin-source=file:/p",
                "private key",
            ),
            (
                "pkcs11:token=t;token=u;object=k?module-path=/m&pin-source=file:/p",
                "twice",
            ),
            (
                "pkcs11:token=%zz;object=k?module-path=/m&pin-source=file:/p",
                "two hex digits",
            ),
            (
                "pkcs11:token=%ff;object=k?module-path=/m&pin-source=file:/p",
                "not UTF-8",
            ),
            (
                "pkcs11:token=t;slot-id=1;object=k?module-path=/m&pin-source=file:/p",
                "not supported",
            ),
            (
                "pkcs11:token=t;object?module-path=/m&pin-source=file:/p",
                "no '='",
            ),
        ];
        for (input, want) in cases {
            let err = input.parse::<KeyUri>().unwrap_err().to_string();
            assert!(err.contains(want), "{input}: {err}");
        }
        let long = format!("pkcs11:token={}", "a".repeat(MAX_URI));
        assert!(
            long.parse::<KeyUri>()
                .unwrap_err()
                .to_string()
                .contains("longer")
        );
    }
}
