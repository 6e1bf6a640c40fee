//! `ca.toml`: the CA's documented configuration.
//!
//! `ward ca init` writes it with a comment on every field; every command
//! that uses the CA reads it. Unknown fields are errors, so a typo never
//! silently falls back to a default.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use ward_pki::{KeyType, TrustDomain, parse_duration};

use crate::Error;

/// The whole `ca.toml`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaConfig {
    /// Identity of the CA.
    pub ca: CaSection,
    /// Issuance policy.
    #[serde(default)]
    pub issuance: IssuanceSection,
    /// Rate limits on issuance.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// CRL publication and the URLs written into issued certificates.
    #[serde(default)]
    pub revocation: RevocationSection,
    /// Where the CA's records live.
    #[serde(default)]
    pub storage: StorageSection,
    /// The ACME server (RFC 8555): validation settings and provisioners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acme: Option<crate::acme::config::AcmeSection>,
    /// CA keys held in a PKCS#11 token instead of key files.
    #[serde(default)]
    pub keys: KeysSection,
    /// The SPIFFE bundle endpoint (`GET /v1/bundle`).
    #[serde(default)]
    pub bundle: BundleSection,
    /// Partner trust domains the CA follows and hands to its agents,
    /// gates and clients (`GET /v1/federation`), by trust domain name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub federation: BTreeMap<String, FederationPartner>,
}

/// `[federation."partner.example"]`: one partner trust domain's SPIFFE
/// bundle endpoint (see `docs/federation.md`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FederationPartner {
    /// The partner's bundle endpoint, `https://…`.
    pub bundle_endpoint_url: String,
    /// `https_web` (default) or `https_spiffe`.
    #[serde(default = "default_profile")]
    pub profile: String,
    /// `https_web`: PEM roots of the endpoint's TLS certificate; the web
    /// PKI roots when absent. Relative to the CA directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle: Option<PathBuf>,
    /// `https_spiffe`: the SPIFFE ID the endpoint's X509-SVID carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint_spiffe_id: Option<String>,
    /// `https_spiffe`: the partner's bundle obtained out of band (PEM roots
    /// or a SPIFFE bundle), authenticating the first fetch. Relative to the
    /// CA directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bundle: Option<PathBuf>,
    /// Shortest refresh interval (1s .. 1h, default 5s); the partner's
    /// `spiffe_refresh_hint` is clamped to this .. 1h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_floor: Option<String>,
}

fn default_profile() -> String {
    "https_web".into()
}

