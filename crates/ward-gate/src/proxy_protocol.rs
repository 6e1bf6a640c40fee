//! The PROXY protocol (HAProxy's, versions 1 and 2): a load balancer in
//! front of the gate prefixes each connection with the client's real
//! address. The gate reads it only from `[listen] proxy_protocol_from`
//! (anyone else could claim any address), and can send version 2 to
//! upstreams that want it.
//!
//! The parser is pure, bounded and never panics on any input (fuzzed by
//! `fuzz/fuzz_targets/proxy_protocol.rs`): it looks at no more than
//! [`MAX_HEADER`] bytes and says whether it needs more.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The version 2 signature.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest header accepted: version 1 allows 107 bytes; version 2 headers
/// carry TLVs, of which 512 bytes are plenty for what load balancers send.
pub const MAX_HEADER: usize = 16 + 512;
/// Longest version 1 line, CRLF included (the specification's bound).
const MAX_V1: usize = 107;

/// What a complete header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// No address (`LOCAL`, `UNKNOWN`, or a family the gate does not
    /// use): the connection's own address stands.
    Local,
    /// The client (`source`) and the address it connected to.
    Proxied {
        /// The real client.
        source: SocketAddr,
        /// Where the client connected.
        destination: SocketAddr,
    },
}

/// The outcome of parsing the start of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// More bytes are needed (the input is a valid prefix so far).
    Incomplete,
    /// A complete header of `len` bytes.
    Complete {
        /// The header.
        header: Header,
        /// Its length: the bytes to consume.
        len: usize,
        /// 1 or 2.
        version: u8,
    },
}

/// Why a header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The bytes do not start with a PROXY header at all.
    #[error("no PROXY protocol header")]
    Missing,
    /// A header that breaks the format.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
    /// A header longer than the gate accepts.
    #[error("PROXY protocol header longer than {MAX_HEADER} bytes")]
    TooLong,
}

/// Whether `buf` could be the start of a PROXY header (either version):
/// used to name the refusal of a header from an address not allowed to
/// send one.
pub fn looks_like_header(buf: &[u8]) -> bool {
    let n = buf.len().min(V2_SIGNATURE.len());
    n > 0 && (buf[..n] == V2_SIGNATURE[..n] || b"PROXY "[..n.min(6)] == buf[..n.min(6)])
}

