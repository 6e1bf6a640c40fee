//! Registration entries and node-scoped issuance (node attestation, issue
//! 24 part 3).
//!
//! An entry maps selectors (what the kernel says about a caller of an
//! agent's Workload API socket) to a SPIFFE ID, for exactly one node agent
//! (`node`, the agent's own SPIFFE ID). A node agent authenticates with
//! its own online certificate (from a token or a renewal) and may obtain
//! SVIDs only for the entries registered for its ID: anything else is 403.
//! Entries without a node do not exist: an entry anyone could serve would
//! let every workload holding a certificate mint any registered identity.
//!
//! SVIDs issued this way are recorded with origin `renewal` (SPEC §10: an
//! online certificate issued to the holder of a still-valid certificate),
//! `renewed_from` naming the agent's certificate and `token_id` the agent's
//! token, so revoking that token with its certificates also revokes the
//! SVIDs the agent obtained. Their lifetime is the agent's own (the token's
//! certificate lifetime), capped by the CA's `max_ttl`.

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use ward_pki::issue::{MIN_TTL, Profile};
use ward_pki::selector::parse_selectors;
use ward_pki::{SpiffeId, TrustDomain};
use ward_store::{Origin, RegistrationEntry};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::binding::Binding;
use super::tokens::check_reserved;
use super::{Authority, AuthorityError, Issuance, store_err};
use crate::csr::CheckedCsr;

/// What `ward entry create` asks for.
#[derive(Clone, Debug)]
pub struct EntrySpec {
    /// The SPIFFE ID a matching workload gets.
    pub spiffe_id: String,
    /// Selectors, as given.
    pub selectors: Vec<String>,
    /// The node agent allowed to serve it.
    pub node: String,
    /// Allow a reserved SPIFFE ID.
    pub allow_reserved: bool,
}

fn member_id(input: &str, td: &TrustDomain, what: &str) -> Result<SpiffeId, AuthorityError> {
    let id: SpiffeId = input
        .parse()
        .map_err(|e: ward_pki::Error| AuthorityError::BadRequest(format!("{what}: {e}")))?;
    if !id.is_member_of(td) {
        return Err(AuthorityError::Forbidden(format!(
            "{what} {id} is outside this CA's trust domain {td}"
        )));
    }
    Ok(id)
}

/// The view of an entry on the wire (admin API, `ward entry list`).
pub fn entry_view(e: &RegistrationEntry) -> ward_api::EntryView {
    ward_api::EntryView {
        id: e.id.clone(),
        spiffe_id: e.spiffe_id.clone(),
        selectors: e.selectors.clone(),
        node: e.node.clone(),
        created_at: ward_pki::issue::rfc3339(e.created_at),
    }
}