impl FederationPartner {
    /// The endpoint to follow for `trust_domain`, with paths relative to
    /// `base` (the CA directory); checks the settings without reading
    /// files.
    pub fn endpoint(
        &self,
        trust_domain: &str,
        base: &Path,
    ) -> Result<
        (
            ward_client::federation::Endpoint,
            ward_client::federation::Refresh,
        ),
        Error,
    > {
        use ward_client::federation::{Endpoint, Refresh};
        let bad = |m: String| Error::Config(format!("ca.toml: federation.{trust_domain:?}: {m}"));
        let td: TrustDomain = trust_domain.parse().map_err(|e| bad(format!("{e}")))?;
        if !self.bundle_endpoint_url.starts_with("https://") {
            return Err(bad(format!(
                "bundle_endpoint_url {:?}: must be an https:// URL",
                self.bundle_endpoint_url
            )));
        }
        let at = |p: &PathBuf| {
            if p.is_relative() {
                base.join(p)
            } else {
                p.clone()
            }
        };
        let endpoint = match self.profile.as_str() {
            "https_web" => {
                if self.endpoint_spiffe_id.is_some() || self.bundle.is_some() {
                    return Err(bad(
                        "endpoint_spiffe_id and bundle belong to profile = \"https_spiffe\"".into(),
                    ));
                }
                Endpoint::web(
                    td,
                    &self.bundle_endpoint_url,
                    self.ca_bundle.as_ref().map(at),
                )
            }
            "https_spiffe" => {
                if self.ca_bundle.is_some() {
                    return Err(bad(
                        "ca_bundle belongs to profile = \"https_web\" (https_spiffe trusts the partner's bundle)".into(),
                    ));
                }
                let (Some(id), Some(bundle)) = (&self.endpoint_spiffe_id, &self.bundle) else {
                    return Err(bad(
                        "profile = \"https_spiffe\" needs endpoint_spiffe_id and bundle".into(),
                    ));
                };
                let id: ward_pki::SpiffeId = id
                    .parse()
                    .map_err(|e| bad(format!("endpoint_spiffe_id {id:?}: {e}")))?;
                if id.trust_domain() != td {
                    return Err(bad(format!(
                        "endpoint_spiffe_id {id} is not in trust domain {td}"
                    )));
                }
                Endpoint::spiffe(td, &self.bundle_endpoint_url, id, at(bundle))
            }
            other => {
                return Err(bad(format!("profile {other:?}: https_web or https_spiffe")));
            }
        };
        let mut refresh = Refresh::default();
        if let Some(floor) = &self.refresh_floor {
            let floor = duration(&format!("federation.{trust_domain:?}.refresh_floor"), floor)?;
            if floor < Duration::from_secs(1) || floor > refresh.ceiling {
                return Err(bad("refresh_floor: between 1s and 1h".into()));
            }
            refresh.floor = floor;
        }
        Ok((endpoint, refresh))
    }
}

/// `[bundle]`: how the SPIFFE bundle endpoint (`GET /v1/bundle`,
/// `https_web` profile) is published.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BundleSection {
    /// `spiffe_refresh_hint`: how often federated partners should fetch
    /// the bundle again (1s .. 1h).
    pub refresh_hint: String,
}

impl Default for BundleSection {
    fn default() -> Self {
        BundleSection {
            refresh_hint: "60s".into(),
        }
    }
}

impl BundleSection {
    /// Parsed `refresh_hint`, within 1 s .. 1 h.
    pub fn refresh_hint(&self) -> Result<Duration, Error> {
        let hint = duration("bundle.refresh_hint", &self.refresh_hint)?;
        if hint < Duration::from_secs(1) || hint > Duration::from_secs(3600) {
            return Err(Error::Config(
                "ca.toml: bundle.refresh_hint: between 1s and 1h".into(),
            ));
        }
        Ok(hint)
    }
}

/// `[keys]`: CA keys in a PKCS#11 token, as RFC 7512 URIs with
/// `module-path` and `pin-source` (see [`crate::pkcs11::uri`]). A key not
/// named here is read from its file in the CA directory.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KeysSection {
    /// The root key (used by `ward ca init` and rotations, and to sign OCSP
    /// answers about the intermediate when there is no `root_ocsp` key).
    pub root: Option<String>,
    /// The intermediate key: signs every certificate and CRL.
    pub intermediate: Option<String>,
    /// The key of the root-issued OCSP responder (`root-ocsp.crt`).
    pub root_ocsp: Option<String>,
}

impl KeysSection {
    /// The parsed URI of one key, if it is in a token.
    pub fn uri(value: &Option<String>, name: &str) -> Result<Option<crate::pkcs11::KeyUri>, Error> {
        value
            .as_deref()
            .map(|v| {
                v.parse()
                    .map_err(|e| Error::Config(format!("ca.toml: keys.{name}: {e}")))
            })
            .transpose()
    }

    fn documented(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        let line = |name: &str, v: &Option<String>| match v {
            Some(uri) => format!("{name} = {}\n", q(uri)),
            None => format!(
                "# {name} = \"pkcs11:token=...;object=...;type=private?module-path=...&pin-source=file:...\"\n"
            ),
        };
        format!(
            "{}{}{}",
            line("root", &self.root),
            line("intermediate", &self.intermediate),
            line("root_ocsp", &self.root_ocsp)
        )
    }
}

