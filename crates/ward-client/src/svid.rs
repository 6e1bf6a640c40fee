//! One X.509-SVID: certificate chain, private key and trust bundle, checked
//! before anything uses it.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use ward_pki::verify::{VerifyOptions, verify};
use ward_pki::{Fingerprint, Serial, SpiffeId};
use x509_parser::prelude::{FromDer, X509Certificate};
use zeroize::Zeroizing;

use crate::ClientError;

/// A workload identity ready for use: the chain verifies against the bundle,
/// the key belongs to the leaf, the leaf carries exactly one SPIFFE ID.
///
/// `Debug` shows the SPIFFE ID, serial and expiry, never the key.
pub struct Svid {
    spiffe_id: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: Zeroizing<Vec<u8>>,
    bundle: Vec<CertificateDer<'static>>,
    serial: Serial,
    not_before: SystemTime,
    not_after: SystemTime,
    received_at: SystemTime,
    certified: Arc<CertifiedKey>,
}

fn system_time(unix: i64) -> SystemTime {
    match u64::try_from(unix) {
        Ok(secs) => UNIX_EPOCH + Duration::from_secs(secs),
        Err(_) => UNIX_EPOCH,
    }
}

impl Svid {
    /// Checks and assembles an identity received at `now`: `chain` is leaf
    /// first, `key_pkcs8` the leaf's PKCS#8 DER key, `bundle` the roots of
    /// the trust domain.
    pub fn new(
        chain: Vec<CertificateDer<'static>>,
        key_pkcs8: Zeroizing<Vec<u8>>,
        bundle: Vec<CertificateDer<'static>>,
        now: SystemTime,
    ) -> Result<Self, ClientError> {
        let leaf = chain
            .first()
            .ok_or_else(|| ClientError::Identity("the certificate chain is empty".into()))?;
        if bundle.is_empty() {
            return Err(ClientError::Identity("the trust bundle is empty".into()));
        }
        let (_, cert) = X509Certificate::from_der(leaf)
            .map_err(|e| ClientError::Identity(format!("unreadable leaf certificate: {e}")))?;
        let serial = Serial::from_be_bytes(cert.raw_serial())
            .map_err(|e| ClientError::Identity(format!("leaf serial: {e}")))?;
        let not_before = system_time(cert.validity().not_before.timestamp());
        let not_after = system_time(cert.validity().not_after.timestamp());
        let unix_now =
            UnixTime::since_unix_epoch(now.duration_since(UNIX_EPOCH).unwrap_or_default());
        let verified = verify(
            &chain,
            &bundle,
            &VerifyOptions {
                purpose: None,
                name: None,
                spiffe_id: None,
                now: unix_now,
            },
        )
        .map_err(|e| ClientError::Identity(format!("the chain does not verify: {e}")))?;
        let spiffe_id = verified.spiffe_id.ok_or_else(|| {
            ClientError::Identity("the certificate carries no single SPIFFE ID".into())
        })?;
        let certified = ward_tls::credentials::certified_key(
            chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pkcs8.to_vec())),
        )
        .map_err(|e| ClientError::Identity(e.to_string()))?;
        Ok(Svid {
            spiffe_id,
            chain,
            key: key_pkcs8,
            bundle,
            serial,
            not_before,
            not_after,
            received_at: now,
            certified: Arc::new(certified),
        })
    }

    /// The SPIFFE ID.
    pub fn spiffe_id(&self) -> &SpiffeId {
        &self.spiffe_id
    }

    /// Certificate chain, leaf first, then intermediates.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    /// The leaf certificate.
    pub fn leaf(&self) -> &CertificateDer<'static> {
        &self.chain[0]
    }

    /// The trust bundle (roots) to verify peers with.
    pub fn bundle(&self) -> &[CertificateDer<'static>] {
        &self.bundle
    }

    /// The leaf's serial number.
    pub fn serial(&self) -> &Serial {
        &self.serial
    }

    /// SHA-256 of the leaf DER.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_der(self.leaf())
    }

    /// Start of validity as written in the certificate (the CA backdates it
    /// to absorb clock skew).
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of validity.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// When this process received it.
    pub fn received_at(&self) -> SystemTime {
        self.received_at
    }

    /// Whether it is past its notAfter at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }

    /// The private key, PKCS#8 DER (for files and the Workload API only).
    pub fn key_pkcs8_der(&self) -> &[u8] {
        &self.key
    }

    /// The private key for rustls or a [`crate::CaClient`] identity.
    pub fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.to_vec()))
    }

    /// The chain and key paired for rustls.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.certified.clone()
    }

    /// The chain as PEM, leaf first.
    pub fn chain_pem(&self) -> String {
        ward_pki::pem::certs_to_pem(self.chain.iter().map(|c| c.as_ref()))
    }

    /// The bundle as PEM.
    pub fn bundle_pem(&self) -> String {
        ward_pki::pem::certs_to_pem(self.bundle.iter().map(|c| c.as_ref()))
    }

    /// The private key as PKCS#8 PEM, wiped on drop.
    pub fn key_pem(&self) -> Zeroizing<String> {
        use base64::Engine as _;
        let b64 = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&*self.key));
        let mut pem = String::with_capacity(b64.len() + 80);
        pem.push_str("-----BEGIN PRIVATE KEY-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(line).unwrap_or_default());
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Zeroizing::new(pem)
    }

    /// The chain as the Workload API carries it: DER certificates concatenated.
    pub fn chain_der_concat(&self) -> Vec<u8> {
        self.chain.iter().flat_map(|c| c.iter().copied()).collect()
    }

    /// The bundle as DER certificates concatenated.
    pub fn bundle_der_concat(&self) -> Vec<u8> {
        self.bundle.iter().flat_map(|c| c.iter().copied()).collect()
    }
}

impl fmt::Debug for Svid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Svid")
            .field("spiffe_id", &self.spiffe_id.as_str())
            .field("serial", &self.serial)
            .field("not_after", &self.not_after)
            .field("chain_len", &self.chain.len())
            .field("key", &"[redacted]")
            .finish()
    }
}

/// Splits concatenated DER certificates (as the Workload API sends them).
pub(crate) fn split_der_certs(
    mut bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let (rest, _) = X509Certificate::from_der(bytes)
            .map_err(|e| ClientError::WorkloadApi(format!("malformed DER certificate: {e}")))?;
        let used = bytes.len() - rest.len();
        out.push(CertificateDer::from(bytes[..used].to_vec()));
        bytes = rest;
    }
    Ok(out)
}
