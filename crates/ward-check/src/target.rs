//! Endpoint arguments: `HOST:PORT`, `[IPv6]:PORT` or `https://HOST[:PORT]`
//! (path ignored), parsed once for every command that connects to one
//! (`ward check`, `ward cert inspect`).

/// An endpoint to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The connect address: `host:port`, or `[v6]:port`.
    pub addr: String,
    /// The host as written (without brackets): the default server name.
    pub host: String,
}

/// Why an endpoint argument does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// `[` without `]`.
    #[error("unterminated '[' in address")]
    UnterminatedBracket,
    /// The port is not a number from 0 to 65535.
    #[error("invalid port in {0:?}")]
    BadPort(String),
    /// No port, and not an `https://` URL (which defaults to 443).
    #[error("{0}: expected HOST:PORT or https://HOST[:PORT]")]
    NoPort(String),
    /// Nothing before the port.
    #[error("{0}: missing host")]
    MissingHost(String),
}

impl Endpoint {
    /// Parses `HOST:PORT`, `[IPv6]:PORT` or `https://HOST[:PORT]`.
    pub fn parse(raw: &str) -> Result<Self, TargetError> {
        let (rest, default_port) = match raw.strip_prefix("https://") {
            Some(rest) => (rest, Some(443u16)),
            None => (raw, None),
        };
        let authority = rest.split('/').next().unwrap_or(rest);
        // [v6]:port, host:port, or host alone for https://.
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, p) = v6.split_once(']').ok_or(TargetError::UnterminatedBracket)?;
            (h.to_owned(), p.strip_prefix(':').map(str::to_owned))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p.to_owned())),
                None => (authority.to_owned(), None),
            }
        };
        let port = match (port, default_port) {
            (Some(p), _) => p
                .parse()
                .map_err(|_| TargetError::BadPort(raw.to_owned()))?,
            (None, Some(d)) => d,
            (None, None) => return Err(TargetError::NoPort(raw.to_owned())),
        };
        if host.is_empty() {
            return Err(TargetError::MissingHost(raw.to_owned()));
        }
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(Endpoint { addr, host })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse() {
        let e = Endpoint::parse("ca.example:8443").unwrap();
        assert_eq!(
            (e.addr.as_str(), e.host.as_str()),
            ("ca.example:8443", "ca.example")
        );
        let e = Endpoint::parse("https://ca.example/path").unwrap();
        assert_eq!(e.addr, "ca.example:443");
        let e = Endpoint::parse("[::1]:9000").unwrap();
        assert_eq!((e.addr.as_str(), e.host.as_str()), ("[::1]:9000", "::1"));
        assert_eq!(
            Endpoint::parse("ca.example"),
            Err(TargetError::NoPort("ca.example".into()))
        );
        assert_eq!(
            Endpoint::parse("[::1:9000"),
            Err(TargetError::UnterminatedBracket)
        );
        assert!(matches!(
            Endpoint::parse("host:http"),
            Err(TargetError::BadPort(_))
        ));
        assert!(matches!(
            Endpoint::parse(":443"),
            Err(TargetError::MissingHost(_))
        ));
    }
}
