//! Console sessions and login-link secrets.
//!
//! A session is a random 256-bit id held by the browser in a cookie
//! (`__Host-` prefixed: `Secure`, `Path=/`, no `Domain`; also `HttpOnly`
//! and `SameSite=Strict`) and by the CA only as its SHA-256, with its own
//! random CSRF token. Sessions live in this process's memory: they end on
//! logout, after [`IDLE`] without a request, after [`ABSOLUTE`] in any case,
//! and when the CA restarts. Behind a load balancer with several replicas,
//! route a console user to one replica (sticky sessions).
//!
//! Must never: store or log a session id or a login secret in clear.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "__Host-ward-console";

/// A session ends after this long without a request.
pub(crate) const IDLE: Duration = Duration::from_secs(30 * 60);

/// A session ends this long after sign-in whatever happens.
pub(crate) const ABSOLUTE: Duration = Duration::from_secs(8 * 3600);

/// Most sessions held at once; beyond it the oldest is ended.
const MAX_SESSIONS: usize = 1024;

/// The prefix of a login link's secret (so scanners can find leaked ones).
pub const LOGIN_PREFIX: &str = "wcl_";

/// Longest login secret accepted before hashing (the real ones are 47 bytes).
pub(crate) const MAX_SECRET: usize = 128;

/// 256 random bits, base64url.
pub(crate) fn random_token() -> Result<String, aws_lc_rs::error::Unspecified> {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes)?;
    Ok(URL_SAFE_NO_PAD.encode(bytes))
}

/// SHA-256 of a secret.
pub(crate) fn hash(secret: &str) -> [u8; 32] {
    let d = digest::digest(&digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// How a session was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Via {
    /// A one-time link from `ward ca console-login`.
    Link,
    /// The admin client certificate.
    Certificate,
}

impl Via {
    /// As shown.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Via::Link => "one-time link",
            Via::Certificate => "admin client certificate",
        }
    }
}

/// What the console knows of a signed-in browser.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The token every change must carry.
    pub(crate) csrf: String,
    /// How it was started.
    pub(crate) via: Via,
    started: Instant,
    last_seen: Instant,
}

/// Every live session, by the hash of its id.
#[derive(Debug, Default)]
pub(crate) struct Sessions {
    live: Mutex<HashMap<[u8; 32], Session>>,
}

impl Sessions {
    /// Starts a session; returns its id (for the cookie) and the session.
    pub(crate) fn start(
        &self,
        via: Via,
    ) -> Result<(String, Session), aws_lc_rs::error::Unspecified> {
        let id = random_token()?;
        let now = Instant::now();
        let session = Session {
            csrf: random_token()?,
            via,
            started: now,
            last_seen: now,
        };
        let mut live = self.lock();
        live.retain(|_, s| alive(s, now));
        if live.len() >= MAX_SESSIONS
            && let Some(oldest) = live
                .iter()
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| *k)
        {
            live.remove(&oldest);
        }
        live.insert(hash(&id), session.clone());
        Ok((id, session))
    }

    /// The live session with this id, marked as seen now.
    pub(crate) fn find(&self, id: &str) -> Option<Session> {
        if id.len() > MAX_SECRET {
            return None;
        }
        let key = hash(id);
        let now = Instant::now();
        let mut live = self.lock();
        match live.get_mut(&key) {
            Some(s) if alive(s, now) => {
                s.last_seen = now;
                Some(s.clone())
            }
            Some(_) => {
                live.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Ends the session with this id.
    pub(crate) fn end(&self, id: &str) {
        self.lock().remove(&hash(id));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock leaves a consistent map.
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.duration_since(s.last_seen) < IDLE && now.duration_since(s.started) < ABSOLUTE
}

/// The session id in a request's cookies, if any.
pub(crate) fn cookie_value(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == COOKIE).then(|| value.to_owned())
        })
}

/// `Set-Cookie` starting a session.
pub(crate) fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age={}",
        ABSOLUTE.as_secs()
    )
}

/// `Set-Cookie` ending a session.
pub(crate) fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// Whether two secrets are equal, in time independent of where they differ.
pub(crate) fn same_secret(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_start_find_and_end() {
        let sessions = Sessions::default();
        let (id, s) = sessions.start(Via::Link).unwrap();
        assert_eq!(s.csrf.len(), 43);
        assert_eq!(sessions.find(&id).unwrap().csrf, s.csrf);
        assert!(sessions.find("other").is_none());
        assert!(sessions.find(&"x".repeat(1000)).is_none());
        sessions.end(&id);
        assert!(sessions.find(&id).is_none());
    }

    #[test]
    fn sessions_are_bounded() {
        let sessions = Sessions::default();
        for _ in 0..MAX_SESSIONS + 10 {
            sessions.start(Via::Certificate).unwrap();
        }
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
    }

    #[test]
    fn cookies_are_read_among_others() {
        let mut h = axum::http::HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            format!("a=1; {COOKIE}=abc; b=2").parse().unwrap(),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("abc"));
        let c = set_cookie("abc");
        for attr in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
            assert!(c.contains(attr), "{c}");
        }
        assert!(same_secret("abc", "abc") && !same_secret("abc", "abd"));
    }
}
