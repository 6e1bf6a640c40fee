//! ACME nonces (RFC 8555 §6.5) issued without a database write.
//!
//! A nonce is `base64url(version ‖ expiry ‖ random ‖ tag)`: version 1 (one
//! byte), the expiry in Unix seconds (8 bytes, big-endian), 12 random
//! bytes, and the first 16 bytes of HMAC-SHA256 over the rest under the
//! store's nonce key ([`ward_store::AcmeStore::nonce_key`], the same for
//! every replica). Issuing one costs an HMAC, not a commit. Using one checks
//! the tag and the expiry, then records it in the store
//! ([`ward_store::AcmeStore::use_nonce`]), committed before the request
//! goes on: the second use, on any replica, is refused.
//!
//! Must never: accept a nonce this CA did not issue, a nonce past its
//! expiry, or one nonce twice; forget a used nonce while any replica could
//! still accept it (the record outlives the expiry by [`SKEW`]).

use aws_lc_rs::hmac;
use time::OffsetDateTime;
use tokio::sync::OnceCell;
use ward_store::AcmeStore;

use super::Problem;
use super::jws::b64e;

/// Format version byte.
const VERSION: u8 = 1;
/// Bytes before the tag: version, expiry, random.
const BODY: usize = 1 + 8 + 12;
/// Bytes of the truncated HMAC tag.
const TAG: usize = 16;
/// How much longer than its expiry a used nonce stays recorded: more than
/// any clock difference between replicas.
pub(crate) const SKEW: time::Duration = time::Duration::minutes(10);

/// Issues and checks nonces under the store's key, read once.
#[derive(Default)]
pub(crate) struct Nonces {
    key: OnceCell<hmac::Key>,
}

impl Nonces {
    /// The key: the store's, created there by the first replica.
    async fn key(&self, store: &dyn AcmeStore) -> Result<&hmac::Key, Problem> {
        self.key
            .get_or_try_init(|| async {
                let mut candidate = zeroize::Zeroizing::new([0u8; 32]);
                aws_lc_rs::rand::fill(candidate.as_mut())
                    .map_err(|_| Problem::internal("RNG failure"))?;
                let key = store
                    .nonce_key(candidate.as_ref(), OffsetDateTime::now_utc())
                    .await?;
                let key = zeroize::Zeroizing::new(key);
                if key.len() < 32 {
                    return Err(Problem::internal("the stored ACME nonce key is too short"));
                }
                Ok(hmac::Key::new(hmac::HMAC_SHA256, &key))
            })
            .await
    }

    /// A fresh nonce valid until `expires`.
    pub(crate) async fn issue(
        &self,
        store: &dyn AcmeStore,
        expires: OffsetDateTime,
    ) -> Result<String, Problem> {
        let key = self.key(store).await?;
        let mut raw = [0u8; BODY + TAG];
        raw[0] = VERSION;
        raw[1..9].copy_from_slice(&expires.unix_timestamp().to_be_bytes());
        aws_lc_rs::rand::fill(&mut raw[9..BODY]).map_err(|_| Problem::internal("RNG failure"))?;
        let tag = hmac::sign(key, &raw[..BODY]);
        raw[BODY..].copy_from_slice(&tag.as_ref()[..TAG]);
        Ok(b64e(&raw))
    }

    /// Uses `nonce` at `now`: `Ok(true)` once for a nonce this CA issued
    /// that has not expired, `Ok(false)` for anything else (made up,
    /// altered, expired, used before).
    pub(crate) async fn take(
        &self,
        store: &dyn AcmeStore,
        nonce: &str,
        now: OffsetDateTime,
    ) -> Result<bool, Problem> {
        let Some(expires) = self.check(store, nonce).await? else {
            return Ok(false);
        };
        if expires <= now {
            return Ok(false);
        }
        Ok(store.use_nonce(nonce, expires + SKEW, now).await?)
    }

    /// The expiry of a nonce this CA issued, if `nonce` is one (in its one
    /// canonical spelling).
    async fn check(
        &self,
        store: &dyn AcmeStore,
        nonce: &str,
    ) -> Result<Option<OffsetDateTime>, Problem> {
        use base64::Engine as _;
        if nonce.len() > 2 * (BODY + TAG) {
            return Ok(None);
        }
        let Ok(raw) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(nonce) else {
            return Ok(None);
        };
        if raw.len() != BODY + TAG || raw[0] != VERSION || b64e(&raw) != nonce {
            return Ok(None);
        }
        let key = self.key(store).await?;
        let tag = hmac::sign(key, &raw[..BODY]);
        if aws_lc_rs::constant_time::verify_slices_are_equal(&tag.as_ref()[..TAG], &raw[BODY..])
            .is_err()
        {
            return Ok(None);
        }
        let mut secs = [0u8; 8];
        secs.copy_from_slice(&raw[1..9]);
        Ok(OffsetDateTime::from_unix_timestamp(i64::from_be_bytes(secs)).ok())
    }
}

#[cfg(test)]
mod tests;