/// `[storage]`: the database every command of this CA directory uses.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    /// `postgres://…` or a SQLite file path; unset: `ward.db` in the CA
    /// directory. `--database` / `WARD_DATABASE_URL` override it.
    pub database: Option<String>,
}

/// `[revocation]`: how the CRL is published.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RevocationSection {
    /// How long a CRL is valid: nextUpdate = thisUpdate + this.
    pub crl_validity: String,
    /// How often the CA re-reads the revoked set and re-signs the CRL when it
    /// changed or half of its validity has passed. Revocations by other
    /// replicas or `ward revoke --dir` are signalled by the store and picked
    /// up at once; this is the fallback.
    pub crl_refresh: String,
    /// URL written as the CRL Distribution Point of issued certificates.
    pub crl_url: Option<String>,
    /// OCSP responder URL written (Authority Information Access, id-ad-ocsp)
    /// into issued certificates.
    pub ocsp_url: Option<String>,
    /// How long an OCSP answer is valid: nextUpdate = thisUpdate + this.
    /// Clients such as nginx cache answers until nextUpdate, so keep it short.
    pub ocsp_validity: String,
}

impl Default for RevocationSection {
    fn default() -> Self {
        RevocationSection {
            crl_validity: "1h".into(),
            crl_refresh: "1m".into(),
            crl_url: None,
            ocsp_url: None,
            ocsp_validity: "5m".into(),
        }
    }
}

impl RevocationSection {
    /// Parsed `crl_validity`.
    pub fn crl_validity(&self) -> Result<Duration, Error> {
        duration("revocation.crl_validity", &self.crl_validity)
    }

    /// Parsed `crl_refresh`.
    pub fn crl_refresh(&self) -> Result<Duration, Error> {
        duration("revocation.crl_refresh", &self.crl_refresh)
    }

    /// Parsed `ocsp_validity`.
    pub fn ocsp_validity(&self) -> Result<Duration, Error> {
        duration("revocation.ocsp_validity", &self.ocsp_validity)
    }
}

/// `[ca]`: who this CA is.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaSection {
    /// The SPIFFE trust domain every issued identity must belong to.
    pub trust_domain: TrustDomain,
    /// Organisation name in the CA certificates' subjects.
    pub name: String,
    /// Key type of the CA keys (root, intermediate, admin).
    pub key_type: KeyType,
    /// Whether the root key was written outside this directory.
    #[serde(default)]
    pub offline_root: bool,
}

/// `[issuance]`: lifetimes.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IssuanceSection {
    /// Default lifetime of certificates issued online (`ward ca serve`).
    pub default_ttl: String,
    /// Longest lifetime the CA issues online, whatever a token asks for.
    pub max_ttl: String,
    /// Default lifetime for `ward cert create` (offline issuance).
    pub offline_default_ttl: String,
}

impl Default for IssuanceSection {
    fn default() -> Self {
        IssuanceSection {
            default_ttl: "1h".into(),
            max_ttl: "24h".into(),
            offline_default_ttl: "24h".into(),
        }
    }
}

impl IssuanceSection {
    /// Parsed `default_ttl`.
    pub fn default_ttl(&self) -> Result<Duration, Error> {
        duration("issuance.default_ttl", &self.default_ttl)
    }

    /// Parsed `max_ttl`.
    pub fn max_ttl(&self) -> Result<Duration, Error> {
        duration("issuance.max_ttl", &self.max_ttl)
    }

    /// Parsed `offline_default_ttl`.
    pub fn offline_default_ttl(&self) -> Result<Duration, Error> {
        duration("issuance.offline_default_ttl", &self.offline_default_ttl)
    }
}

