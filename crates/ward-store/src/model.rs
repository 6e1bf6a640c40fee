//! Plain Rust values that cross the [`Store`](crate::Store) boundary, and the
//! small pure helpers both backends share (list encoding, time precision,
//! serial normalisation, why a token refused a use).
//!
//! Nothing here does I/O; everything here must behave identically for SQLite
//! and PostgreSQL so that the CA cannot tell which backend it runs on.

use time::OffsetDateTime;
use ward_pki::issue::Profile;
use ward_pki::{Serial, SpiffeId};

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

/// What the CA supplies to create a token (usage and revocation start empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewToken {
    /// Public identifier (`tok_` + 16 hex); the primary key.
    pub id: String,
    /// SHA-256 of the secret token; unique.
    pub hash: [u8; 32],
    /// The one SPIFFE ID certificates issued from this token may carry.
    pub spiffe_id: SpiffeId,
    /// DNS SANs certificates issued from this token may carry.
    pub dns_names: Vec<String>,
    /// Certificate profile.
    pub profile: Profile,
    /// Lifetime of certificates issued from this token, in seconds (> 0).
    pub cert_ttl_secs: i64,
    /// When the token itself stops being usable (exclusive).
    pub expires_at: OffsetDateTime,
    /// How many certificates the token may issue; 0 means unlimited until expiry.
    pub max_uses: i64,
    /// Source networks (CIDR strings) the token may be presented from; empty means any.
    pub allowed_cidrs: Vec<String>,
    /// When the token was created.
    pub created_at: OffsetDateTime,
    /// Subject common name its certificates may carry, if one is bound.
    pub common_name: Option<String>,
}

/// A bootstrap token as stored: what it was created with, its usage and its
/// revocation. The secret itself is never stored, only its hash.
///
/// Derefs to the [`NewToken`] it was created from, so `token.spiffe_id`
/// reads and writes as a field of the token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    /// What the token was created with.
    pub created: NewToken,
    /// How many certificates the token has issued so far.
    pub uses: i64,
    /// When the token was revoked (the first time), if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// Whether a revocation also revoked the certificates issued from the token.
    pub revoked_with_certs: bool,
}

impl std::ops::Deref for Token {
    type Target = NewToken;

    fn deref(&self) -> &NewToken {
        &self.created
    }
}

impl std::ops::DerefMut for Token {
    fn deref_mut(&mut self) -> &mut NewToken {
        &mut self.created
    }
}

impl Token {
    /// Whether the token could issue one more certificate at `now`.
    pub fn is_usable_at(&self, now: OffsetDateTime) -> bool {
        self.revoked_at.is_none()
            && self.expires_at > now
            && (self.max_uses == 0 || self.uses < self.max_uses)
    }
}

/// What the CA supplies to record a certificate (revocation starts empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewCertificate {
    /// Serial number; the primary key (stored as lowercase hex), must be new.
    pub serial: Serial,
    /// The SPIFFE ID in the certificate; `None` when it carries none
    /// (offline server certificates, OCSP responders).
    pub spiffe_id: Option<SpiffeId>,
    /// The token it was issued from, if any (renewals keep the original token).
    pub token_id: Option<String>,
    /// Start of validity.
    pub not_before: OffsetDateTime,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The DER-encoded certificate.
    pub der: Vec<u8>,
    /// SHA-256 of `der`, hex (stored lowercase).
    pub fingerprint: String,
    /// When it was issued (recorded).
    pub issued_at: OffsetDateTime,
    /// Serial of the certificate this one renews, if any.
    pub renewed_from: Option<Serial>,
    /// Where it comes from.
    pub origin: Origin,
    /// The profile it was issued with (`server`, `client`, `peer`, or an
    /// ACME profile's name; 1 to 64 bytes), if known.
    pub profile: Option<String>,
}

/// An issued certificate as recorded: the record and its revocation.
///
/// Derefs to the [`NewCertificate`] that was recorded, so `cert.serial`
/// reads and writes as a field of the certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certificate {
    /// What was recorded.
    pub record: NewCertificate,
    /// When it was revoked (the first time), if it was.
    pub revoked_at: Option<OffsetDateTime>,
    /// RFC 5280 CRLReason code given at revocation; `None` means unspecified.
    pub revocation_reason: Option<i16>,
}

impl std::ops::Deref for Certificate {
    type Target = NewCertificate;

    fn deref(&self) -> &NewCertificate {
        &self.record
    }
}