fn new_entry_id() -> Result<String, AuthorityError> {
    let mut bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut bytes)
        .map_err(|_| AuthorityError::Internal("the system random generator failed".into()))?;
    Ok(format!(
        "ent_{}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

impl Authority {
    /// Checks and records a registration entry.
    pub async fn create_entry(
        &self,
        spec: &EntrySpec,
        now: OffsetDateTime,
    ) -> Result<RegistrationEntry, AuthorityError> {
        let td = &self.policy.trust_domain;
        let id = member_id(&spec.spiffe_id, td, "SPIFFE ID")?;
        check_reserved(&id, spec.allow_reserved).map_err(AuthorityError::Forbidden)?;
        let node = member_id(&spec.node, td, "node")?;
        if node == id {
            return Err(AuthorityError::BadRequest(
                "an entry's SPIFFE ID must differ from its node's".into(),
            ));
        }
        let selectors = parse_selectors(&spec.selectors)
            .map_err(|e| AuthorityError::BadRequest(e.to_string()))?;
        let entry = RegistrationEntry {
            id: new_entry_id()?,
            spiffe_id: id.to_string(),
            selectors: selectors.iter().map(ToString::to_string).collect(),
            node: node.to_string(),
            created_at: now,
        };
        self.store.create_entry(&entry).await.map_err(store_err)?;
        Ok(entry)
    }

    /// Every registration entry, oldest first.
    pub async fn list_entries(&self) -> Result<Vec<RegistrationEntry>, AuthorityError> {
        self.store.entries(None).await.map_err(store_err)
    }

    /// Deletes an entry; 404 when there is none by that id.
    pub async fn delete_entry(&self, id: &str) -> Result<(), AuthorityError> {
        if self.store.delete_entry(id).await.map_err(store_err)? {
            Ok(())
        } else {
            Err(AuthorityError::NotFound(format!(
                "no registration entry {id}"
            )))
        }
    }

    /// The node agent behind a client certificate (an online certificate
    /// of this CA, unrevoked, unexpired) and its entries.
    pub async fn node_entries(
        &self,
        chain: &[CertificateDer<'_>],
        now: OffsetDateTime,
    ) -> Result<(SpiffeId, Vec<RegistrationEntry>), AuthorityError> {
        let node = self.node_of(chain, now).await?;
        let entries = self
            .store
            .entries(Some(node.id.as_str()))
            .await
            .map_err(store_err)?;
        Ok((node.id, entries))
    }

    async fn node_of(
        &self,
        chain: &[CertificateDer<'_>],
        now: OffsetDateTime,
    ) -> Result<Node, AuthorityError> {
        let leaf = chain.first().ok_or_else(|| {
            AuthorityError::unauthenticated(
                "no_client_certificate",
                "node routes need the node agent's client certificate",
            )
        })?;
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|_| {
            AuthorityError::unauthenticated("bad_certificate", "unreadable client certificate")
        })?;
        let (serial, record, token) = self.presented_certificate(leaf, &cert, now).await?;
        let id = Binding::of_certificate(&cert, &self.policy.trust_domain)?.spiffe_id;
        let lifetime = (record.not_after - record.not_before)
            .whole_seconds()
            .max(0)
            .unsigned_abs();
        let ttl = token
            .and_then(|t| u64::try_from(t.cert_ttl_secs).ok())
            .map(Duration::from_secs)
            .unwrap_or_else(|| {
                Duration::from_secs(lifetime).saturating_sub(ward_pki::issue::NOT_BEFORE_SKEW)
            })
            .max(MIN_TTL)
            .min(self.policy.max_ttl);
        Ok(Node {
            id,
            serial,
            token_id: record.token_id.clone(),
            ttl,
            not_after: record.not_after,
        })
    }

    /// Signs `csr` for `spiffe_id` on behalf of the node agent presenting
    /// `chain`: only for an entry registered for that node (403 otherwise).
    pub async fn sign_for_node(
        &self,
        chain: &[CertificateDer<'_>],
        spiffe_id: &str,
        csr: &CheckedCsr,
        now: OffsetDateTime,
    ) -> Result<Issuance, AuthorityError> {
        let node = self.node_of(chain, now).await?;
        let wanted = member_id(spiffe_id, &self.policy.trust_domain, "SPIFFE ID")?;
        let entries = self
            .store
            .entries(Some(node.id.as_str()))
            .await
            .map_err(store_err)?;
        if !entries.iter().any(|e| e.spiffe_id == wanted.as_str()) {
            return Err(AuthorityError::Forbidden(format!(
                "{wanted} is not registered for node {}",
                node.id
            )));
        }
        let mut binding = Binding {
            spiffe_id: wanted,
            dns_names: Vec::new(),
            ip_addresses: Vec::new(),
            profile: Profile::Peer,
            bound_common_name: None,
            common_name: None,
        };
        binding.check_request(csr)?;
        binding.common_name = None;
        let (issuance, record) = self.sign(
            &binding,
            &csr.spki_der,
            node.ttl,
            node.token_id,
            Some(node.serial),
            Origin::Renewal,
            now,
        )?;
        self.store
            .record_certificate(&record)
            .await
            .map_err(store_err)?;
        Ok(issuance)
    }
}

impl Authority {
    /// Mints a JWT-SVID for `spiffe_id` on behalf of the node agent
    /// presenting `chain`: only for an entry registered for that node (403
    /// otherwise), like [`Authority::sign_for_node`]. It never outlives the
    /// node agent's certificate.
    pub async fn mint_jwt_svid_for_node(
        &self,
        chain: &[CertificateDer<'_>],
        spiffe_id: &str,
        audience: &[String],
        ttl: Option<Duration>,
        now: OffsetDateTime,
    ) -> Result<super::jwt::MintedJwt, AuthorityError> {
        ward_pki::jwt::check_audience(audience).map_err(AuthorityError::BadRequest)?;
        let node = self.node_of(chain, now).await?;
        let wanted = member_id(spiffe_id, &self.policy.trust_domain, "SPIFFE ID")?;
        let entries = self
            .store
            .entries(Some(node.id.as_str()))
            .await
            .map_err(store_err)?;
        if !entries.iter().any(|e| e.spiffe_id == wanted.as_str()) {
            return Err(AuthorityError::Forbidden(format!(
                "{wanted} is not registered for node {}",
                node.id
            )));
        }
        self.sign_jwt(wanted, audience, ttl, node.not_after, now)
    }
}

struct Node {
    id: SpiffeId,
    serial: ward_pki::Serial,
    token_id: Option<String>,
    ttl: Duration,
    not_after: OffsetDateTime,
}
