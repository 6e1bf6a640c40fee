//! JWT-SVID key rotation with overlap (`ward ca rotate jwt`).
//!
//! ```text
//! DIR/jwt.key                  the current key: signs every new JWT-SVID
//! DIR/jwt-previous/<kid>.json  a retired key's public JWK and the time
//!                              (`retire_after`, Unix seconds) after which no
//!                              token it signed can still be valid
//! ```
//!
//! Rotation records the current key's public half first, then replaces
//! `jwt.key` atomically: a crash in between leaves the old key signing and
//! merely published twice. The private half of a retired key is not kept.
//! A retired key stays in the bundle for [`RETIRE_AFTER`] (the longest
//! JWT-SVID lifetime plus the time a running `ward ca serve` may take to
//! notice the rotation, plus clock skew), so rotating never breaks a token
//! that is still valid.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use ward_pki::jwt::{Jwk, JwtSigner};

use super::CaDir;
use crate::Error;
use crate::files::{self, Replace, SECRET_MODE};

/// Directory of retired keys' public halves.
pub const PREVIOUS_DIR: &str = "jwt-previous";
/// How often `ward ca serve` looks for a rotated key.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);
/// How long a retired key stays published: the longest JWT-SVID lifetime
/// (1 h) plus [`RELOAD_EVERY`] and 5 minutes of clock skew, rounded up.
pub const RETIRE_AFTER: Duration = Duration::from_secs(60 * 60 + 6 * 60);
/// Most retired key records read (each is small; more is a mistake).
const MAX_PREVIOUS: usize = 64;
/// Largest retired key record read.
const MAX_RECORD: u64 = 16 * 1024;

/// A retired JWT key: published until `retire_after`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousJwtKey {
    /// Its public JWK (`use: jwt-svid`, with its `kid`).
    pub jwk: Jwk,
    /// Unix seconds after which it is no longer published.
    pub retire_after: i64,
}

/// The current JWT key and the retired ones still published.
#[derive(Clone, Debug)]
pub struct JwtKeys {
    /// Signs new JWT-SVIDs.
    pub signer: Arc<JwtSigner>,
    /// Retired keys, oldest first (some may be past `retire_after`).
    pub previous: Vec<PreviousJwtKey>,
}

impl JwtKeys {
    /// The kids and retire times, to tell whether anything changed.
    pub fn fingerprint(&self) -> (String, Vec<(Option<String>, i64)>) {
        (
            self.signer.kid().to_owned(),
            self.previous
                .iter()
                .map(|p| (p.jwk.kid.clone(), p.retire_after))
                .collect(),
        )
    }
}

/// What [`CaDir::rotate_jwt_key`] did.
#[derive(Clone, Debug)]
pub struct JwtRotation {
    /// The key that signs from now on.
    pub new_kid: String,
    /// The retired key, when there was one.
    pub old_kid: Option<String>,
    /// When the retired key leaves the bundle.
    pub retire_after: OffsetDateTime,
    /// Records of keys past their time, removed.
    pub pruned: usize,
}

impl CaDir {
    fn previous_dir(&self) -> PathBuf {
        self.path().join(PREVIOUS_DIR)
    }

    /// The current JWT key (made when there is none, see
    /// [`CaDir::jwt_signer`]) and the retired keys' records.
    pub fn jwt_keys(&self) -> Result<JwtKeys, Error> {
        let signer = Arc::new(self.jwt_signer()?);
        let mut previous = self.previous_jwt_keys()?;
        previous.retain(|p| p.jwk.kid.as_deref() != Some(signer.kid()));
        Ok(JwtKeys { signer, previous })
    }

