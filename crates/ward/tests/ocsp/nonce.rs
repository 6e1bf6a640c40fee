//! OCSP nonces of every length the docs promise (up to 64 octets) are
//! echoed, judged by Python's `cryptography`: it builds the request with
//! an `OCSPNonce` extension and reads the nonce back from the answer.

use std::process::Command;

use super::setup::{configure, issue};
use crate::common::OutputText;
use crate::dual::DualServer;
use crate::harness::{Backend, Ca, Client};

/// Builds a request about CERT (issued by ISSUER) with an N-octet nonce,
/// POSTs it to URL and prints the nonce the answer carries, in hex, or
/// "none".
const SCRIPT: &str = r#"
import os, sys, urllib.request
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509 import ocsp

cert_path, issuer_path, url, n = sys.argv[1:5]
cert = x509.load_pem_x509_certificate(open(cert_path, 'rb').read())
issuer = x509.load_pem_x509_certificate(open(issuer_path, 'rb').read())
nonce = os.urandom(int(n))
req = (ocsp.OCSPRequestBuilder()
       .add_certificate(cert, issuer, hashes.SHA1())
       .add_extension(x509.OCSPNonce(nonce), critical=False)
       .build())
body = req.public_bytes(serialization.Encoding.DER)
http = urllib.request.Request(url, data=body, headers={'Content-Type': 'application/ocsp-request'})
resp = ocsp.load_der_ocsp_response(urllib.request.urlopen(http, timeout=10).read())
assert resp.response_status == ocsp.OCSPResponseStatus.SUCCESSFUL, resp.response_status
try:
    echoed = resp.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
except x509.ExtensionNotFound:
    print('none')
    sys.exit(0)
assert echoed == nonce, (echoed.hex(), nonce.hex())
print(echoed.hex())
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nonces_up_to_64_octets_are_echoed() {
    let Some(ca) = Ca::new(Backend::Sqlite) else {
        return;
    };
    configure(&ca);
    let server = DualServer::start(&ca);
    let client = Client::new(server.https, &ca.root(), None);
    let url = format!("http://{}/ocsp", server.http);
    let leaf = issue(&ca, &client, "nonce").await;
    for (len, echoed) in [
        (1, true),
        (16, true),
        (32, true),
        (63, true),
        (64, true),
        (65, false),
    ] {
        let out = Command::new("python3")
            .arg("-c")
            .arg(SCRIPT)
            .arg(&leaf.cert)
            .arg(ca.file("intermediate.crt"))
            .arg(&url)
            .arg(len.to_string())
            .output()
            .expect("python3 runs");
        assert!(
            out.status.success(),
            "{len}: {}{}",
            out.stdout_text(),
            out.stderr_text()
        );
        let printed = out.stdout_text();
        assert_eq!(
            printed.trim() != "none",
            echoed,
            "a {len}-octet nonce: {printed}"
        );
        if echoed {
            assert_eq!(printed.trim().len(), len * 2, "{printed}");
        }
    }
}
