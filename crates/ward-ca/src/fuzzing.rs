//! Entry points for the fuzz targets in `fuzz/` at the repository root.
//!
//! Not an API: hidden from the documentation and used by nothing but the
//! fuzz targets. Each function runs the code the CA runs on untrusted input
//! (request bodies, headers, CSRs, OCSP requests), stopping where the real
//! path would authenticate a caller or read storage. Parsers that are public
//! anyway ([`crate::token::TokenSecret::parse`], [`crate::CaConfig::parse`],
//! [`ward_pki::cidr::Cidr`]) are called by the targets directly.

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use ward_pki::issue::Issuer;
use ward_pki::ocsp::{self, IssuerId, Query, Signer, Status};
use ward_pki::{KeyType, PrivateKey, Serial};

use crate::csr::{CheckedCsr, parse_csr};
pub use crate::http::fuzz::{JsonRoute, bearer_token, json_body, ocsp_get_request};
use crate::ocsp::Answer;

/// Parses a PEM CSR as `/v1/sign` does, then checks the names it asks for
/// against a token bound to `spiffe_id` and `dns` (the binding check of
/// [`crate::authority::Authority::sign_for_token`]).
pub fn csr(pem: &str, spiffe_id: &str, dns: &[String]) -> Result<CheckedCsr, String> {
    let checked = parse_csr(pem).map_err(|e| e.to_string())?;
    let now = OffsetDateTime::UNIX_EPOCH;
    let spiffe_id = spiffe_id
        .parse()
        .map_err(|e: ward_pki::Error| e.to_string())?;
    let token = ward_store::Token {
        created: ward_store::NewToken {
            id: "tok_0000000000000000".into(),
            hash: [0; 32],
            spiffe_id,
            dns_names: dns.to_vec(),
            profile: ward_pki::issue::Profile::Peer,
            cert_ttl_secs: 3600,
            expires_at: now,
            max_uses: 1,
            allowed_cidrs: Vec::new(),
            created_at: now,
            common_name: None,
        },
        uses: 0,
        revoked_at: None,
        revoked_with_certs: false,
    };
    crate::authority::check_csr_for_token(&token, &checked).map_err(|e| e.to_string())?;
    Ok(checked)
}

/// The OCSP responder's decoding and answering without its store: the
/// status of a serial under the intermediate comes from the serial itself
/// (even: good, odd: revoked) instead of a lookup.
pub struct OcspResponder {
    signer: Signer,
    intermediate: IssuerId,
    intermediate_serial: Serial,
    root: IssuerId,
    validity: Duration,
}

impl std::fmt::Debug for OcspResponder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OcspResponder").finish_non_exhaustive()
    }
}