    fn previous_jwt_keys(&self) -> Result<Vec<PreviousJwtKey>, Error> {
        let dir = self.previous_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::Config(format!("{}: {e}", dir.display()))),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::Config(format!("{}: {e}", dir.display())))?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            if out.len() >= MAX_PREVIOUS {
                return Err(Error::Config(format!(
                    "{}: more than {MAX_PREVIOUS} retired JWT keys",
                    dir.display()
                )));
            }
            let len = entry
                .metadata()
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?
                .len();
            if len > MAX_RECORD {
                return Err(Error::Config(format!(
                    "{}: larger than {MAX_RECORD} bytes",
                    path.display()
                )));
            }
            let text = files::read_to_string(&path)?;
            let record: PreviousJwtKey = serde_json::from_str(&text)
                .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
            if record.jwk.kid.is_none()
                || record.jwk.key_use.as_deref() != Some(ward_pki::jwt::USE_JWT_SVID)
            {
                return Err(Error::Config(format!(
                    "{}: not a jwt-svid key with a kid",
                    path.display()
                )));
            }
            out.push(record);
        }
        out.sort_by_key(|p| p.retire_after);
        Ok(out)
    }

    /// Makes a new JWT key: the current one's public JWK is recorded in
    /// `jwt-previous/<kid>.json` (0600) with a retire time [`RETIRE_AFTER`]
    /// from `now`, then the new key replaces `jwt.key`. Records already past
    /// their retire time are removed.
    pub fn rotate_jwt_key(&self, now: OffsetDateTime) -> Result<JwtRotation, Error> {
        let current = self.jwt_keys()?;
        let retire_after = now + RETIRE_AFTER;
        let dir = self.previous_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::Config(format!("{}: {e}", dir.display())))?;
        let old_kid = current.signer.kid().to_owned();
        let record = PreviousJwtKey {
            jwk: current.signer.jwk().clone(),
            retire_after: retire_after.unix_timestamp(),
        };
        let json = serde_json::to_vec_pretty(&record)
            .map_err(|e| Error::Config(format!("a retired JWT key as JSON: {e}")))?;
        // The kid is a base64url thumbprint: safe as a file name.
        let path = dir.join(format!("{old_kid}.json"));
        files::write_atomic(&path, &json, SECRET_MODE, Replace::Allow)?;
        let next =
            JwtSigner::generate().map_err(|e| Error::Config(format!("making a JWT key: {e}")))?;
        files::write_atomic(
            &self.path().join(super::JWT_KEY),
            next.to_pem().as_bytes(),
            SECRET_MODE,
            Replace::Allow,
        )?;
        let mut pruned = 0;
        for p in &current.previous {
            if p.retire_after <= now.unix_timestamp()
                && let Some(kid) = &p.jwk.kid
                && std::fs::remove_file(dir.join(format!("{kid}.json"))).is_ok()
            {
                pruned += 1;
            }
        }
        Ok(JwtRotation {
            new_kid: next.kid().to_owned(),
            old_kid: Some(old_kid),
            retire_after,
            pruned,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn rotation_retires_the_old_key_prunes_expired_ones_and_refuses_bad_records() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = CaDir::new(tmp.path());
        let first = dir.jwt_keys().unwrap();
        assert!(first.previous.is_empty());
        let t0 = OffsetDateTime::now_utc();
        let r1 = dir.rotate_jwt_key(t0).unwrap();
        assert_eq!(r1.old_kid.as_deref(), Some(first.signer.kid()));
        let keys = dir.jwt_keys().unwrap();
        assert_eq!(keys.signer.kid(), r1.new_kid);
        assert_eq!(keys.previous.len(), 1);
        assert_eq!(
            keys.previous[0].jwk.kid.as_deref(),
            Some(first.signer.kid())
        );
        assert_eq!(
            keys.previous[0].retire_after,
            (t0 + RETIRE_AFTER).unix_timestamp()
        );
        // Two hours later the first record is past its time: removed.
        let r2 = dir.rotate_jwt_key(t0 + Duration::from_secs(7200)).unwrap();
        assert_eq!(r2.pruned, 1);
        let keys = dir.jwt_keys().unwrap();
        assert_eq!(keys.previous.len(), 1);
        assert_eq!(
            keys.previous[0].jwk.kid.as_deref(),
            Some(r1.new_kid.as_str())
        );
        // A damaged record is an error naming the file, not a silent skip.
        std::fs::write(tmp.path().join(PREVIOUS_DIR).join("bad.json"), b"{").unwrap();
        let err = dir.jwt_keys().unwrap_err().to_string();
        assert!(err.contains("bad.json"), "{err}");
    }
}
