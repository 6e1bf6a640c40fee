//! The names a certificate may carry, and the check of a request's names
//! against them.

use std::net::IpAddr;

use time::OffsetDateTime;
use ward_pki::issue::Profile;
use ward_pki::{SpiffeId, TrustDomain};
use ward_store::Token;
use x509_parser::prelude::X509Certificate;

use super::AuthorityError;
use crate::csr::CheckedCsr;

/// The check [`Authority::sign_for_token`] makes of a CSR against the
/// token's binding, alone (for the fuzz targets).
pub(crate) fn check_csr_for_token(token: &Token, csr: &CheckedCsr) -> Result<(), AuthorityError> {
    Binding::of_token(token)?.check_request(csr)
}

/// The names a certificate may carry: a token's binding, or the identity of
/// a certificate being renewed.
#[derive(Clone, Debug)]
pub(super) struct Binding {
    pub(super) spiffe_id: SpiffeId,
    pub(super) dns_names: Vec<String>,
    pub(super) ip_addresses: Vec<IpAddr>,
    pub(super) profile: Profile,
    /// The common name a request may ask for; with none, a request may ask
    /// for one of `dns_names` as its CN.
    pub(super) bound_common_name: Option<String>,
    /// The common name written into the certificate being built.
    pub(super) common_name: Option<String>,
}

impl Binding {
    pub(super) fn of_token(token: &Token) -> Result<Self, AuthorityError> {
        Ok(Binding {
            spiffe_id: token.spiffe_id.clone(),
            dns_names: token.dns_names.clone(),
            ip_addresses: Vec::new(),
            profile: token.profile,
            bound_common_name: token.common_name.clone(),
            common_name: None,
        })
    }

    pub(super) fn of_certificate(
        cert: &X509Certificate<'_>,
        td: &TrustDomain,
    ) -> Result<Self, AuthorityError> {
        let der = cert.as_raw();
        let spiffe_id = ward_pki::inspect::spiffe_id_of(der)
            .ok()
            .flatten()
            .filter(|id| id.is_member_of(td))
            .ok_or_else(|| {
                AuthorityError::unauthenticated(
                    "not_an_svid",
                    "the client certificate carries no SPIFFE ID of this trust domain",
                )
            })?;
        let info = ward_pki::inspect::CertInfo::from_der(der, OffsetDateTime::now_utc())
            .map_err(|e| AuthorityError::Internal(e.to_string()))?;
        let server = info.extended_key_usage.iter().any(|e| e == "serverAuth");
        let client = info.extended_key_usage.iter().any(|e| e == "clientAuth");
        let profile = match (server, client) {
            (true, true) => Profile::Peer,
            (true, false) => Profile::Server,
            _ => Profile::Client,
        };
        let bound_common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Ok(Binding {
            spiffe_id,
            bound_common_name,
            common_name: None,
            dns_names: info.sans.dns,
            ip_addresses: info
                .sans
                .ip
                .iter()
                .filter_map(|ip| ip.parse().ok())
                .collect(),
            profile,
        })
    }

    /// Refuses a CSR that asks for any name outside the binding.
    pub(super) fn check_request(&self, csr: &CheckedCsr) -> Result<(), AuthorityError> {
        let r = &csr.requested;
        let mut outside: Vec<String> = Vec::new();
        outside.extend(
            r.uris
                .iter()
                .filter(|u| *u != self.spiffe_id.as_str())
                .cloned(),
        );
        outside.extend(
            r.dns
                .iter()
                .filter(|d| !self.dns_names.contains(d))
                .cloned(),
        );
        outside.extend(
            r.ips
                .iter()
                .filter(|ip| !self.ip_addresses.contains(ip))
                .map(ToString::to_string),
        );
        outside.extend(r.other.iter().cloned());
        // A CN is allowed when it is the bound one or, with none bound,
        // one of the bound DNS names; several CNs must all be that one.
        let allowed_cn = |cn: &String| match &self.bound_common_name {
            Some(bound) => cn == bound,
            None => self.dns_names.contains(&cn.to_ascii_lowercase()),
        };
        outside.extend(
            r.common_names
                .iter()
                .filter(|cn| !allowed_cn(cn))
                .map(|cn| format!("CN={cn}")),
        );
        if r.common_names
            .iter()
            .any(|cn| Some(cn) != r.common_names.first())
        {
            outside.push("more than one CN".to_owned());
        }
        if outside.is_empty() {
            Ok(())
        } else {
            Err(AuthorityError::Forbidden(format!(
                "the request asks for names outside the token's binding: {}",
                outside.join(", ")
            )))
        }
    }
}