/// Rate limit settings (`[limits]` in ca.toml).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Issuance requests per second from one source address.
    pub per_address_per_second: u32,
    /// Burst allowance per source address.
    pub per_address_burst: u32,
    /// Issuance requests per second presenting one token.
    pub per_token_per_second: u32,
    /// Burst allowance per token.
    pub per_token_burst: u32,
    /// Expensive server-side key generations (RSA, `/v1/issue`) one token
    /// may have running or queued at once; more are refused with 429.
    pub key_generations_per_token: u32,
    /// Expensive key generations running or queued in all; more are
    /// refused with 429.
    pub key_generations_total: u32,
    /// Close a connection with no request in flight for this long
    /// (HTTP/2 gets GOAWAY); `off`: never.
    pub connection_idle_timeout: String,
    /// Close a connection this old once its requests finish (HTTP/2 gets
    /// GOAWAY at once, in-flight requests complete); `off`: never.
    pub max_connection_age: String,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            per_address_per_second: 200,
            per_address_burst: 1000,
            per_token_per_second: 200,
            per_token_burst: 1000,
            key_generations_per_token: 1,
            key_generations_total: 32,
            connection_idle_timeout: "5m".into(),
            max_connection_age: "1h".into(),
        }
    }
}

impl LimitsConfig {
    /// The connection idle limit; `None` for `off`.
    pub fn idle_timeout(&self) -> Result<Option<Duration>, Error> {
        optional_duration(
            "ca.toml: limits.connection_idle_timeout",
            &self.connection_idle_timeout,
        )
    }

    /// The connection age limit; `None` for `off`.
    pub fn max_age(&self) -> Result<Option<Duration>, Error> {
        optional_duration(
            "ca.toml: limits.max_connection_age",
            &self.max_connection_age,
        )
    }
}

fn optional_duration(name: &str, value: &str) -> Result<Option<Duration>, Error> {
    if matches!(value.trim(), "off" | "0" | "0s") {
        return Ok(None);
    }
    let d = parse_duration(value).map_err(|e| Error::Config(format!("{name}: {e}")))?;
    Ok((!d.is_zero()).then_some(d))
}

/// The `[federation.*]` tables, as they were configured.
fn federation_toml(partners: &BTreeMap<String, FederationPartner>) -> String {
    #[derive(Serialize)]
    struct Only<'a> {
        federation: &'a BTreeMap<String, FederationPartner>,
    }
    if partners.is_empty() {
        return String::new();
    }
    toml::to_string(&Only {
        federation: partners,
    })
    .unwrap_or_default()
}

fn duration(field: &str, value: &str) -> Result<Duration, Error> {
    parse_duration(value).map_err(|e| Error::Config(format!("ca.toml: {field}: {e}")))
}

