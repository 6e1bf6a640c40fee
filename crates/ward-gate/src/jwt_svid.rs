//! JWT-SVIDs at the gate: a route may accept `Authorization: Bearer
//! <JWT-SVID>` as an alternative to the client certificate's identity
//! (`mode = "either"`: a workload behind an L7 load balancer whose
//! certificate is the balancer's) or require it in addition
//! (`mode = "both"`).
//!
//! The token is verified against a SPIFFE bundle file (`GET /v1/bundle` of
//! the CA, or any JWK set with `use: jwt-svid` keys), re-read when its
//! modification time changes (checked at most once a second), for the
//! route's audience and trust domain. The TLS handshake still requires a
//! client certificate from the tenant's client CA; the token adds an
//! identity, it never replaces the handshake.
//!
//! Must never: accept a token that does not verify, quote a token in a log
//! or an answer, or let a bad bundle file replace a good one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use ward_pki::TrustDomain;
use ward_pki::jwt::{JwkSet, JwtSvid};

use crate::identity::Identity;

/// Longest time a changed bundle file goes unnoticed.
const RECHECK: Duration = Duration::from_secs(1);

/// How a route combines the bearer token with the client certificate.
#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum JwtMode {
    /// With a bearer token, the token's identity is authorized (the
    /// certificate's is not consulted); without one, the certificate's.
    #[default]
    Either,
    /// A valid bearer token is required, and both its identity and the
    /// certificate's must pass the route's rules.
    Both,
}

/// `[tenants.routes.jwt_svid]`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSvidConfig {
    /// The audience the token must carry (`aud`).
    pub audience: String,
    /// The trust domain the token's `sub` must belong to.
    pub trust_domain: String,
    /// SPIFFE bundle / JWK set file with the trust domain's JWT keys.
    pub bundle: PathBuf,
    /// `either` (default) or `both`.
    #[serde(default)]
    pub mode: JwtMode,
}

impl JwtSvidConfig {
    /// Checks the settings without reading the file.
    pub fn validate(&self) -> Result<(), String> {
        ward_pki::jwt::check_audience(std::slice::from_ref(&self.audience))
            .map_err(|e| format!("jwt_svid.audience: {e}"))?;
        self.trust_domain
            .parse::<TrustDomain>()
            .map_err(|e| format!("jwt_svid.trust_domain: {e}"))?;
        Ok(())
    }
}

struct Loaded {
    checked: Instant,
    modified: Option<SystemTime>,
    set: Arc<JwkSet>,
}

/// A route's compiled JWT-SVID settings.
pub struct JwtRoute {
    audience: String,
    trust_domain: TrustDomain,
    bundle: PathBuf,
    /// The mode.
    pub mode: JwtMode,
    loaded: Mutex<Loaded>,
}

impl std::fmt::Debug for JwtRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtRoute")
            .field("audience", &self.audience)
            .field("trust_domain", &self.trust_domain)
            .field("bundle", &self.bundle)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

fn read_bundle(path: &Path) -> Result<(Option<SystemTime>, JwkSet), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.len() > ward_pki::jwt::MAX_JWKS_LEN as u64 {
        return Err(format!("{}: larger than a JWK set may be", path.display()));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let set = JwkSet::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((meta.modified().ok(), set))
}

/// Why a bearer token was refused (the 401 message).
#[derive(Debug)]
pub struct BearerRefusal(pub String);

impl JwtRoute {
    /// Compiles `config`, reading the bundle file once (a missing or bad
    /// file is a configuration error).
    pub fn new(config: &JwtSvidConfig) -> Result<JwtRoute, String> {
        config.validate()?;
        let (modified, set) = read_bundle(&config.bundle)?;
        Ok(JwtRoute {
            audience: config.audience.clone(),
            trust_domain: config
                .trust_domain
                .parse()
                .map_err(|e: ward_pki::Error| e.to_string())?,
            bundle: config.bundle.clone(),
            mode: config.mode,
            loaded: Mutex::new(Loaded {
                checked: Instant::now(),
                modified,
                set: Arc::new(set),
            }),
        })
    }

    /// The bundle now: re-read when the file changed; a file that became
    /// unreadable or invalid keeps the last good bundle (and is logged).
    fn bundle(&self) -> Arc<JwkSet> {
        let Ok(mut loaded) = self.loaded.lock() else {
            // A panic while holding the lock: nothing is trusted.
            return Arc::new(JwkSet::default());
        };
        if loaded.checked.elapsed() >= RECHECK {
            loaded.checked = Instant::now();
            let modified = std::fs::metadata(&self.bundle)
                .and_then(|m| m.modified())
                .ok();
            if modified != loaded.modified {
                match read_bundle(&self.bundle) {
                    Ok((modified, set)) => {
                        tracing::info!(bundle = %self.bundle.display(), keys = set.keys.len(), "JWT bundle reloaded");
                        loaded.modified = modified;
                        loaded.set = Arc::new(set);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "JWT bundle unusable; keeping the last one");
                    }
                }
            }
        }
        loaded.set.clone()
    }

    /// Verifies a bearer token from `fields` (the request's header fields):
    /// `Ok(None)` when there is no `Authorization: Bearer` at all.
    pub fn bearer<'a>(
        &self,
        fields: impl Iterator<Item = (&'a str, &'a [u8])>,
    ) -> Result<Option<Identity>, BearerRefusal> {
        let mut found = None;
        for (name, value) in fields {
            if !name.eq_ignore_ascii_case("authorization") {
                continue;
            }
            if found.is_some() {
                return Err(BearerRefusal("more than one Authorization header".into()));
            }
            found = Some(value);
        }
        let Some(value) = found else {
            return Ok(None);
        };
        let text = std::str::from_utf8(value)
            .map_err(|_| BearerRefusal("Authorization is not text".into()))?;
        let token = match text.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => token.trim(),
            _ => return Ok(None),
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let svid = self
            .bundle()
            .verify(token, &self.trust_domain, &self.audience, now)
            .map_err(|e| BearerRefusal(format!("invalid JWT-SVID: {e}")))?;
        Ok(Some(identity_of(svid)))
    }
}

/// The identity a verified token stands for: its SPIFFE ID only.
fn identity_of(svid: JwtSvid) -> Identity {
    Identity {
        uris: vec![svid.spiffe_id.to_string()],
        spiffe_id: Some(svid.spiffe_id),
        subject: String::new(),
        common_name: None,
        dns: Vec::new(),
        ips: Vec::new(),
        serial: String::new(),
        fingerprint: String::new(),
        chain: Arc::from(Vec::new()),
    }
}
