//! Issuance: for a token (a CSR's key or one generated here), renewal of
//! an online certificate, the CA's own server certificate, offline
//! certificates, and recording certificates signed outside the authority.

use std::net::IpAddr;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use ward_pki::issue::{LeafRequest, MIN_TTL, Profile};
use ward_pki::{Fingerprint, KeyType, PrivateKey, Serial, SpiffeId, pem};
use ward_store::{NewCertificate, Origin, Store, StoreError, Token};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::binding::Binding;
use super::error::pki_err;
use super::{Authority, AuthorityError, store_err};
use crate::csr::CheckedCsr;

/// A certificate just issued and recorded.
#[derive(Clone, Debug)]
pub struct Issuance {
    /// Serial number.
    pub serial: Serial,
    /// The identity in the certificate.
    pub spiffe_id: SpiffeId,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The leaf certificate, DER.
    pub leaf_der: CertificateDer<'static>,
    /// The leaf as PEM.
    pub certificate_pem: String,
    /// Leaf and intermediate, PEM.
    pub chain_pem: String,
    /// The trusted roots, PEM.
    pub ca_bundle_pem: String,
    /// Intermediate and roots, PEM (the seed-compatible `ca_chain`).
    pub ca_chain_pem: String,
    /// The token it was issued from.
    pub token_id: Option<String>,
}

impl Authority {
    /// Signs the CSR's key for the token's binding and consumes one use.
    pub async fn sign_for_token(
        &self,
        token: &Token,
        csr: &CheckedCsr,
        now: OffsetDateTime,
    ) -> Result<Issuance, AuthorityError> {
        let mut binding = Binding::of_token(token)?;
        binding.check_request(csr)?;
        // The CN goes in only when the CSR asks for it (and is allowed to).
        binding.common_name = csr.requested.common_names.first().cloned();
        self.issue_for_token(token, &binding, &csr.spki_der, now)
            .await
    }

    /// Generates a key server-side (for runtimes that cannot), signs it for
    /// the token's binding and consumes one use. The key is returned, never stored.
    pub async fn issue_keypair_for_token(
        &self,
        token: &Token,
        key_type: KeyType,
        now: OffsetDateTime,
    ) -> Result<(Issuance, PrivateKey), AuthorityError> {
        let mut binding = Binding::of_token(token)?;
        binding.common_name = binding.bound_common_name.clone();
        // RSA keys take up to seconds of CPU: not on an async worker.
        let key = crate::cpu::generate(key_type)
            .await
            .map_err(AuthorityError::Internal)?;
        let issuance = self
            .issue_for_token(token, &binding, &key.public_key_der(), now)
            .await?;
        Ok((issuance, key))
    }

