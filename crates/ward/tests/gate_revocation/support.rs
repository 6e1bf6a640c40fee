//! What the scenarios share: a gate in front of an echo upstream that
//! trusts the CA root only (the CRL's intermediate is learned from client
//! chains), polling until a client is refused, and CRLs signed by
//! Python's `cryptography`.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::ca::{CaServer, Issued};
use super::client::Client;
use crate::common::OutputText;
use crate::harness::{Gate, crt, key, server_cert};

/// The bound every revocation must be enforced within (issue 6).
pub(crate) const BOUND: Duration = Duration::from_secs(3);

/// A gate for `ca`'s clients in front of `upstream` (http:// or tcp://),
/// with `extra` flags (the CRL source, refresh, fail mode).
pub(crate) fn gate(ca: &CaServer, upstream: &str, name: &str, extra: &[&str]) -> Gate {
    let server = server_cert(&ca.pki, "spiffe://example.org/gate", name);
    let (c, k, root) = (crt(&server), key(&server), ca.root());
    let mut args = vec![
        "--cert",
        c.as_str(),
        "--key",
        k.as_str(),
        "--client-ca",
        root.as_str(),
        "--upstream",
        upstream,
        "--allow-spiffe-id",
        "spiffe://example.org/*",
    ];
    args.extend_from_slice(extra);
    Gate::flags(&args)
}

/// A client for `issued` that resumes sessions.
pub(crate) fn resuming(ca: &CaServer, issued: &Issued) -> Client {
    Client::new(&ca.root(), &issued.crt, &issued.key, true)
}

/// A client for `issued` that always makes a full handshake.
pub(crate) fn full(ca: &CaServer, issued: &Issued) -> Client {
    Client::new(&ca.root(), &issued.crt, &issued.key, false)
}

/// Requests every 200 ms on new connections until the gate refuses one in
/// TLS; returns the time it took and the error. Panics after `limit`.
pub(crate) fn until_refused(
    client: &Client,
    gate: &Gate,
    limit: Duration,
) -> (Duration, std::io::Error) {
    let start = Instant::now();
    // Only a TLS refusal (rustls reports it as InvalidData) ends the wait:
    // a connection that times out or is cut on a loaded machine says
    // nothing about revocation, so it is noted and the client tries again.
    let mut transient = Vec::new();
    loop {
        match client.get_once(gate.addr) {
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                return (start.elapsed(), e);
            }
            Err(e) => transient.push(format!("{:?}: {e}", start.elapsed())),
            Ok(status) => assert_eq!(status, 200),
        }
        assert!(
            start.elapsed() < limit,
            "not refused by TLS within {limit:?}; other errors: {transient:?}\n{}",
            gate.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Writes `bytes` to `path` by rename, as a CRL publisher would.
pub(crate) fn replace_file(path: &Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

const SIGN_CRL: &str = r#"
import sys, datetime
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
cert = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
key = serialization.load_pem_private_key(open(sys.argv[2], "rb").read(), None)
number, back, ahead = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
now = datetime.datetime.now(datetime.timezone.utc)
b = (x509.CertificateRevocationListBuilder()
     .issuer_name(cert.subject)
     .last_update(now - datetime.timedelta(seconds=back))
     .next_update(now + datetime.timedelta(seconds=ahead))
     .add_extension(x509.CRLNumber(number), critical=False)
     .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False))
for serial in sys.argv[6:]:
    b = b.add_revoked_certificate(x509.RevokedCertificateBuilder()
        .serial_number(int(serial, 16)).revocation_date(now).build())
sys.stdout.buffer.write(b.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER))
"#;

/// A DER CRL signed by `issuer_cert`/`issuer_key` (PEM files) with Python's
/// `cryptography`: CRL number `number`, thisUpdate `back` seconds ago,
/// nextUpdate in `ahead` seconds (negative: past), listing `serials` (hex).
pub(crate) fn python_crl(
    issuer_cert: &str,
    issuer_key: &str,
    number: u64,
    back: i64,
    ahead: i64,
    serials: &[&str],
) -> Vec<u8> {
    let out = Command::new("python3")
        .args(["-c", SIGN_CRL, issuer_cert, issuer_key])
        .arg(number.to_string())
        .arg(back.to_string())
        .arg(ahead.to_string())
        .args(serials)
        .output()
        .expect("python3 runs");
    assert!(out.status.success(), "python CRL: {}", out.stderr_text());
    out.stdout
}
