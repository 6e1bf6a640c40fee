//! Plain Rust values that cross the [`Store`](crate::Store) boundary, and the
//! small pure helpers both backends share (list encoding, time precision,
//! serial normalisation, why a token refused a use).
//!
//! Nothing here does I/O; everything here must behave identically for SQLite
//! and PostgreSQL so that the CA cannot tell which backend it runs on.

use time::OffsetDateTime;

use crate::StoreError;

/// RFC 5280 CRLReason `privilegeWithdrawn`, recorded on certificates revoked
/// through their token's kill switch ([`Store::revoke_token`](crate::Store::revoke_token)).
pub const REASON_PRIVILEGE_WITHDRAWN: i16 = 9;

/// Where a recorded certificate came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Origin {
    /// `ward cert create`: signed offline from the CA directory.
    Offline,
    /// Issued online in exchange for a bootstrap token.
    Token,
    /// Issued online to a holder of a still-valid certificate (`/v1/renew`).
    Renewal,
    /// The admin identity (`ward ca init`).
    Admin,
    /// The CA's own TLS server certificate.
    CaServer,
    /// A delegated OCSP responder certificate.
    OcspResponder,
    /// Issued through the ACME server.
    Acme,
}

impl Origin {
    /// Every origin, in a stable order.
    pub const ALL: [Origin; 7] = [
        Origin::Offline,
        Origin::Token,
        Origin::Renewal,
        Origin::Admin,
        Origin::CaServer,
        Origin::OcspResponder,
        Origin::Acme,
    ];

    /// The stored and displayed name (`offline`, `token`, `ca-server`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Offline => "offline",
            Origin::Token => "token",
            Origin::Renewal => "renewal",
            Origin::Admin => "admin",
            Origin::CaServer => "ca-server",
            Origin::OcspResponder => "ocsp-responder",
            Origin::Acme => "acme",
        }
    }

    /// Parses a stored name; `None` for anything else.
    pub fn parse(name: &str) -> Option<Origin> {
        Origin::ALL.into_iter().find(|o| o.as_str() == name)
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decodes a stored origin column.
pub(crate) fn decode_origin(name: &str) -> Result<Origin, StoreError> {
    Origin::parse(name).ok_or_else(|| {
        StoreError::other(
            "decoding certificates.origin",
            format!("unknown origin {name:?}"),
        )
    })
}

/// A bootstrap token as stored: the secret itself is never stored, only its hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// Public identifier (`tok_` + 16 hex); the primary key.
    pub id: String,
    /// SHA-256 of the secret token; unique.
    pub hash: [u8; 32],
    /// The one SPIFFE ID certificates issued from this token may carry.
    pub spiffe_id: String,
    /// DNS SANs certificates issued from this token may carry.
    pub dns_names: Vec<String>,
    /// Certificate profile: `"server"`, `"client"` or `"peer"`.
    pub profile: String,
    /// Lifetime of certificates issued from this token, in seconds.
    pub cert_ttl_secs: i64,
    /// When the token itself stops being usable (exclusive).
    pub expires_at: OffsetDateTime,
    /// How many certificates the token may issue; 0 means unlimited until expiry.
    pub max_uses: i64,
    /// How many certificates the token has issued so far.
    pub uses: i64,
    /// Source networks (CIDR strings) the token may be presented from; empty means any.
    pub allowed_cidrs: Vec<String>,
    /// When the token was created.
    pub created_at: OffsetDateTime,
    /// When the token was revoked (the first time), if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// Whether a revocation also revoked the certificates issued from the token.
    pub revoked_with_certs: bool,
    /// Subject common name its certificates may carry, if one is bound.
    pub common_name: Option<String>,
}

impl Token {
    /// Whether the token could issue one more certificate at `now`.
    pub fn is_usable_at(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none()
            && self.expires_at > now
            && (self.max_uses == 0 || self.uses < self.max_uses)
    }
}

/// What the CA supplies to create a token (usage and revocation start empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken {
    /// Public identifier (`tok_` + 16 hex).
    pub id: String,
    /// SHA-256 of the secret token.
    pub hash: [u8; 32],
    /// The SPIFFE ID the token is bound to.
    pub spiffe_id: String,
    /// DNS SANs the token allows.
    pub dns_names: Vec<String>,
    /// Certificate profile: `"server"`, `"client"` or `"peer"`.
    pub profile: String,
    /// Lifetime of certificates issued from this token, in seconds (> 0).
    pub cert_ttl_secs: i64,
    /// When the token stops being usable.
    pub expires_at: OffsetDateTime,
    /// Use limit; 0 means unlimited until expiry.
    pub max_uses: i64,
    /// Allowed source networks (CIDR strings); empty means any.
    pub allowed_cidrs: Vec<String>,
    /// Creation time.
    pub created_at: OffsetDateTime,
    /// Subject common name to bind, if any.
    pub common_name: Option<String>,
}

