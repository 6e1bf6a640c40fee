//! Does an endpoint still accept TLS 1.0, TLS 1.1, or TLS 1.2 with non-AEAD
//! cipher suites? rustls cannot offer those, so this module writes a minimal
//! ClientHello by hand, sends it over TCP and reads the ServerHello (and, in
//! the same flight, the Certificate message) before hanging up.
//!
//! It never completes a handshake, sends no key share and derives no keys:
//! it only observes which version and suite a server picks. It must never be
//! used to talk to a peer, only to judge one (`ward check`).

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::Error;

const TLS10: u16 = 0x0301;
const TLS11: u16 = 0x0302;
const TLS12: u16 = 0x0303;
/// Upper bound on what is read from the server before giving up.
const MAX_READ: usize = 256 * 1024;

/// Non-AEAD suites (CBC, 3DES, RC4) with the IANA names reports use.
const LEGACY_SUITES: &[(u16, &str)] = &[
    (0xc009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"),
    (0xc00a, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"),
    (0xc013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"),
    (0xc014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"),
    (0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA"),
    (0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA"),
    (0x002f, "TLS_RSA_WITH_AES_128_CBC_SHA"),
    (0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA"),
    (0xc008, "TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA"),
    (0xc012, "TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0x000a, "TLS_RSA_WITH_3DES_EDE_CBC_SHA"),
    (0xc007, "TLS_ECDHE_ECDSA_WITH_RC4_128_SHA"),
    (0xc011, "TLS_ECDHE_RSA_WITH_RC4_128_SHA"),
    (0x0005, "TLS_RSA_WITH_RC4_128_SHA"),
    // TLS 1.2 only (SHA-2 MACs); offered to 1.0/1.1 too, harmlessly.
    (0xc023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"),
    (0xc024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384"),
    (0xc027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0xc028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384"),
    (0x0067, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256"),
    (0x006b, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256"),
    (0x003c, "TLS_RSA_WITH_AES_128_CBC_SHA256"),
    (0x003d, "TLS_RSA_WITH_AES_256_CBC_SHA256"),
];

/// Which legacy configuration to offer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyProbe {
    /// TLS 1.0 with the legacy suites.
    Tls10,
    /// TLS 1.1 with the legacy suites.
    Tls11,
    /// TLS 1.2 offering only non-AEAD suites.
    Tls12NonAead,
}

impl LegacyProbe {
    /// Every probe, in report order.
    pub const ALL: [LegacyProbe; 3] = [
        LegacyProbe::Tls10,
        LegacyProbe::Tls11,
        LegacyProbe::Tls12NonAead,
    ];

    /// A stable label for reports (`tls1.0`, `tls1.1`, `tls1.2-non-aead`).
    pub fn label(self) -> &'static str {
        match self {
            LegacyProbe::Tls10 => "tls1.0",
            LegacyProbe::Tls11 => "tls1.1",
            LegacyProbe::Tls12NonAead => "tls1.2-non-aead",
        }
    }

    fn version(self) -> u16 {
        match self {
            LegacyProbe::Tls10 => TLS10,
            LegacyProbe::Tls11 => TLS11,
            LegacyProbe::Tls12NonAead => TLS12,
        }
    }
}

/// What the server answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LegacyOutcome {
    /// It chose the offered version and one of the offered suites.
    Accepted {
        /// Negotiated version, e.g. `TLSv1.0`.
        version: String,
        /// Negotiated suite by IANA name.
        cipher: String,
    },
    /// It refused: an alert (its description code) or a closed connection.
    Refused {
        /// TLS alert description, when one was sent.
        alert: Option<u8>,
    },
    /// It answered with something this probe does not understand.
    Inconclusive(String),
}

/// One probe's result.
#[derive(Clone, Debug)]
pub struct LegacyResult {
    /// What was offered.
    pub probe: LegacyProbe,
    /// What came back.
    pub outcome: LegacyOutcome,
    /// The server's chain from its Certificate message, when it sent one.
    pub chain: Vec<CertificateDer<'static>>,
}

/// Offers `probe` to `addr` with SNI `sni` (omitted for IP addresses) and
/// reports the server's choice.
pub async fn probe(
    addr: &str,
    sni: &str,
    probe: LegacyProbe,
    timeout: Duration,
) -> Result<LegacyResult, Error> {
    let hello = client_hello(probe.version(), sni)?;
    let work = async {
        let mut tcp = TcpStream::connect(addr).await.map_err(|source| Error::Io {
            context: format!("connecting to {addr}"),
            source,
        })?;
        tcp.write_all(&hello).await.map_err(|source| Error::Io {
            context: format!("sending a ClientHello to {addr}"),
            source,
        })?;
        Ok::<_, Error>(read_answer(&mut tcp).await)
    };
    let (outcome, chain) = tokio::time::timeout(timeout, work)
        .await
        .map_err(|_| Error::Timeout(format!("{} probe of {addr}", probe.label())))??;
    let outcome = match outcome {
        LegacyOutcome::Accepted { version, cipher } => {
            let offered = version_name(probe.version()) == version;
            if offered {
                LegacyOutcome::Accepted { version, cipher }
            } else {
                LegacyOutcome::Inconclusive(format!(
                    "the server answered a {} offer with {version}",
                    probe.label()
                ))
            }
        }
        other => other,
    };
    Ok(LegacyResult {
        probe,
        outcome,
        chain,
    })
}

fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSLv3".into(),
        TLS10 => "TLSv1.0".into(),
        TLS11 => "TLSv1.1".into(),
        TLS12 => "TLSv1.2".into(),
        0x0304 => "TLSv1.3".into(),
        other => format!("0x{other:04x}"),
    }
}

fn suite_name(code: u16) -> String {
    LEGACY_SUITES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or_else(|| format!("0x{code:04x}"), |(_, n)| (*n).to_owned())
}

fn push_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn with_u16_len(out: &mut Vec<u8>, body: &[u8]) -> Result<(), Error> {
    let len =
        u16::try_from(body.len()).map_err(|_| Error::Input("ClientHello field too long".into()))?;
    push_u16(out, len);
    out.extend_from_slice(body);
    Ok(())
}

fn extension(out: &mut Vec<u8>, kind: u16, body: &[u8]) -> Result<(), Error> {
    push_u16(out, kind);
    with_u16_len(out, body)
}

/// A complete TLS record holding a ClientHello for `version`.
fn client_hello(version: u16, sni: &str) -> Result<Vec<u8>, Error> {
    let mut random = [0u8; 32];
    crate::provider()
        .secure_random
        .fill(&mut random)
        .map_err(|_| Error::Input("the system random generator failed".into()))?;
    let mut body = Vec::with_capacity(256);
    push_u16(&mut body, version);
    body.extend_from_slice(&random);
    body.push(0); // no session id
    let mut suites = Vec::new();
    for (code, _) in LEGACY_SUITES {
        push_u16(&mut suites, *code);
    }
    push_u16(&mut suites, 0x00ff); // TLS_EMPTY_RENEGOTIATION_INFO_SCSV
    with_u16_len(&mut body, &suites)?;
    body.extend_from_slice(&[1, 0]); // compression: null only

    let mut exts = Vec::new();
    if sni.parse::<std::net::IpAddr>().is_err() && !sni.is_empty() {
        let mut name = vec![0u8]; // host_name
        with_u16_len(&mut name, sni.as_bytes())?;
        let mut list = Vec::new();
        with_u16_len(&mut list, &name)?;
        extension(&mut exts, 0x0000, &list)?;
    }
    // supported_groups: x25519, secp256r1, secp384r1; ec_point_formats: uncompressed.
    extension(&mut exts, 0x000a, &[0, 6, 0, 0x1d, 0, 0x17, 0, 0x18])?;
    extension(&mut exts, 0x000b, &[1, 0])?;
    if version == TLS12 {
        let mut algs = Vec::new();
        for a in [
            0x0403u16, 0x0503, 0x0603, 0x0804, 0x0805, 0x0806, 0x0401, 0x0501, 0x0601, 0x0807,
            0x0201, 0x0203,
        ] {
            push_u16(&mut algs, a);
        }
        let mut list = Vec::new();
        with_u16_len(&mut list, &algs)?;
        extension(&mut exts, 0x000d, &list)?;
    }
    with_u16_len(&mut body, &exts)?;

    let len = u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes();
    let mut handshake = vec![1, len[1], len[2], len[3]]; // client_hello
    handshake.extend_from_slice(&body);
    let mut record = vec![22]; // handshake
    push_u16(&mut record, TLS10);
    with_u16_len(&mut record, &handshake)?;
    Ok(record)
}

/// Reads records until the ServerHello (and the Certificate message, if the
/// server sends one before ServerHelloDone), an alert, or the end.
async fn read_answer(tcp: &mut TcpStream) -> (LegacyOutcome, Vec<CertificateDer<'static>>) {
    let mut handshake = Vec::new();
    let mut outcome = None;
    let mut total = 0usize;
    loop {
        let mut header = [0u8; 5];
        if tcp.read_exact(&mut header).await.is_err() {
            break;
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        total += len + 5;
        let mut fragment = vec![0u8; len];
        if total > MAX_READ || tcp.read_exact(&mut fragment).await.is_err() {
            break;
        }
        match header[0] {
            21 => {
                let alert = fragment.get(1).copied();
                return (
                    outcome.unwrap_or(LegacyOutcome::Refused { alert }),
                    Vec::new(),
                );
            }
            22 => handshake.extend_from_slice(&fragment),
            other => {
                let why = format!("unexpected TLS record type {other}");
                return (
                    outcome.unwrap_or(LegacyOutcome::Inconclusive(why)),
                    Vec::new(),
                );
            }
        }
        // Walk the complete handshake messages received so far.
        let mut at = 0;
        while let Some((kind, msg)) = next_message(&handshake, &mut at) {
            match kind {
                2 => outcome = Some(parse_server_hello(msg)),
                11 => return (outcome.unwrap_or(incomplete()), parse_certificates(msg)),
                14 => return (outcome.unwrap_or(incomplete()), Vec::new()),
                _ => {}
            }
        }
        handshake.drain(..at);
    }
    (
        outcome.unwrap_or(LegacyOutcome::Refused { alert: None }),
        Vec::new(),
    )
}

fn incomplete() -> LegacyOutcome {
    LegacyOutcome::Inconclusive("no ServerHello before the server's later messages".into())
}

fn next_message<'a>(buf: &'a [u8], at: &mut usize) -> Option<(u8, &'a [u8])> {
    let header = buf.get(*at..*at + 4)?;
    let len = usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
    let msg = buf.get(*at + 4..*at + 4 + len)?;
    *at += 4 + len;
    Some((header[0], msg))
}

fn parse_server_hello(msg: &[u8]) -> LegacyOutcome {
    // version(2) random(32) session_id<1> cipher_suite(2) ...
    let parsed = (|| {
        let version = u16::from_be_bytes([*msg.first()?, *msg.get(1)?]);
        let sid_len = usize::from(*msg.get(34)?);
        let at = 35 + sid_len;
        let suite = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
        Some((version, suite))
    })();
    match parsed {
        Some((version, suite)) => LegacyOutcome::Accepted {
            version: version_name(version),
            cipher: suite_name(suite),
        },
        None => LegacyOutcome::Inconclusive("truncated ServerHello".into()),
    }
}

fn parse_certificates(msg: &[u8]) -> Vec<CertificateDer<'static>> {
    let mut out = Vec::new();
    let mut at = 3; // total length of the list
    while let Some(h) = msg.get(at..at + 3) {
        let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
        let Some(der) = msg.get(at + 3..at + 3 + len) else {
            break;
        };
        out.push(CertificateDer::from(der.to_vec()));
        at += 3 + len;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hello_is_well_formed() {
        let hello = client_hello(TLS12, "example.org").unwrap();
        assert_eq!(&hello[..3], &[22, 3, 1]);
        let record_len = usize::from(u16::from_be_bytes([hello[3], hello[4]]));
        assert_eq!(record_len, hello.len() - 5);
        let mut at = 5;
        let (kind, body) = next_message(&hello, &mut at).unwrap();
        assert_eq!((kind, at), (1, hello.len()));
        assert_eq!(&body[..2], &[3, 3]);
        let suites_len = usize::from(u16::from_be_bytes([body[35], body[36]]));
        assert_eq!(suites_len, 2 * (LEGACY_SUITES.len() + 1));
        // No AEAD suite is offered: every offered code is in the legacy table.
        for pair in body[37..37 + suites_len].chunks(2) {
            let code = u16::from_be_bytes([pair[0], pair[1]]);
            assert!(code == 0x00ff || LEGACY_SUITES.iter().any(|(c, _)| *c == code));
        }
        assert!(hello.windows(11).any(|w| w == b"example.org"));
        let no_sni = client_hello(TLS10, "127.0.0.1").unwrap();
        assert!(!no_sni.windows(9).any(|w| w == b"127.0.0.1"));
    }

    #[test]
    fn server_hello_and_certificates_parse() {
        let mut hello = vec![3, 3];
        hello.extend_from_slice(&[0; 32]);
        hello.push(0);
        hello.extend_from_slice(&[0xc0, 0x13, 0]);
        assert_eq!(
            parse_server_hello(&hello),
            LegacyOutcome::Accepted {
                version: "TLSv1.2".into(),
                cipher: "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA".into()
            }
        );
        assert!(matches!(
            parse_server_hello(&hello[..20]),
            LegacyOutcome::Inconclusive(_)
        ));
        let msg = [0, 0, 8, 0, 0, 2, 0xaa, 0xbb, 0, 0, 0];
        let certs = parse_certificates(&msg);
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), &[0xaa, 0xbb]);
    }
}
