//! A minimal ACME client written for these tests: it signs whatever it is
//! told to, including what a real client never would (wrong algorithms,
//! foreign URLs, replayed nonces), and reads raw HTTP answers so every
//! header can be checked.

use std::collections::HashMap;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::harness::Client;

/// base64url without padding.
pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An HTTP answer.
#[derive(Debug)]
pub(crate) struct Answer {
    /// Status code.
    pub(crate) status: u16,
    /// Headers, lowercased names (last value wins).
    pub(crate) headers: HashMap<String, String>,
    /// Body text.
    pub(crate) body: String,
}

impl Answer {
    /// The body as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    /// Asserts a problem document of `kind` with `status`.
    pub(crate) fn problem(&self, status: u16, kind: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(
            self.headers.get("content-type").map(String::as_str),
            Some("application/problem+json"),
            "{self:?}"
        );
        assert_eq!(
            self.json()["type"],
            format!("urn:ietf:params:acme:error:{kind}"),
            "{self:?}"
        );
    }
}

/// An account key and (once registered) its URL.
pub(crate) struct Acct {
    /// The P-256 key.
    pub(crate) key: EcdsaKeyPair,
    /// The account URL (kid).
    pub(crate) kid: Option<String>,
}

impl Acct {
    /// A fresh P-256 key.
    pub(crate) fn new() -> Acct {
        Acct {
            key: EcdsaKeyPair::generate(&signature::ECDSA_P256_SHA256_FIXED_SIGNING).unwrap(),
            kid: None,
        }
    }

    /// The public key as a JWK.
    pub(crate) fn jwk(&self) -> Value {
        let p = self.key.public_key().as_ref();
        json!({"kty": "EC", "crv": "P-256", "x": b64(&p[1..33]), "y": b64(&p[33..])})
    }

    /// RFC 7638 thumbprint.
    pub(crate) fn thumbprint(&self) -> String {
        let jwk = self.jwk();
        let canonical = format!(
            r#"{{"crv":"P-256","kty":"EC","x":{},"y":{}}}"#,
            jwk["x"], jwk["y"]
        );
        b64(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes()).as_ref())
    }

    /// A flattened JWS of `payload` (`None`: POST-as-GET) under `header`.
    pub(crate) fn sign(&self, header: &Value, payload: Option<&Value>) -> String {
        let protected = b64(header.to_string().as_bytes());
        let payload = payload
            .map(|p| b64(p.to_string().as_bytes()))
            .unwrap_or_default();
        let sig = self
            .key
            .sign(
                &SystemRandom::new(),
                format!("{protected}.{payload}").as_bytes(),
            )
            .unwrap();
        json!({"protected": protected, "payload": payload, "signature": b64(sig.as_ref())})
            .to_string()
    }

    /// The usual header: kid when registered, else jwk.
    pub(crate) fn header(&self, url: &str, nonce: &str) -> Value {
        match &self.kid {
            Some(kid) => json!({"alg": "ES256", "nonce": nonce, "url": url, "kid": kid}),
            None => json!({"alg": "ES256", "nonce": nonce, "url": url, "jwk": self.jwk()}),
        }
    }
}

/// The directory of provisioner `prov` as this client addresses it: the
/// harness connects to 127.0.0.1 but sends `Host: localhost`, so URLs are
/// `https://localhost/acme/PROV/…`.
pub(crate) struct Dir {
    /// The HTTPS client.
    pub(crate) client: Client,
    /// The provisioner.
    pub(crate) prov: String,
}

impl Dir {
    /// `https://localhost/acme/PROV/rest`.
    pub(crate) fn url(&self, rest: &str) -> String {
        format!("https://localhost/acme/{}/{rest}", self.prov)
    }

    /// One raw HTTP/1.1 exchange.
    pub(crate) async fn raw(&self, method: &str, url: &str, ctype: &str, body: &[u8]) -> Answer {
        let path = url.strip_prefix("https://localhost").unwrap_or(url);
        let mut req = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
             Content-Type: {ctype}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        let text = self.client.raw_http1(&req).await;
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let mut lines = head.lines();
        let status = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {text}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect::<HashMap<_, _>>();
        let body = if headers
            .get("transfer-encoding")
            .is_some_and(|v| v == "chunked")
        {
            dechunk(body)
        } else {
            body.to_owned()
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A fresh nonce (HEAD newNonce).
    pub(crate) async fn nonce(&self) -> String {
        let a = self
            .raw("HEAD", &self.url("new-nonce"), "text/plain", b"")
            .await;
        assert_eq!(a.status, 200, "{a:?}");
        a.headers["replay-nonce"].clone()
    }

    /// POSTs a JWS body.
    pub(crate) async fn post_jws(&self, url: &str, jws: &str) -> Answer {
        self.raw("POST", url, "application/jose+json", jws.as_bytes())
            .await
    }

    /// POSTs `payload` signed by `acct` with a fresh nonce.
    pub(crate) async fn post(&self, acct: &Acct, url: &str, payload: Option<&Value>) -> Answer {
        let nonce = self.nonce().await;
        let jws = acct.sign(&acct.header(url, &nonce), payload);
        self.post_jws(url, &jws).await
    }

    /// Registers `acct` (newAccount) and records its URL.
    pub(crate) async fn register(&self, acct: &mut Acct) -> Answer {
        let a = self
            .post(
                acct,
                &self.url("new-account"),
                Some(&json!({"termsOfServiceAgreed": true})),
            )
            .await;
        assert_eq!(a.status, 201, "{a:?}");
        acct.kid = Some(a.headers["location"].clone());
        a
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

impl Acct {
    /// A P-256 key with its PKCS#8 (to make a CSR with the same key).
    pub(crate) fn with_pkcs8() -> (Acct, Vec<u8>) {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .unwrap();
        let key =
            EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref())
                .unwrap();
        (Acct { key, kid: None }, pkcs8.as_ref().to_vec())
    }
}

/// A DER CSR for `dns` names and `ips`, signed with the PKCS#8 key, with
/// an empty subject.
pub(crate) fn csr(pkcs8: &[u8], dns: &[&str], ips: &[&str]) -> Vec<u8> {
    let key = rcgen::KeyPair::try_from(pkcs8).unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = dns
        .iter()
        .map(|d| rcgen::SanType::DnsName((*d).try_into().unwrap()))
        .chain(
            ips.iter()
                .map(|i| rcgen::SanType::IpAddress(i.parse().unwrap())),
        )
        .collect();
    params.serialize_request(&key).unwrap().der().to_vec()
}