/// An issued certificate as recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// Serial number, lowercase hex; the primary key.
    pub serial: String,
    /// The SPIFFE ID in the certificate; empty when it carries none (offline
    /// server certificates, OCSP responders).
    pub spiffe_id: String,
    /// The token it was issued from, if any (renewals keep the original token).
    pub token_id: Option<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The DER-encoded certificate.
    pub der: Vec<u8>,
    /// SHA-256 of `der`, lowercase hex.
    pub fingerprint: String,
    /// When it was recorded.
    pub issued_at: OffsetDateTime,
    /// Serial of the certificate this one renewed, if any.
    pub renewed_from: Option<String>,
    /// When it was revoked (the first time), if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// RFC 5280 CRLReason code given at revocation; `None` means unspecified.
    pub revocation_reason: Option<i16>,
    /// Where it came from.
    pub origin: Origin,
}

/// What the CA supplies to record a certificate (revocation starts empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCertificate {
    /// Serial number, hex (stored lowercase); must be new.
    pub serial: String,
    /// The SPIFFE ID in the certificate; empty when it carries none.
    pub spiffe_id: String,
    /// The token it was issued from, if any.
    pub token_id: Option<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The DER-encoded certificate.
    pub der: Vec<u8>,
    /// SHA-256 of `der`, hex (stored lowercase).
    pub fingerprint: String,
    /// When it was issued.
    pub issued_at: OffsetDateTime,
    /// Serial of the certificate this one renews, if any.
    pub renewed_from: Option<String>,
    /// Where it comes from.
    pub origin: Origin,
}

/// One entry of a CRL: an unexpired, revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedCertificate {
    /// Serial number, lowercase hex.
    pub serial: String,
    /// When it was revoked.
    pub revoked_at: OffsetDateTime,
    /// RFC 5280 CRLReason code, if one was given.
    pub reason: Option<i16>,
}

/// Result of [`Store::revoke_token`](crate::Store::revoke_token).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeTokenOutcome {
    /// No token has that id.
    NotFound,
    /// The token is revoked (now or before).
    Revoked {
        /// Certificates newly revoked by this call (0 when none or already done).
        certificates_revoked: u64,
    },
}

/// Result of [`Store::revoke_certificate`](crate::Store::revoke_certificate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeOutcome {
    /// No certificate has that serial.
    NotFound,
    /// The certificate was revoked by this call.
    Revoked,
    /// The certificate was already revoked; its first time and reason are kept.
    AlreadyRevoked,
}

/// Explains why a token cannot give one more use at `now`, from its
/// current row (`None`: no such token).
pub(crate) fn refusal(token: Option<&Token>, now: OffsetDateTime) -> StoreError {
    match token {
        None => StoreError::TokenNotFound,
        Some(t) if t.revoked_at.is_some() => StoreError::TokenRevoked,
        Some(t) if t.expires_at <= now => StoreError::TokenExpired,
        Some(t) if t.max_uses != 0 && t.uses >= t.max_uses => StoreError::TokenExhausted,
        // Uses only grow and revocation is final, so a usable token here means
        // the database disagreed with itself between two statements.
        Some(_) => StoreError::other("consuming a token use", "token state changed concurrently"),
    }
}

/// Checks the values SQL cannot check the same way on both backends.
pub(crate) fn validate_token(t: &NewToken) -> Result<(), StoreError> {
    if t.id.is_empty() || t.spiffe_id.is_empty() {
        return Err(StoreError::Invalid(
            "token id and SPIFFE ID must not be empty",
        ));
    }
    if !matches!(t.profile.as_str(), "server" | "client" | "peer") {
        return Err(StoreError::Invalid(
            "profile must be server, client or peer",
        ));
    }
    if t.cert_ttl_secs <= 0 || t.max_uses < 0 {
        return Err(StoreError::Invalid(
            "cert_ttl_secs must be > 0 and max_uses >= 0",
        ));
    }
    if t.common_name.as_deref().is_some_and(str::is_empty) {
        return Err(StoreError::Invalid("common_name must not be empty"));
    }
    Ok(())
}

/// Checks and normalises a certificate before it is recorded.
pub(crate) fn normalize_certificate(c: &NewCertificate) -> Result<NewCertificate, StoreError> {
    let serial =
        normalize_serial(&c.serial).ok_or(StoreError::Invalid("serial must be non-empty hex"))?;
    let renewed_from = match &c.renewed_from {
        Some(s) => Some(
            normalize_serial(s).ok_or(StoreError::Invalid("renewed_from must be non-empty hex"))?,
        ),
        None => None,
    };
    if c.fingerprint.len() != 64 || !c.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Invalid("fingerprint must be 64 hex digits"));
    }
    Ok(NewCertificate {
        serial,
        renewed_from,
        fingerprint: c.fingerprint.to_ascii_lowercase(),
        ..c.clone()
    })
}

/// Lowercases a hex serial; `None` if it is empty or not hex.
pub(crate) fn normalize_serial(serial: &str) -> Option<String> {
    let ok = !serial.is_empty() && serial.bytes().all(|b| b.is_ascii_hexdigit());
    ok.then(|| serial.to_ascii_lowercase())
}