impl CaConfig {
    /// Parses and validates `ca.toml` text.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let config: CaConfig =
            toml::from_str(text).map_err(|e| Error::Config(format!("ca.toml: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that serde cannot.
    pub fn validate(&self) -> Result<(), Error> {
        for (td, partner) in &self.federation {
            if td.eq_ignore_ascii_case(self.ca.trust_domain.as_str()) {
                return Err(Error::Config(format!(
                    "ca.toml: federation.{td:?}: that is this CA's own trust domain"
                )));
            }
            partner.endpoint(td, Path::new("."))?;
        }
        let default = self.issuance.default_ttl()?;
        let max = self.issuance.max_ttl()?;
        self.issuance.offline_default_ttl()?;
        if default > max {
            return Err(Error::Config(format!(
                "ca.toml: issuance.default_ttl ({}) exceeds issuance.max_ttl ({})",
                self.issuance.default_ttl, self.issuance.max_ttl
            )));
        }
        let validity = self.revocation.crl_validity()?;
        let refresh = self.revocation.crl_refresh()?;
        if refresh.is_zero() || refresh * 2 > validity {
            return Err(Error::Config(format!(
                "ca.toml: revocation.crl_refresh ({}) must be positive and at most half of revocation.crl_validity ({})",
                self.revocation.crl_refresh, self.revocation.crl_validity
            )));
        }
        // Both are copied into every certificate issued: a CR/LF here would
        // reach every client that follows them.
        if let Some(url) = &self.revocation.crl_url {
            ward_pki::uri::check_url(url, &["http", "https", "ldap"])
                .map_err(|e| Error::Config(format!("ca.toml: revocation.crl_url {url:?} {e}")))?;
        }
        if let Some(url) = &self.revocation.ocsp_url {
            ward_pki::uri::check_url(url, &["http", "https"])
                .map_err(|e| Error::Config(format!("ca.toml: revocation.ocsp_url {url:?} {e}")))?;
        }
        if let Some(acme) = &self.acme {
            acme.validate(self.issuance.max_ttl()?)?;
        }
        let ocsp = self.revocation.ocsp_validity()?;
        if ocsp < Duration::from_secs(10) || ocsp > Duration::from_secs(7 * 86_400) {
            return Err(Error::Config(format!(
                "ca.toml: revocation.ocsp_validity ({}) must be between 10s and 7d",
                self.revocation.ocsp_validity
            )));
        }
        if self.ca.name.trim().is_empty() {
            return Err(Error::Config("ca.toml: ca.name is empty".into()));
        }
        self.limits.idle_timeout()?;
        self.limits.max_age()?;
        KeysSection::uri(&self.keys.root, "root")?;
        KeysSection::uri(&self.keys.intermediate, "intermediate")?;
        KeysSection::uri(&self.keys.root_ocsp, "root_ocsp")?;
        Ok(())
    }

    /// The file as `ward ca init` writes it: every field with its meaning.
    pub fn to_documented_toml(&self) -> String {
        let q = |s: &str| toml::Value::String(s.to_owned()).to_string();
        format!(
            r#"# Ward CA configuration, written by `ward ca init`.
# Every command that uses this CA directory reads it. Durations use human
# units: 90s, 15m, 1h, 30d.

[ca]
# SPIFFE trust domain. Every identity this CA issues is spiffe://<trust_domain>/...
trust_domain = {td}
# Organisation name shown in the CA certificates' subjects.
name = {name}
# Key type of the CA keys: ecdsa-p256, ecdsa-p384, ed25519, rsa-2048, rsa-3072, rsa-4096,
# ml-dsa-44, ml-dsa-65, ml-dsa-87 (post-quantum; see docs/post-quantum.md).
key_type = {kt}
# true when the root key was written outside this directory (--offline-root);
# the root is then needed only to sign a new intermediate.
offline_root = {offline}

[issuance]
# Default lifetime of certificates issued online (ward ca serve) when a token
# does not say otherwise.
default_ttl = {default_ttl}
# Longest lifetime issued online, whatever a token asks for. Nothing ever
# outlives the intermediate certificate.
max_ttl = {max_ttl}
# Default lifetime for `ward cert create` (offline issuance).
offline_default_ttl = {offline_ttl}

[limits]
# Issuance requests per second (and burst) from one source address.
per_address_per_second = {pa}
per_address_burst = {pab}
# Issuance requests per second (and burst) presenting one token.
per_token_per_second = {pt}
per_token_burst = {ptb}
# Server-side RSA key generations (/v1/issue) one token may have in progress,
# and the whole CA; more are answered 429. Each costs up to seconds of CPU.
key_generations_per_token = {kgt}
key_generations_total = {kga}
# A connection with no request in flight for this long is closed (HTTP/2 gets
# GOAWAY); a connection this old is closed once its requests finish. "off": never.
connection_idle_timeout = {cit}
max_connection_age = {mca}

[revocation]
# How long each CRL is valid (nextUpdate = thisUpdate + crl_validity).
crl_validity = {crlv}
# How often the CA re-reads the revoked set and re-signs the CRL when it
# changed (revocations by other replicas or `ward revoke --dir`) or half of
# crl_validity has passed. Revocations made through this server's API re-sign
# at once. At most half of crl_validity.
crl_refresh = {crlr}
# URL written as the CRL Distribution Point of every certificate issued online,
# e.g. "http://ca.example.org/v1/crl" (served by --http-listen). Unset: none.
{crlurl}
# OCSP responder URL written (Authority Information Access) into every
# certificate issued online, e.g. "http://ca.example.org/ocsp" (GET /ocsp/...
# and POST /ocsp are served on both listeners). Unset: none. Clients that
# verify with OCSP (nginx ssl_ocsp on) need it, or their own responder setting.
{ocspurl}
# How long each OCSP answer is valid (nextUpdate = thisUpdate + ocsp_validity).
# Answers are signed on request from the current revocation state, but clients
# such as nginx cache them until nextUpdate: keep this short. 10s to 7d.
ocsp_validity = {ocspv}

[storage]
# The database holding tokens, every certificate signed with this
# directory's keys, revocations and the CRL number: a SQLite file path or
# postgres://user@host/db (several `ward ca serve` replicas may share one).
# Unset: ward.db in this directory. `ward ca init` creates it; nothing else
# creates a store silently (`ward ca serve --init-storage` does on request).
# --database or WARD_DATABASE_URL override this setting.
{database}

[keys]
# CA keys kept in a PKCS#11 token (an HSM) instead of key files, as RFC 7512
# URIs naming the token, the key (object= label and/or id=), the module that
# reaches the token (module-path=) and the file holding the user PIN
# (pin-source=file:PATH). `ward ca init --pkcs11-module` writes them; an
# existing key can be named by hand. A key not named here is read from its
# file in this directory. See docs/hsm.md.
{keys}
[bundle]
# spiffe_refresh_hint of the SPIFFE bundle served at GET /v1/bundle: how
# often federated trust domains fetch it again (1s to 1h). See
# docs/federation.md.
refresh_hint = {hint}

# Partner trust domains this CA follows: their bundles are handed to this
# CA's agents, gates and clients (GET /v1/federation), which then need no
# per-partner settings. See docs/federation.md. For example:
# [federation."partner.example"]
# bundle_endpoint_url = "https://ca.partner.example:8443/v1/bundle"
# profile = "https_spiffe"              # or "https_web" (with ca_bundle)
# endpoint_spiffe_id = "spiffe://partner.example/ward/ca"
# bundle = "partner.example.bundle.pem" # obtained out of band, once
# refresh_floor = "5s"
{federation}"#,
            td = q(self.ca.trust_domain.as_str()),
            name = q(&self.ca.name),
            kt = q(self.ca.key_type.as_str()),
            offline = self.ca.offline_root,
            default_ttl = q(&self.issuance.default_ttl),
            max_ttl = q(&self.issuance.max_ttl),
            offline_ttl = q(&self.issuance.offline_default_ttl),
            pa = self.limits.per_address_per_second,
            pab = self.limits.per_address_burst,
            pt = self.limits.per_token_per_second,
            ptb = self.limits.per_token_burst,
            kgt = self.limits.key_generations_per_token,
            kga = self.limits.key_generations_total,
            cit = q(&self.limits.connection_idle_timeout),
            mca = q(&self.limits.max_connection_age),
            crlv = q(&self.revocation.crl_validity),
            crlr = q(&self.revocation.crl_refresh),
            crlurl = match &self.revocation.crl_url {
                Some(u) => format!("crl_url = {}", q(u)),
                None => "# crl_url = \"http://ca.example.org/v1/crl\"".to_owned(),
            },
            ocspurl = match &self.revocation.ocsp_url {
                Some(u) => format!("ocsp_url = {}", q(u)),
                None => "# ocsp_url = \"http://ca.example.org/ocsp\"".to_owned(),
            },
            ocspv = q(&self.revocation.ocsp_validity),
            database = match &self.storage.database {
                Some(u) => format!("database = {}", q(u)),
                None => "# database = \"postgres://ward@db.example.org/ward\"".to_owned(),
            },
            keys = self.keys.documented(),
            hint = q(&self.bundle.refresh_hint),
            federation = federation_toml(&self.federation),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CaConfig {
        CaConfig {
            ca: CaSection {
                trust_domain: "example.org".parse().unwrap(),
                name: "Acme \"Ops\"".into(),
                key_type: KeyType::Ed25519,
                offline_root: true,
            },
            issuance: IssuanceSection::default(),
            limits: Default::default(),
            revocation: RevocationSection::default(),
            storage: StorageSection::default(),
            acme: None,
            keys: Default::default(),
            bundle: Default::default(),
            federation: BTreeMap::new(),
        }
    }

    #[test]
    fn federation_partners_are_checked_and_round_trip() {
        let text = sample().to_documented_toml();
        let with = format!(
            "{text}\n[federation.\"partner.example\"]\nbundle_endpoint_url = \"https://ca.partner.example/v1/bundle\"\nprofile = \"https_spiffe\"\nendpoint_spiffe_id = \"spiffe://partner.example/ward/ca\"\nbundle = \"p.pem\"\nrefresh_floor = \"2s\"\n"
        );
        let back = CaConfig::parse(&with).unwrap();
        let again = CaConfig::parse(&back.to_documented_toml()).unwrap();
        assert_eq!(again.federation, back.federation);
        let (ep, refresh) = back.federation["partner.example"]
            .endpoint("partner.example", Path::new("/ca"))
            .unwrap();
        assert_eq!(refresh.floor, Duration::from_secs(2));
        assert_eq!(ep.profile.name(), "https_spiffe");
        for (from, to, why) in [
            (
                "https://ca.partner",
                "http://ca.partner",
                "must be an https:// URL",
            ),
            (
                "spiffe://partner.example/ward/ca",
                "spiffe://example.org/ward/ca",
                "not in trust domain",
            ),
            (
                "profile = \"https_spiffe\"",
                "profile = \"https_web\"",
                "belong to profile",
            ),
            (
                "profile = \"https_spiffe\"",
                "profile = \"spiffe\"",
                "https_web or https_spiffe",
            ),
            (
                "bundle = \"p.pem\"\n",
                "",
                "needs endpoint_spiffe_id and bundle",
            ),
            (
                "refresh_floor = \"2s\"",
                "refresh_floor = \"2h\"",
                "between 1s and 1h",
            ),
            (
                "federation.\"partner.example\"",
                "federation.\"example.org\"",
                "own trust domain",
            ),
        ] {
            let e = CaConfig::parse(&with.replace(from, to))
                .unwrap_err()
                .to_string();
            assert!(e.contains(why), "{to}: {e}");
        }
    }

    #[test]
    fn documented_toml_round_trips() {
        let text = sample().to_documented_toml();
        assert!(text.contains("# SPIFFE trust domain"));
        let back = CaConfig::parse(&text).unwrap();
        assert_eq!(back.ca.trust_domain.as_str(), "example.org");
        assert_eq!(back.ca.name, "Acme \"Ops\"");
        assert_eq!(back.ca.key_type, KeyType::Ed25519);
        assert!(back.ca.offline_root);
        assert_eq!(
            back.issuance.max_ttl().unwrap(),
            Duration::from_secs(86_400)
        );
    }

    #[test]
    fn revocation_section_defaults_and_round_trips() {
        let text = sample().to_documented_toml();
        let without: String = text.split("[revocation]").next().unwrap().to_owned();
        let old = CaConfig::parse(&without).unwrap();
        assert_eq!(
            old.revocation.crl_validity().unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(
            old.revocation.crl_refresh().unwrap(),
            Duration::from_secs(60)
        );
        assert!(old.revocation.crl_url.is_none());
        let with = text.replace(
            "# crl_url = \"http://ca.example.org/v1/crl\"",
            "crl_url = \"http://ca.test/v1/crl\"",
        );
        let back = CaConfig::parse(&with).unwrap();
        assert_eq!(
            back.revocation.crl_url.as_deref(),
            Some("http://ca.test/v1/crl")
        );
        assert_eq!(
            CaConfig::parse(&back.to_documented_toml())
                .unwrap()
                .revocation
                .crl_url,
            back.revocation.crl_url
        );
        assert!(
            CaConfig::parse(&text.replace("crl_refresh = \"1m\"", "crl_refresh = \"45m\""))
                .is_err()
        );
        assert!(CaConfig::parse(&with.replace("http://ca.test", "ftp://ca.test")).is_err());
    }

    #[test]
    fn ocsp_settings_default_and_round_trip() {
        let text = sample().to_documented_toml();
        let old: String = text
            .split("# OCSP responder URL")
            .next()
            .unwrap()
            .to_owned();
        let parsed = CaConfig::parse(&old).unwrap();
        assert!(parsed.revocation.ocsp_url.is_none());
        assert_eq!(
            parsed.revocation.ocsp_validity().unwrap(),
            Duration::from_secs(300)
        );
        let with = text.replace(
            "# ocsp_url = \"http://ca.example.org/ocsp\"",
            "ocsp_url = \"http://127.0.0.1:8080/ocsp\"",
        );
        let back = CaConfig::parse(&with).unwrap();
        assert_eq!(
            back.revocation.ocsp_url.as_deref(),
            Some("http://127.0.0.1:8080/ocsp")
        );
        let again = CaConfig::parse(&back.to_documented_toml()).unwrap();
        assert_eq!(again.revocation.ocsp_url, back.revocation.ocsp_url);
        assert!(CaConfig::parse(&with.replace("http://127", "ldap://127")).is_err());
        for bad in ["1s", "8d", "soon"] {
            let t = text.replace(
                "ocsp_validity = \"5m\"",
                &format!("ocsp_validity = \"{bad}\""),
            );
            let err = CaConfig::parse(&t).unwrap_err().to_string();
            assert!(err.contains("ocsp_validity"), "{err}");
        }
    }

    #[test]
    fn control_characters_in_revocation_urls_are_refused_precisely() {
        let text = sample().to_documented_toml();
        for (field, line) in [
            ("crl_url", "# crl_url = \"http://ca.example.org/v1/crl\""),
            ("ocsp_url", "# ocsp_url = \"http://ca.example.org/ocsp\""),
        ] {
            for (value, want) in [
                (r"http://ca.test/x\r\nX-Evil: 1", "U+000D at byte 16"),
                (r"http://ca.test/\nx", "U+000A at byte 15"),
                (r"http://ca.test/\u0000", "U+0000 at byte 15"),
                (r"http://ca.test/\u007f", "U+007F"),
                ("http://ca test/", "space at byte 9"),
            ] {
                let bad = text.replace(line, &format!("{field} = \"{value}\""));
                let err = CaConfig::parse(&bad).unwrap_err().to_string();
                assert!(
                    err.contains(&format!("revocation.{field}")) && err.contains(want),
                    "{field} = {value}: {err}"
                );
                // The URL is shown escaped, never with a raw line break.
                assert!(!err.contains('\n') && !err.contains('\r'), "{err:?}");
            }
        }
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let text = sample().to_documented_toml();
        let typo = text.replace("max_ttl =", "max_tll =");
        assert!(
            CaConfig::parse(&typo)
                .unwrap_err()
                .to_string()
                .contains("max_tll")
        );
        let bad = text.replace("max_ttl = \"24h\"", "max_ttl = \"soon\"");
        assert!(
            CaConfig::parse(&bad)
                .unwrap_err()
                .to_string()
                .contains("max_ttl")
        );
        let inverted = text.replace("max_ttl = \"24h\"", "max_ttl = \"30m\"");
        assert!(
            CaConfig::parse(&inverted)
                .unwrap_err()
                .to_string()
                .contains("exceeds")
        );
        let td = text.replace("\"example.org\"", "\"Example.org\"");
        assert!(CaConfig::parse(&td).is_err());
    }
}