/// Parses a header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if buf.is_empty() {
        return Ok(Parsed::Incomplete);
    }
    let n = buf.len().min(V2_SIGNATURE.len());
    if buf[..n] == V2_SIGNATURE[..n] {
        if buf.len() < 16 {
            return Ok(Parsed::Incomplete);
        }
        return parse_v2(buf);
    }
    let m = buf.len().min(6);
    if buf[..m] == b"PROXY "[..m] {
        if buf.len() < 6 {
            return Ok(Parsed::Incomplete);
        }
        return parse_v1(buf);
    }
    Err(ProxyError::Missing)
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &buf[..buf.len().min(MAX_V1)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        if buf.len() >= MAX_V1 {
            return Err(ProxyError::TooLong);
        }
        if window
            .iter()
            .any(|&b| b == b'\n' || !(b == b'\r' || (0x20..0x7f).contains(&b)))
        {
            return Err(ProxyError::Malformed("v1: not a printable line"));
        }
        return Ok(Parsed::Incomplete);
    };
    let line =
        std::str::from_utf8(&buf[6..end]).map_err(|_| ProxyError::Malformed("v1: not ASCII"))?;
    let len = end + 2;
    let done = |header| {
        Ok(Parsed::Complete {
            header,
            len,
            version: 1,
        })
    };
    let mut parts = line.split(' ');
    let family = parts.next().unwrap_or_default();
    if family == "UNKNOWN" {
        // The rest of the line may be anything and is ignored.
        return done(Header::Local);
    }
    let fields: Vec<&str> = parts.collect();
    let [src, dst, sport, dport] = fields[..] else {
        return Err(ProxyError::Malformed("v1: expected four fields"));
    };
    let ip = |s: &str| -> Result<IpAddr, ProxyError> {
        match family {
            "TCP4" => s
                .parse::<Ipv4Addr>()
                .map(IpAddr::V4)
                .map_err(|_| ProxyError::Malformed("v1: bad IPv4 address")),
            "TCP6" => s
                .parse::<Ipv6Addr>()
                .map(IpAddr::V6)
                .map_err(|_| ProxyError::Malformed("v1: bad IPv6 address")),
            _ => Err(ProxyError::Malformed("v1: unknown protocol")),
        }
    };
    let port = |s: &str| -> Result<u16, ProxyError> {
        // No sign, no leading zero (the specification), no empty field.
        if s.is_empty()
            || (s.len() > 1 && s.starts_with('0'))
            || !s.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ProxyError::Malformed("v1: bad port"));
        }
        s.parse().map_err(|_| ProxyError::Malformed("v1: bad port"))
    };
    done(Header::Proxied {
        source: SocketAddr::new(ip(src)?, port(sport)?),
        destination: SocketAddr::new(ip(dst)?, port(dport)?),
    })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let ver_cmd = buf[12];
    if ver_cmd >> 4 != 2 {
        return Err(ProxyError::Malformed("v2: unsupported version"));
    }
    let family = buf[13];
    let body = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let len = 16 + body;
    if len > MAX_HEADER {
        return Err(ProxyError::TooLong);
    }
    let local = match ver_cmd & 0x0f {
        0 => true,
        1 => false,
        _ => return Err(ProxyError::Malformed("v2: unknown command")),
    };
    if buf.len() < len {
        return Ok(Parsed::Incomplete);
    }
    let body = &buf[16..len];
    let done = |header| {
        Ok(Parsed::Complete {
            header,
            len,
            version: 2,
        })
    };
    if local {
        return done(Header::Local);
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match family {
        // TCP over IPv4 (and UDP, whose addresses read the same way).
        0x11 | 0x12 => {
            if body.len() < 12 {
                return Err(ProxyError::Malformed("v2: IPv4 addresses truncated"));
            }
            let src = Ipv4Addr::new(body[0], body[1], body[2], body[3]);
            let dst = Ipv4Addr::new(body[4], body[5], body[6], body[7]);
            done(Header::Proxied {
                source: SocketAddr::new(src.into(), port(&body[8..10])),
                destination: SocketAddr::new(dst.into(), port(&body[10..12])),
            })
        }
        0x21 | 0x22 => {
            if body.len() < 36 {
                return Err(ProxyError::Malformed("v2: IPv6 addresses truncated"));
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&body[..16]);
            dst.copy_from_slice(&body[16..32]);
            done(Header::Proxied {
                source: SocketAddr::new(Ipv6Addr::from(src).into(), port(&body[32..34])),
                destination: SocketAddr::new(Ipv6Addr::from(dst).into(), port(&body[34..36])),
            })
        }
        // UNSPEC and UNIX sockets: the receiver keeps the connection's
        // own addresses (as the specification says).
        0x00 | 0x31 | 0x32 => done(Header::Local),
        _ => Err(ProxyError::Malformed("v2: unknown address family")),
    }
}

