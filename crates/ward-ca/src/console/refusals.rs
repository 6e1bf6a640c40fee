//! The recent refusals the audit page shows: issuance, admin and console
//! requests the CA turned down, kept in memory (the newest [`KEEP`]) beside
//! the audit log, which stays the durable record.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use time::OffsetDateTime;

/// How many refusals are kept.
pub const KEEP: usize = 1000;

/// One refused request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// When.
    pub at: OffsetDateTime,
    /// What was asked (`sign`, `issue`, `renew`, `admin:create_token`, `console:login`…).
    pub route: String,
    /// Why (the error code: `token_used`, `not_admin`, `csrf_missing`…).
    pub reason: String,
    /// The client's address.
    pub source: String,
    /// The token concerned, if one was named (its id, never the secret).
    pub token_id: Option<String>,
}

/// The newest refusals of this CA process.
#[derive(Debug, Default)]
pub struct Refusals {
    recent: Mutex<VecDeque<Refusal>>,
}

impl Refusals {
    /// Records a refusal, forgetting the oldest beyond [`KEEP`].
    pub fn record(&self, refusal: Refusal) {
        let mut recent = self.lock();
        if recent.len() >= KEEP {
            recent.pop_front();
        }
        recent.push_back(refusal);
    }

    /// The kept refusals, newest first.
    pub fn newest(&self, n: usize) -> Vec<Refusal> {
        self.lock().iter().rev().take(n).cloned().collect()
    }

    /// How many of the kept refusals had each reason, most frequent first.
    pub fn by_reason(&self) -> Vec<(String, usize)> {
        let mut counts = BTreeMap::<String, usize>::new();
        for r in self.lock().iter() {
            *counts.entry(r.reason.clone()).or_default() += 1;
        }
        let mut out: Vec<_> = counts.into_iter().collect();
        out.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Refusal>> {
        self.recent
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(reason: &str) -> Refusal {
        Refusal {
            at: OffsetDateTime::UNIX_EPOCH,
            route: "sign".into(),
            reason: reason.into(),
            source: "127.0.0.1".into(),
            token_id: None,
        }
    }

    #[test]
    fn keeps_the_newest_and_counts_by_reason() {
        let log = Refusals::default();
        for i in 0..KEEP + 5 {
            log.record(r(if i % 3 == 0 { "token_used" } else { "bad_csr" }));
        }
        assert_eq!(log.newest(usize::MAX).len(), KEEP);
        let counts = log.by_reason();
        assert_eq!(counts[0].0, "bad_csr");
        assert_eq!(counts.iter().map(|c| c.1).sum::<usize>(), KEEP);
    }
}