impl std::ops::DerefMut for Certificate {
    fn deref_mut(&mut self) -> &mut NewCertificate {
        &mut self.record
    }
}

/// One entry of a CRL: an unexpired, revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RevokedCertificate {
    /// Serial number.
    pub serial: Serial,
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

/// Checks the values SQL cannot check the same way on both backends (the
/// SPIFFE ID and profile are checked by their types).
pub(crate) fn validate_token(t: &NewToken) -> Result<(), StoreError> {
    if t.id.is_empty() {
        return Err(StoreError::Invalid("token id must not be empty"));
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

/// Longest profile name stored with a certificate.
pub(crate) const MAX_PROFILE: usize = 64;

/// The DNS SANs of a certificate as indexed for search (`cert_dns.name_rev`):
/// lowercase, without a trailing dot, reversed character by character, each
/// once; names that are empty or longer than 253 bytes, or a DER that does
/// not parse, index nothing.
pub(crate) fn dns_index_names(der: &[u8]) -> Vec<String> {
    let mut names: Vec<String> = ward_pki::inspect::dns_sans(der)
        .unwrap_or_default()
        .iter()
        .filter_map(|n| dns_index_key(n))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// One DNS name (or suffix) as `cert_dns.name_rev` holds it; `None` if empty,
/// longer than 253 bytes or not ASCII.
pub(crate) fn dns_index_key(name: &str) -> Option<String> {
    let name = name.strip_suffix('.').unwrap_or(name);
    if name.is_empty() || name.len() > 253 || !name.is_ascii() {
        return None;
    }
    Some(
        name.bytes()
            .rev()
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect(),
    )
}

/// Checks and normalises a certificate before it is recorded (the serials
/// are checked by their type).
pub(crate) fn normalize_certificate(c: &NewCertificate) -> Result<NewCertificate, StoreError> {
    if c.fingerprint.len() != 64 || !c.fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(StoreError::Invalid("fingerprint must be 64 hex digits"));
    }
    if c.profile
        .as_deref()
        .is_some_and(|p| p.is_empty() || p.len() > MAX_PROFILE)
    {
        return Err(StoreError::Invalid("profile must be 1 to 64 bytes"));
    }
    Ok(NewCertificate {
        fingerprint: c.fingerprint.to_ascii_lowercase(),
        ..c.clone()
    })
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

/// Decodes a serial column (lowercase hex).
pub(crate) fn decode_serial(column: &'static str, text: &str) -> Result<Serial, StoreError> {
    text.parse().map_err(|e| StoreError::other(column, e))
}

/// Decodes a SPIFFE ID column.
pub(crate) fn decode_spiffe_id(column: &'static str, text: &str) -> Result<SpiffeId, StoreError> {
    text.parse().map_err(|e| StoreError::other(column, e))
}

/// Decodes a certificate's SPIFFE ID column: empty when it carries none.
pub(crate) fn decode_optional_spiffe_id(text: &str) -> Result<Option<SpiffeId>, StoreError> {
    if text.is_empty() {
        return Ok(None);
    }
    decode_spiffe_id("certificates.spiffe_id", text).map(Some)
}

/// Encodes a certificate's SPIFFE ID column: empty when it carries none.
pub(crate) fn encode_optional_spiffe_id(id: Option<&SpiffeId>) -> &str {
    id.map_or("", SpiffeId::as_str)
}

/// Decodes a profile column.
pub(crate) fn decode_profile(text: &str) -> Result<Profile, StoreError> {
    text.parse()
        .map_err(|e| StoreError::other("tokens.profile", e))
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

/// A usable token for unit tests: `peer` profile, valid until 2030.
#[cfg(test)]
pub(crate) fn test_token(id: &str, max_uses: i64, uses: i64) -> Token {
    use time::macros::datetime;
    Token {
        created: NewToken {
            id: id.into(),
            hash: [0; 32],
            spiffe_id: "spiffe://t/a".parse().unwrap(),
            dns_names: vec![],
            profile: Profile::Peer,
            cert_ttl_secs: 60,
            expires_at: datetime!(2030-01-01 0:00 UTC),
            max_uses,
            allowed_cidrs: vec![],
            created_at: datetime!(2020-01-01 0:00 UTC),
            common_name: None,
        },
        uses,
        revoked_at: None,
        revoked_with_certs: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn token() -> Token {
        test_token("tok_0", 1, 0)
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