/// Checks an RFC 5280 CRLReason code (0..=10, 7 is unused).
pub(crate) fn validate_reason(reason: Option<i16>) -> Result<(), StoreError> {
    match reason {
        Some(r) if !(0..=10).contains(&r) || r == 7 => Err(StoreError::Invalid(
            "revocation reason must be an RFC 5280 CRLReason code",
        )),
        _ => Ok(()),
    }
}

/// Encodes a string list as the JSON text stored in both backends.
pub(crate) fn encode_list(list: &[String]) -> String {
    // Serialising a slice of strings cannot fail.
    serde_json::to_string(list).unwrap_or_else(|_| "[]".to_owned())
}

/// Decodes a string list stored as JSON text.
pub(crate) fn decode_list(column: &'static str, text: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::other(column, e))
}

/// Decodes a 32-byte hash column.
pub(crate) fn decode_hash(bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::other("decoding token hash", "token hash is not 32 bytes"))
}

/// Both backends keep microseconds: the precision of PostgreSQL's `timestamptz`.
pub(crate) fn to_micros(t: OffsetDateTime) -> i64 {
    let micros = t.unix_timestamp_nanos().div_euclid(1_000);
    // Out of range only beyond year ±292,000; saturate rather than wrap.
    i64::try_from(micros).unwrap_or(if micros < 0 { i64::MIN } else { i64::MAX })
}

/// Inverse of [`to_micros`], in UTC.
pub(crate) fn from_micros(micros: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .map_err(|e| StoreError::other("decoding timestamp", e))
}

/// Truncates a time to the stored precision (what a round trip returns).
pub fn truncate_to_storage_precision(t: OffsetDateTime) -> OffsetDateTime {
    from_micros(to_micros(t)).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn token() -> Token {
        Token {
            id: "tok_0".into(),
            hash: [0; 32],
            spiffe_id: "spiffe://t/a".into(),
            dns_names: vec![],
            profile: "peer".into(),
            cert_ttl_secs: 60,
            expires_at: datetime!(2030-01-01 0:00 UTC),
            max_uses: 1,
            uses: 0,
            allowed_cidrs: vec![],
            created_at: datetime!(2020-01-01 0:00 UTC),
            revoked_at: None,
            revoked_with_certs: false,
            common_name: None,
        }
    }

    #[test]
    fn refusal_reports_the_first_failing_condition() {
        let now = datetime!(2025-01-01 0:00 UTC);
        assert!(matches!(refusal(None, now), StoreError::TokenNotFound));
        let mut t = token();
        t.uses = 1;
        assert!(matches!(refusal(Some(&t), now), StoreError::TokenExhausted));
        t.expires_at = now;
        assert!(matches!(refusal(Some(&t), now), StoreError::TokenExpired));
        t.revoked_at = Some(now);
        assert!(matches!(refusal(Some(&t), now), StoreError::TokenRevoked));
        assert!(matches!(
            refusal(Some(&token()), now),
            StoreError::Other { .. }
        ));
    }

    #[test]
    fn unlimited_token_is_never_exhausted() {
        let mut t = token();
        t.max_uses = 0;
        t.uses = i64::MAX - 1;
        assert!(t.is_usable_at(datetime!(2025-01-01 0:00 UTC)));
        assert!(!t.is_usable_at(t.expires_at));
    }

    #[test]
    fn micros_round_trip_truncates_nanos() {
        let t = datetime!(2025-06-01 12:00:00.123456789 UTC);
        let back = from_micros(to_micros(t)).unwrap();
        assert_eq!(back, datetime!(2025-06-01 12:00:00.123456 UTC));
        let before_epoch = datetime!(1969-12-31 23:59:59.9999995 UTC);
        assert!(from_micros(to_micros(before_epoch)).unwrap() <= before_epoch);
    }

    #[test]
    fn serials_are_lowercased_and_checked() {
        assert_eq!(normalize_serial("0AbC").as_deref(), Some("0abc"));
        assert_eq!(normalize_serial(""), None);
        assert_eq!(normalize_serial("0x1"), None);
    }

    #[test]
    fn reason_codes_follow_rfc5280() {
        assert!(validate_reason(None).is_ok());
        assert!(validate_reason(Some(0)).is_ok());
        assert!(validate_reason(Some(10)).is_ok());
        assert!(validate_reason(Some(7)).is_err());
        assert!(validate_reason(Some(11)).is_err());
        assert!(validate_reason(Some(-1)).is_err());
    }

    #[test]
    fn origins_round_trip_by_name() {
        for o in Origin::ALL {
            assert_eq!(Origin::parse(o.as_str()), Some(o));
            assert_eq!(decode_origin(&o.to_string()).unwrap(), o);
        }
        assert_eq!(Origin::parse("Offline"), None);
        assert!(decode_origin("").is_err());
    }

    #[test]
    fn lists_round_trip_as_json() {
        let l = vec!["a.example".to_owned(), "10.0.0.0/8".to_owned()];
        assert_eq!(decode_list("x", &encode_list(&l)).unwrap(), l);
        assert!(decode_list("x", "not json").is_err());
    }
}