    async fn issue_for_token(
        &self,
        token: &Token,
        binding: &Binding,
        spki_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<Issuance, AuthorityError> {
        let ttl =
            Duration::from_secs(token.cert_ttl_secs.max(0).unsigned_abs()).min(self.policy.max_ttl);
        let (issuance, record) = self.sign(
            binding,
            spki_der,
            ttl,
            Some(token.id.clone()),
            None,
            Origin::Token,
            now,
        )?;
        self.store
            .issue_with_token(&token.id, now, &record)
            .await
            .map_err(|e| {
                if matches!(
                    e,
                    StoreError::TokenNotFound
                        | StoreError::TokenRevoked
                        | StoreError::TokenExpired
                        | StoreError::TokenExhausted
                ) {
                    // The cached copy was stale: read it afresh next time.
                    self.tokens.evict(&token.id);
                }
                store_err(e).for_token(&token.id)
            })?;
        if token.max_uses != 0 {
            // Its use count matters: later requests must see this use.
            self.tokens.evict(&token.id);
        }
        Ok(issuance)
    }

    /// Renews the certificate a client authenticated with: same identity,
    /// fresh validity, the CSR's key if one is sent (else the same key).
    /// `chain` was already validated against the roots by the TLS layer.
    pub async fn renew(
        &self,
        chain: &[CertificateDer<'_>],
        csr: Option<&CheckedCsr>,
        now: OffsetDateTime,
    ) -> Result<Issuance, AuthorityError> {
        let leaf = chain.first().ok_or_else(|| {
            AuthorityError::unauthenticated(
                "no_client_certificate",
                "renewal needs a client certificate",
            )
        })?;
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|_| {
            AuthorityError::unauthenticated("bad_certificate", "unreadable client certificate")
        })?;
        let (serial, record, token) = self.presented_certificate(leaf, &cert, now).await?;
        // The lifetime the token granted; without a token, the presented
        // certificate's own (notBefore may have been clamped to the
        // issuer's start, so this can come out shorter than asked).
        let granted = token
            .and_then(|t| u64::try_from(t.cert_ttl_secs).ok())
            .map(Duration::from_secs);
        let mut binding = Binding::of_certificate(&cert, &self.policy.trust_domain)?;
        let spki = match csr {
            Some(csr) => {
                binding.check_request(csr)?;
                csr.spki_der.clone()
            }
            None => cert.public_key().raw.to_vec(),
        };
        // A renewal keeps the identity as it is, CN included; a CSR may ask
        // for a CN it is allowed (checked above).
        binding.common_name = csr
            .and_then(|c| c.requested.common_names.first().cloned())
            .or_else(|| binding.bound_common_name.clone());
        let lifetime = (record.not_after - record.not_before)
            .whole_seconds()
            .max(0)
            .unsigned_abs();
        let ttl = granted
            .unwrap_or_else(|| {
                Duration::from_secs(lifetime).saturating_sub(ward_pki::issue::NOT_BEFORE_SKEW)
            })
            .max(MIN_TTL)
            .min(self.policy.max_ttl);
        let (issuance, new) = self.sign(
            &binding,
            &spki,
            ttl,
            record.token_id.clone(),
            Some(serial),
            Origin::Renewal,
            now,
        )?;
        self.store
            .record_certificate(&new)
            .await
            .map_err(store_err)?;
        Ok(issuance)
    }

    /// The record of a client certificate presented over mTLS (its chain
    /// already validated by the TLS layer), and of the token it came from:
    /// refused unless issued online here, unrevoked and unexpired at `now`.
    pub(super) async fn presented_certificate(
        &self,
        leaf: &CertificateDer<'_>,
        cert: &X509Certificate<'_>,
        now: OffsetDateTime,
    ) -> Result<(Serial, ward_store::Certificate, Option<Token>), AuthorityError> {
        let serial = Serial::from_be_bytes(cert.raw_serial())
            .map_err(|_| AuthorityError::unauthenticated("bad_certificate", "bad serial number"))?;
        let record = self
            .store
            .certificate(&serial)
            .await
            .map_err(store_err)?
            .ok_or_else(|| {
                AuthorityError::unauthenticated(
                    "unknown_certificate",
                    "this certificate was not issued online by this CA",
                )
            })?;
        if record.der != leaf.as_ref() {
            return Err(AuthorityError::unauthenticated(
                "unknown_certificate",
                "this certificate was not issued online by this CA",
            ));
        }
        // Offline, admin and the CA's own certificates are recorded (so they
        // can be revoked) but renew only the way they were made.
        if !matches!(record.origin, Origin::Token | Origin::Renewal) {
            return Err(AuthorityError::unauthenticated(
                "unknown_certificate",
                format!(
                    "this certificate was not issued online by this CA (origin {}); \
                     only online certificates renew",
                    record.origin
                ),
            ));
        }
        if record.revoked_at.is_some() {
            return Err(AuthorityError::unauthenticated(
                "certificate_revoked",
                "certificate revoked",
            ));
        }
        if record.not_after <= now {
            return Err(AuthorityError::unauthenticated(
                "certificate_expired",
                "certificate expired",
            ));
        }
        let mut token = None;
        if let Some(token_id) = &record.token_id {
            token = self.store.token(token_id).await.map_err(store_err)?;
            if token.as_ref().is_some_and(|t| t.revoked_with_certs) {
                return Err(AuthorityError::unauthenticated(
                    "token_revoked",
                    "the token this certificate came from was revoked with its certificates",
                ));
            }
        }
        Ok((serial, record, token))
    }

    /// Issues and records a server certificate for the CA's own listener.
    pub async fn issue_server_identity(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<(Issuance, PrivateKey), AuthorityError> {
        let binding = Binding {
            spiffe_id: self
                .policy
                .trust_domain
                .id(crate::serve::ENDPOINT_PATH)
                .map_err(|e| AuthorityError::Internal(e.to_string()))?,
            dns_names: dns_names.to_vec(),
            ip_addresses: ips.to_vec(),
            profile: Profile::Server,
            bound_common_name: None,
            common_name: None,
        };
        // ECDSA P-256, except under an ML-DSA intermediate: then the CA's
        // own listener authenticates with ML-DSA too, or a client's
        // connection to it would have no post-quantum authentication.
        let key_type = x509_parser::parse_x509_certificate(&self.intermediate_der())
            .ok()
            .and_then(|(_, c)| {
                ward_pki::PublicKeyKind::from_spki(c.public_key())
                    .key_type()
                    .ok()
            })
            .filter(|k| k.is_post_quantum())
            .unwrap_or(KeyType::EcdsaP256);
        let key = key_type
            .generate()
            .map_err(|e| AuthorityError::Internal(e.to_string()))?;
        let (issuance, record) = self.sign(
            &binding,
            &key.public_key_der(),
            ttl,
            None,
            None,
            Origin::CaServer,
            now,
        )?;
        self.store
            .record_certificate(&record)
            .await
            .map_err(store_err)?;
        Ok((issuance, key))
    }

    /// Records a certificate a key of the CA directory signed outside this
    /// authority (the admin identity, an OCSP responder), linted by its
    /// maker. Recording the same certificate again is a no-op; another
    /// certificate under its serial is an error.
    pub async fn record_signed(
        &self,
        der: &[u8],
        origin: Origin,
        now: OffsetDateTime,
    ) -> Result<(), AuthorityError> {
        record_signed(self.store.as_ref(), der, origin, now).await
    }

    /// Issues a certificate offline (`ward cert create`): built from
    /// `request` with this CA's CRL and OCSP URLs, linted with `lint`
    /// (offline certificates may be long-lived), and recorded with origin
    /// `offline` before it is returned.
    pub async fn issue_offline(
        &self,
        spki_der: &[u8],
        mut request: LeafRequest,
        lint: &ward_pki::lint::LintPolicy,
        now: OffsetDateTime,
    ) -> Result<ward_pki::issue::Issued, AuthorityError> {
        let signing = self.signing();
        request.crl_url = self.crl_url_for(&signing.issuer);
        request.ocsp_url = self.ocsp_url.clone();
        let issued = signing
            .issuer
            .sign_leaf(spki_der, &request, now)
            .map_err(pki_err("signing"))?;
        match &signing.pre_issuance {
            Some(bound) => bound.check(&issued.der, lint, now),
            None => ward_pki::lint::pre_issuance(&issued.der, signing.issuer.cert_der(), lint, now),
        }
        .map_err(AuthorityError::Forbidden)?;
        let mut record = record_of(&issued.der, Origin::Offline, now)?;
        record.profile = Some(request.profile.as_str().to_owned());
        self.store
            .record_certificate(&record)
            .await
            .map_err(store_err)?;
        Ok(issued)
    }

    #[allow(clippy::too_many_arguments)] // one call site per origin; a struct would only rename them
    pub(super) fn sign(
        &self,
        binding: &Binding,
        spki_der: &[u8],
        ttl: Duration,
        token_id: Option<String>,
        renewed_from: Option<Serial>,
        origin: Origin,
        now: OffsetDateTime,
    ) -> Result<(Issuance, NewCertificate), AuthorityError> {
        let serial = Serial::random(now).map_err(|e| AuthorityError::Internal(e.to_string()))?;
        let signing = self.signing();
        let request = LeafRequest {
            profile: binding.profile,
            spiffe_id: Some(binding.spiffe_id.clone()),
            dns_names: binding.dns_names.clone(),
            ip_addresses: binding.ip_addresses.clone(),
            common_name: binding.common_name.clone(),
            ttl,
            clamp_to_issuer: true,
            serial: serial.clone(),
            crl_url: self.crl_url_for(&signing.issuer),
            ocsp_url: self.ocsp_url.clone(),
        };
        let issued = crate::cpu::heavy(signing.issuer.is_rsa(), || {
            signing.issuer.sign_leaf(spki_der, &request, now)
        })
        .map_err(pki_err("signing"))?;
        // Pre-issuance lint, the rules of `ward cert lint`: a CA bug must never
        // reach a client. Online paths cap `ttl` at max_ttl; the CA's own
        // server certificate may ask for more.
        let lint = ward_pki::lint::LintPolicy {
            max_workload_lifetime: ttl.max(self.policy.max_ttl),
            ..Default::default()
        };
        match &signing.pre_issuance {
            Some(bound) => bound.check(&issued.der, &lint, now),
            None => {
                ward_pki::lint::pre_issuance(&issued.der, signing.issuer.cert_der(), &lint, now)
            }
        }
        .map_err(AuthorityError::Internal)?;
        let certificate_pem = pem::cert_to_pem(&issued.der);
        let record = NewCertificate {
            serial: serial.clone(),
            spiffe_id: Some(binding.spiffe_id.clone()),
            token_id: token_id.clone(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            der: issued.der.to_vec(),
            fingerprint: Fingerprint::of_der(&issued.der).to_string(),
            issued_at: now,
            renewed_from,
            origin,
            profile: Some(binding.profile.as_str().to_owned()),
        };
        // Read after `signing`: the bundle changes before the signer does,
        // so it always holds the root this chain leads to.
        let roots_pem = self.roots_pem();
        let issuance = Issuance {
            serial,
            spiffe_id: binding.spiffe_id.clone(),
            not_after: issued.not_after,
            chain_pem: format!("{certificate_pem}{}", signing.intermediate_pem),
            certificate_pem,
            ca_bundle_pem: (*roots_pem).clone(),
            ca_chain_pem: format!("{}{}", signing.intermediate_pem, roots_pem),
            leaf_der: issued.der,
            token_id,
        };
        Ok((issuance, record))
    }
}

/// Records a certificate signed with a key of the CA directory outside an
/// [`Authority`] (the admin identity, OCSP responders). Idempotent for the
/// same certificate; another certificate under its serial is an error.
pub async fn record_signed(
    store: &dyn Store,
    der: &[u8],
    origin: Origin,
    now: OffsetDateTime,
) -> Result<(), AuthorityError> {
    let record = record_of(der, origin, now)?;
    match store.record_certificate(&record).await {
        Ok(()) => Ok(()),
        Err(StoreError::DuplicateSerial) => {
            let existing = store.certificate(&record.serial).await.map_err(store_err)?;
            if existing.is_some_and(|c| c.der == record.der) {
                Ok(())
            } else {
                Err(AuthorityError::Internal(format!(
                    "another certificate is recorded under serial {}",
                    record.serial
                )))
            }
        }
        Err(e) => Err(store_err(e)),
    }
}

/// The record of a certificate signed outside [`Authority::sign`].
fn record_of(
    der: &[u8],
    origin: Origin,
    now: OffsetDateTime,
) -> Result<NewCertificate, AuthorityError> {
    let bad = |e: String| AuthorityError::Internal(format!("reading a certificate to record: {e}"));
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let serial = Serial::from_be_bytes(cert.raw_serial()).map_err(|e| bad(e.to_string()))?;
    let spiffe_id = ward_pki::inspect::spiffe_id_of(der).map_err(|e| bad(e.to_string()))?;
    Ok(NewCertificate {
        serial,
        spiffe_id,
        token_id: None,
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        der: der.to_vec(),
        fingerprint: Fingerprint::of_der(der).to_string(),
        issued_at: now,
        renewed_from: None,
        origin,
        // Signed elsewhere (the admin identity, OCSP responders): its
        // maker did not say with which profile.
        profile: None,
    })
}
