//! The routes of the API, so server and clients name them the same way.

/// `POST`: a certificate for a CSR, authorized by a bootstrap token.
pub const SIGN: &str = "/v1/sign";
/// `POST`: a certificate and a key made by the CA, authorized by a token.
pub const ISSUE: &str = "/v1/issue";
/// `POST`: the seed-compatible issuance route (`bootstrap_token`).
pub const SEED_ISSUE: &str = "/internal/pki/issue-certificate";
/// `POST`: renewal over mTLS with the current certificate.
pub const RENEW: &str = "/v1/renew";
/// `POST` creates a token, `GET` lists them (admin).
pub const ADMIN_TOKENS: &str = "/v1/admin/tokens";
/// `GET`: issued certificates, paged (admin).
pub const ADMIN_CERTIFICATES: &str = "/v1/admin/certificates";
/// `POST`: revokes a certificate (admin).
pub const REVOKE: &str = "/v1/revoke";
/// `GET`: the trusted roots, PEM.
pub const ROOTS: &str = "/v1/roots";
/// `GET`: the current CRL, DER.
pub const CRL: &str = "/v1/crl";
/// `GET`: the current CRL, PEM.
pub const CRL_PEM: &str = "/v1/crl.pem";

/// `DELETE`: the path revoking token `id`, with or without the
/// certificates issued from it.
pub fn admin_token(id: &str, with_certificates: bool) -> String {
    format!("{ADMIN_TOKENS}/{id}?with_certificates={with_certificates}")
}

/// `POST`: a JWT-SVID for the caller's client certificate identity.
pub const JWT_SVID: &str = "/v1/jwt-svid";
/// `GET`: the trust bundle in SPIFFE format (X.509 roots and JWT keys).
pub const BUNDLE: &str = "/v1/bundle";

/// `POST` creates a registration entry, `GET` lists them (admin).
pub const ADMIN_ENTRIES: &str = "/v1/admin/entries";
/// `GET`: the registration entries of the calling node agent.
pub const NODE_ENTRIES: &str = "/v1/node/entries";
/// `POST`: an SVID for an entry of the calling node agent.
pub const NODE_SIGN: &str = "/v1/node/sign";
/// `POST`: a JWT-SVID for an entry of the calling node agent.
pub const NODE_JWT_SVID: &str = "/v1/node/jwt-svid";

/// `DELETE`: the path deleting registration entry `id`.
pub fn admin_entry(id: &str) -> String {
    format!("{ADMIN_ENTRIES}/{id}")
}

/// `GET` (mTLS): the bundles of the partner trust domains the CA follows
/// ([`crate::federation::FederatedBundles`]).
pub const FEDERATION: &str = "/v1/federation";