/// A version 2 `PROXY` header for a connection from `source` to
/// `destination` (both of one address family; mixed families are sent
/// as IPv6, with IPv4 addresses mapped).
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x21); // version 2, PROXY
    match (source.ip(), destination.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn v1_tcp4_and_tcp6_and_unknown() {
        let line = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\nrest";
        assert_eq!(
            parse(line).unwrap(),
            Parsed::Complete {
                header: Header::Proxied {
                    source: addr("192.0.2.7:56324"),
                    destination: addr("10.0.0.1:443"),
                },
                len: line.len() - 4,
                version: 1,
            }
        );
        let line = b"PROXY TCP6 2001:db8::1 ::1 1 65535\r\n";
        assert!(matches!(
            parse(line).unwrap(),
            Parsed::Complete { header: Header::Proxied { source, .. }, .. } if source == addr("[2001:db8::1]:1")
        ));
        assert!(matches!(
            parse(b"PROXY UNKNOWN whatever\r\n").unwrap(),
            Parsed::Complete {
                header: Header::Local,
                len: 24,
                ..
            }
        ));
    }

    #[test]
    fn every_prefix_of_a_header_is_incomplete() {
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 56324 443\r\n".to_vec();
        let v2 = encode_v2(addr("192.0.2.7:56324"), addr("10.0.0.1:443"));
        for h in [v1, v2] {
            for cut in 0..h.len() {
                assert_eq!(parse(&h[..cut]).unwrap(), Parsed::Incomplete, "{cut}");
            }
            assert!(matches!(parse(&h).unwrap(), Parsed::Complete { len, .. } if len == h.len()));
        }
    }

    #[test]
    fn v2_round_trips_both_families() {
        for (s, d) in [
            ("192.0.2.7:56324", "10.0.0.1:443"),
            ("[2001:db8::7]:9", "[2001:db8::1]:443"),
        ] {
            let h = encode_v2(addr(s), addr(d));
            assert_eq!(
                parse(&h).unwrap(),
                Parsed::Complete {
                    header: Header::Proxied {
                        source: addr(s),
                        destination: addr(d),
                    },
                    len: h.len(),
                    version: 2,
                }
            );
        }
    }

    #[test]
    fn v2_local_and_tlvs_are_skipped() {
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x20, 0x00, 0x00, 0x03, 1, 2, 3]);
        assert!(matches!(
            parse(&h).unwrap(),
            Parsed::Complete {
                header: Header::Local,
                len: 19,
                ..
            }
        ));
        // A PROXY header with a TLV after the addresses.
        let mut h = encode_v2(addr("192.0.2.7:1"), addr("10.0.0.1:2"));
        h[15] += 4;
        h.extend_from_slice(&[0x04, 0x00, 0x01, 0xaa]);
        assert!(matches!(
            parse(&h).unwrap(),
            Parsed::Complete { len: 32, .. }
        ));
    }

    #[test]
    fn hostile_headers_are_refused() {
        let cases: [(&[u8], ProxyError); 8] = [
            (b"\x16\x03\x01\x00", ProxyError::Missing),
            (b"GET / HTTP/1.1\r\n", ProxyError::Missing),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
                ProxyError::Malformed("v1: expected four fields"),
            ),
            (
                b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
                ProxyError::Malformed("v1: bad IPv4 address"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
                ProxyError::Malformed("v1: bad port"),
            ),
            (
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 70000\r\n",
                ProxyError::Malformed("v1: bad port"),
            ),
            (
                b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
                ProxyError::Malformed("v1: unknown protocol"),
            ),
            (
                b"PROXY TCP4 1.2.3.4\n",
                ProxyError::Malformed("v1: not a printable line"),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                parse(input),
                Err(want),
                "{}",
                String::from_utf8_lossy(input)
            );
        }
        let long = [b"PROXY ".as_slice(), &[b'A'; 200]].concat();
        assert_eq!(parse(&long), Err(ProxyError::TooLong));
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert_eq!(parse(&h), Err(ProxyError::TooLong));
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4]);
        assert_eq!(
            parse(&h),
            Err(ProxyError::Malformed("v2: IPv4 addresses truncated"))
        );
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x11, 0x11, 0x00, 0x00]);
        assert_eq!(
            parse(&h),
            Err(ProxyError::Malformed("v2: unsupported version"))
        );
        let mut h = V2_SIGNATURE.to_vec();
        h.extend_from_slice(&[0x2f, 0x11, 0x00, 0x00]);
        assert_eq!(parse(&h), Err(ProxyError::Malformed("v2: unknown command")));
    }

    #[test]
    fn signature_detection() {
        assert!(looks_like_header(b"PROXY TCP4"));
        assert!(looks_like_header(b"PRO"));
        assert!(looks_like_header(&V2_SIGNATURE[..5]));
        assert!(!looks_like_header(b"\x16\x03\x01"));
        assert!(!looks_like_header(b""));
    }
}