impl OcspResponder {
    /// A responder for the intermediate `intermediate_der` (key
    /// `intermediate_key_pem`) under `root_der`, with a delegated responder
    /// certificate as `ward ca serve` makes one.
    pub fn new(
        root_der: &[u8],
        intermediate_der: &[u8],
        intermediate_key_pem: &str,
        now: OffsetDateTime,
    ) -> Result<Self, crate::Error> {
        let int_der = CertificateDer::from(intermediate_der.to_vec());
        let key = PrivateKey::from_pem(intermediate_key_pem)
            .map_err(crate::Error::pki("reading the intermediate key"))?;
        let issuer =
            Issuer::new(int_der.clone(), key).map_err(crate::Error::pki("the intermediate"))?;
        let responder_key = KeyType::EcdsaP256
            .generate()
            .map_err(crate::Error::pki("a responder key"))?;
        let issued = ocsp::issue_responder(
            &issuer,
            &responder_key,
            "fuzz",
            "OCSP Responder",
            crate::ocsp::RESPONDER_TTL,
            now,
        )
        .map_err(crate::Error::pki("the responder certificate"))?;
        let signer = Signer::new(&issued.der, responder_key, &[issued.der.clone(), int_der])
            .map_err(crate::Error::pki("the responder"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(intermediate_der)
            .map_err(|e| crate::Error::Config(format!("reading the intermediate: {e}")))?;
        Ok(OcspResponder {
            signer,
            intermediate: IssuerId::from_cert_der(intermediate_der)
                .map_err(crate::Error::pki("the intermediate"))?,
            intermediate_serial: Serial::from_be_bytes(cert.raw_serial())
                .map_err(crate::Error::pki("the intermediate's serial"))?,
            root: IssuerId::from_cert_der(root_der).map_err(crate::Error::pki("the root"))?,
            validity: Duration::from_secs(300),
        })
    }

    /// Answers `GET /ocsp/{encoded}`.
    pub fn answer_get(&self, encoded: &str, now: OffsetDateTime) -> Answer {
        match ocsp_get_request(encoded) {
            Some(der) => self.answer(&der, now),
            None => Answer::refused(ocsp::Refusal::MalformedRequest),
        }
    }

    /// Answers a DER OCSPRequest (`POST /ocsp`).
    pub fn answer(&self, der: &[u8], now: OffsetDateTime) -> Answer {
        let Ok(request) = ocsp::parse_request(der) else {
            return Answer::refused(ocsp::Refusal::MalformedRequest);
        };
        let answers: Vec<(Query, Status)> = request
            .queries
            .iter()
            .map(|q| (q.clone(), self.status(q, now)))
            .collect();
        crate::ocsp::sign_answer(&self.signer, &request, &answers, now, self.validity)
    }

    fn status(&self, q: &Query, now: OffsetDateTime) -> Status {
        let Some(serial) = q.serial() else {
            return Status::Unknown;
        };
        if q.is_about(&self.intermediate) {
            let odd = serial
                .to_string()
                .ends_with(['1', '3', '5', '7', '9', 'b', 'd', 'f']);
            return if odd {
                Status::Revoked {
                    at: now,
                    reason: Some(1),
                }
            } else {
                Status::Good
            };
        }
        if q.is_about(&self.root) && serial == self.intermediate_serial {
            return Status::Good;
        }
        Status::Unknown
    }
}

#[cfg(test)]
mod tests {
    //! The entry points must keep doing what the server does: these pin
    //! their answers on ordinary inputs, so a drift shows here first.

    use std::process::Command;

    use base64::Engine as _;
    use ward_pki::ocsp::{IssuerId, Query, build_request};

    use super::*;
    use crate::dir::{CaDir, InitOptions};

    fn openssl_csr(dir: &std::path::Path, san: &str) -> String {
        let out = Command::new("openssl")
            .args(["req", "-new", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:P-256", "-nodes", "-subj", "/"])
            .arg("-keyout")
            .arg(dir.join("k.pem"))
            .arg("-out")
            .arg(dir.join("r.csr"))
            .args(["-addext", &format!("subjectAltName={san}")])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(dir.join("r.csr")).unwrap()
    }

    #[test]
    fn csr_checks_the_names_against_the_binding() {
        let tmp = tempfile::tempdir().unwrap();
        let dns = ["localhost".to_owned()];
        let id = "spiffe://example.org/fuzz";
        let good = openssl_csr(tmp.path(), &format!("URI:{id},DNS:localhost"));
        assert!(csr(&good, id, &dns).is_ok());
        let outside = openssl_csr(tmp.path(), &format!("URI:{id},DNS:evil.example"));
        let err = csr(&outside, id, &dns).unwrap_err();
        assert!(err.contains("outside the token's binding"), "{err}");
        assert!(csr("not a csr", id, &dns).unwrap_err().contains("PEM"));
    }

    #[test]
    fn json_bodies_are_refused_as_the_handlers_refuse_them() {
        let code = |route, body: &str| json_body(route, body.as_bytes()).err().map(|e| e.code);
        assert_eq!(code(JsonRoute::Sign, "{}"), Some("missing_csr"));
        assert_eq!(
            code(JsonRoute::Sign, r#"{"csr":"x","x":1}"#),
            Some("malformed_json")
        );
        assert_eq!(
            code(JsonRoute::Issue, r#"{"key_type":"rsa-1024"}"#),
            Some("bad_key_type")
        );
        assert_eq!(code(JsonRoute::Issue, r#"{"token":"t"}"#), None);
        assert_eq!(
            code(JsonRoute::Seed, r#"{"bootstrap_token":""}"#),
            Some("missing_bootstrap_token")
        );
        assert_eq!(code(JsonRoute::Renew, " "), None);
        assert_eq!(
            code(
                JsonRoute::CreateToken,
                r#"{"spiffe_id":"spiffe://example.org/a","cert_ttl":"soon"}"#
            ),
            Some("bad_request")
        );
        assert_eq!(
            code(JsonRoute::Revoke, r#"{"serial":"zz"}"#),
            Some("bad_serial")
        );
        assert_eq!(
            code(
                JsonRoute::Revoke,
                r#"{"serial":"0a","reason":"certificateHold"}"#
            ),
            Some("bad_reason")
        );
        assert_eq!(
            code(
                JsonRoute::Revoke,
                r#"{"serial":"0a","reason":"superseded"}"#
            ),
            None
        );
        assert_eq!(bearer_token(b"Bearer  wdt_x "), Some("wdt_x".to_owned()));
        assert_eq!(bearer_token(b"Basic x"), None);
        assert_eq!(bearer_token(b"Bearer \x01"), None);
    }

    #[test]
    fn ocsp_answers_like_the_responder() {
        let tmp = tempfile::tempdir().unwrap();
        let ca = CaDir::new(tmp.path().join("ca"));
        let now = OffsetDateTime::now_utc();
        ca.init(
            &InitOptions {
                trust_domain: "example.org".parse().unwrap(),
                name: "Test".into(),
                key_type: KeyType::EcdsaP256,
                root_validity: Duration::from_secs(10 * 365 * 86_400),
                intermediate_validity: Duration::from_secs(365 * 86_400),
                offline_root: None,
                permitted_dns: Vec::new(),
                database: None,
                pkcs11: None,
            },
            now,
        )
        .unwrap();
        let int_der = ca.intermediate_cert().unwrap();
        let root_der = ca.roots().unwrap().remove(0);
        let key = std::fs::read_to_string(tmp.path().join("ca/intermediate.key")).unwrap();
        let responder = OcspResponder::new(&root_der, &int_der, &key, now).unwrap();
        let issuer = IssuerId::from_cert_der(&int_der).unwrap();
        let ask = |serial: &str| {
            let q = Query::new(&issuer, &serial.parse().unwrap(), false).unwrap();
            build_request(&[q], Some(b"0123456789abcdef")).unwrap()
        };
        let good = responder.answer(&ask("0a"), now);
        assert!(good.successful);
        assert_eq!(good.result, "good");
        assert_eq!(responder.answer(&ask("0b"), now).result, "revoked");
        let b64 = base64::engine::general_purpose::STANDARD.encode(ask("0b"));
        assert_eq!(responder.answer_get(&b64, now).result, "revoked");
        assert_eq!(
            responder.answer(b"\x30\x00", now).result,
            "malformed_request"
        );
        assert_eq!(responder.answer_get("%zz", now).result, "malformed_request");
    }
}
