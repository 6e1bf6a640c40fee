//! The registry of open connections by client certificate: a CRL update
//! that refuses a registered certificate closes its connections.

use std::sync::Arc;

use tokio::sync::watch;

use super::Revocation;
use super::crl::LeafRef;

/// An open connection, for closing it when its certificate gets revoked.
#[derive(Debug)]
pub(super) struct Tracked {
    pub(super) leaf: LeafRef,
    pub(super) kill: watch::Sender<Option<&'static str>>,
}

/// A connection's registration; [`Tracking::revoked`] resolves when an
/// update refuses its certificate.
#[derive(Debug)]
pub struct Tracking {
    pub(super) id: Option<u64>,
    pub(super) revocation: Option<Arc<Revocation>>,
    pub(super) rx: watch::Receiver<Option<&'static str>>,
    /// Keeps the channel open for untracked connections.
    pub(super) _tx: Option<watch::Sender<Option<&'static str>>>,
}

impl Tracking {
    /// A registration that never fires (revocation disabled).
    pub fn untracked() -> Self {
        let (tx, rx) = watch::channel(None);
        Tracking {
            id: None,
            revocation: None,
            rx,
            _tx: Some(tx),
        }
    }

    /// Resolves with the reason once the connection must close.
    pub async fn revoked(&mut self) -> &'static str {
        let reason = self
            .rx
            .wait_for(Option::is_some)
            .await
            .map(|r| r.unwrap_or("revoked"));
        match reason {
            Ok(reason) => reason,
            Err(_) => std::future::pending().await,
        }
    }
}

impl Drop for Tracking {
    fn drop(&mut self) {
        if let (Some(id), Some(r)) = (self.id, &self.revocation) {
            r.conns().remove(&id);
        }
    }
}
