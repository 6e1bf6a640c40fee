//! Revocation signals: how a running CA learns, within a fraction of a
//! second, that another process sharing its storage (a replica, `ward revoke
//! --dir`, a token kill switch) recorded a revocation.
//!
//! - PostgreSQL: every transaction that revokes a certificate also sends
//!   `pg_notify` on [`PG_CHANNEL`] (delivered on commit, to every listening
//!   session of the database); the watch holds one `LISTEN` connection.
//! - SQLite: a dedicated read connection polls `PRAGMA data_version` every
//!   [`SQLITE_POLL`]; the number changes whenever any other connection, in
//!   any process, commits to the file.
//!
//! Signals may be spurious (SQLite reports every commit, a PostgreSQL
//! reconnect may have dropped notifications and so signals anyway): the
//! receiver re-reads the revoked set, which is cheap and idempotent. The
//! periodic refresh of the CA stays as the fallback for anything missed.
//! This module must never drop a signal silently: every lost connection
//! counts as a change.

use std::time::Duration;

use tokio::sync::watch;

/// The PostgreSQL notification channel revocations are announced on.
pub(crate) const PG_CHANNEL: &str = "ward_revocations";

/// Sends the notification inside the revoking transaction (delivered on
/// commit, dropped on rollback).
pub(crate) const PG_NOTIFY: &str = "SELECT pg_notify('ward_revocations', '')";

/// How often SQLite's `data_version` is read.
pub(crate) const SQLITE_POLL: Duration = Duration::from_millis(100);

/// How long a watch waits before reconnecting after an error.
pub(crate) const RETRY: Duration = Duration::from_secs(1);

/// A stream of "a revocation may have been recorded" signals from
/// [`crate::Store::watch_revocations`]; signals coalesce, so a slow
/// receiver sees one for many revocations.
#[derive(Debug)]
pub struct RevocationWatch {
    rx: watch::Receiver<u64>,
}

impl RevocationWatch {
    /// Waits for the next signal; `false` once the watch has stopped for
    /// good (then only the periodic refresh remains).
    pub async fn changed(&mut self) -> bool {
        self.rx.changed().await.is_ok()
    }
}

/// The sending half, held by the backend's watch task; the task ends when
/// the [`RevocationWatch`] is dropped.
#[derive(Debug)]
pub(crate) struct Signal {
    tx: watch::Sender<u64>,
}

impl Signal {
    /// Announces a (possible) change.
    pub(crate) fn fire(&self) {
        self.tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Resolves once nobody listens any more.
    pub(crate) async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// A connected pair.
pub(crate) fn channel() -> (Signal, RevocationWatch) {
    let (tx, rx) = watch::channel(0);
    (Signal { tx }, RevocationWatch { rx })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn signals_coalesce_and_the_task_learns_when_nobody_listens() {
        let (signal, mut watch) = channel();
        signal.fire();
        signal.fire();
        assert!(watch.changed().await);
        // Two fires before a read are one change.
        let again = tokio::time::timeout(Duration::from_millis(50), watch.changed()).await;
        assert!(again.is_err(), "a second signal without a second fire");
        drop(watch);
        tokio::time::timeout(Duration::from_secs(1), signal.closed())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_stopped_watch_says_so() {
        let (signal, mut watch) = channel();
        drop(signal);
        assert!(!watch.changed().await);
    }
}
