//! Group commit: many certificate records, one transaction.
//!
//! Each store owns one [`Committer`], a task that takes the pending
//! certificate records (from [`Store::issue_with_token`] and
//! [`Store::record_certificate`]) off a queue and writes as many as are
//! waiting, up to `max_batch`, in one transaction: one fsync on SQLite, a
//! handful of round trips on PostgreSQL, whatever the batch size. While one
//! batch commits the next one accumulates, so there is no timer and no
//! added delay when the CA is idle. Every waiter is answered only after the
//! transaction that holds its record has committed.
//!
//! Each item keeps the meaning it has alone: [`plan`] decides, in queue
//! order, which items may be written, from the token rows read (and locked)
//! inside the transaction, exactly as the conditional "consume one use"
//! `UPDATE` would have decided one by one. A token that is unknown, revoked,
//! expired or used up refuses only its own items. If the transaction itself
//! fails, every item of the batch gets the error and nothing is written;
//! when that error is not about availability (a bug, a corrupt row), the
//! items are retried one per transaction so one bad item cannot fail the
//! others.
//!
//! Must never: answer a waiter before its record is durable, or let one
//! item's refusal change another item's outcome (except through the token
//! uses that earlier items of the same token took, as sequential calls
//! would).
//!
//! [`Store::issue_with_token`]: crate::Store::issue_with_token
//! [`Store::record_certificate`]: crate::Store::record_certificate

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};
use ward_pki::Serial;

use crate::model::{dns_index_names, refusal};
use crate::{NewCertificate, StoreError, Token, truncate_to_storage_precision};

/// One item's outcome.
pub(crate) type Outcome = Result<(), StoreError>;

/// What writing a batch gives: one outcome per item, or the error that
/// failed the whole transaction.
pub(crate) type BatchResult = Result<Vec<Outcome>, StoreError>;

/// How many messages may wait in the queue before submitters wait too.
const QUEUE_DEPTH: usize = 4096;

/// One certificate record waiting to be committed.
#[derive(Clone, Debug)]
pub(crate) struct Item {
    /// The token one use of which this record consumes, and the time of the
    /// request (its expiry check); `None` for records that consume nothing
    /// (renewals, the CA's own certificate).
    pub(crate) consume: Option<(String, OffsetDateTime)>,
    /// The normalised certificate (bound to the token when one is consumed).
    pub(crate) certificate: NewCertificate,
    /// Its DNS SANs as indexed (`cert_dns.name_rev`), read from the DER by
    /// the submitter so the commit task does not parse.
    pub(crate) dns: Vec<String>,
}

impl Item {
    /// An issuance that consumes one use of `token_id` at `now`.
    pub(crate) fn with_token(token_id: &str, now: OffsetDateTime, c: NewCertificate) -> Self {
        Item {
            consume: Some((token_id.to_owned(), truncate_to_storage_precision(now))),
            dns: dns_index_names(&c.der),
            certificate: c,
        }
    }

    /// A record that consumes no token use.
    pub(crate) fn record(c: NewCertificate) -> Self {
        Item {
            consume: None,
            dns: dns_index_names(&c.der),
            certificate: c,
        }
    }
}

/// What one item's transaction must do, decided before anything is written.
pub(crate) struct Plan {
    /// Per item: `None` to insert it, or the refusal it gets.
    refused: Vec<Option<StoreError>>,
}

impl Plan {
    /// The items to insert, with their index in the batch.
    pub(crate) fn inserts<'a>(
        &'a self,
        items: &'a [Item],
    ) -> impl Iterator<Item = (usize, &'a NewCertificate)> + 'a {
        items
            .iter()
            .enumerate()
            .filter(|(i, _)| self.refused[*i].is_none())
            .map(|(i, item)| (i, &item.certificate))
    }

    /// Whether the plan writes nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.refused.iter().all(Option::is_some)
    }

    /// Completes the plan with which planned inserts actually inserted a row
    /// (`false`: the serial already existed). Returns each item's outcome and
    /// the uses to add per token (only for records that were written).
    pub(crate) fn finish(
        self,
        items: &[Item],
        inserted: &HashSet<usize>,
    ) -> (Vec<Outcome>, Vec<(String, i64)>) {
        let mut uses: Vec<(String, i64)> = Vec::new();
        let outcomes = self
            .refused
            .into_iter()
            .enumerate()
            .map(|(i, refused)| match refused {
                Some(e) => Err(e),
                None if !inserted.contains(&i) => Err(StoreError::DuplicateSerial),
                None => {
                    if let Some((id, _)) = &items[i].consume {
                        match uses.iter_mut().find(|(t, _)| t == id) {
                            Some((_, n)) => *n += 1,
                            None => uses.push((id.clone(), 1)),
                        }
                    }
                    Ok(())
                }
            })
            .collect();
        (outcomes, uses)
    }
}

/// Every token id a batch reads: the tokens it consumes and the tokens its
/// records name (which must exist), sorted, so replicas lock them in one order.
pub(crate) fn token_ids(items: &[Item]) -> Vec<String> {
    let mut ids: Vec<String> = items
        .iter()
        .flat_map(|item| {
            let consumed = item.consume.as_ref().map(|(id, _)| id);
            consumed
                .into_iter()
                .chain(item.certificate.token_id.as_ref())
        })
        .cloned()
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Decides, in queue order, which items may be written, given the current
/// (locked) rows of the tokens they name; uses taken by earlier items count
/// against later ones.
///
/// Refusals match the single-item path: [`StoreError::TokenNotFound`],
/// [`StoreError::TokenRevoked`], [`StoreError::TokenExpired`],
/// [`StoreError::TokenExhausted`]; a serial repeated within the batch is
/// [`StoreError::DuplicateSerial`] for the later item. A serial that already
/// exists in the database is found by the insert itself (see
/// [`Plan::finish`]); its use is not taken, but a later item of the same
/// exhausted token in the same batch has already been refused.
pub(crate) fn plan(items: &[Item], tokens: &HashMap<String, Token>) -> Plan {
    let mut taken: HashMap<&str, i64> = HashMap::new();
    let mut serials: HashSet<&Serial> = HashSet::with_capacity(items.len());
    let refused = items
        .iter()
        .map(|item| {
            let c = &item.certificate;
            if let Some(id) = &c.token_id
                && !tokens.contains_key(id)
            {
                return Some(StoreError::TokenNotFound);
            }
            if serials.contains(&c.serial) {
                return Some(StoreError::DuplicateSerial);
            }
            if let Some((id, now)) = &item.consume {
                let Some(token) = tokens.get(id) else {
                    return Some(StoreError::TokenNotFound);
                };
                let earlier = taken.get(id.as_str()).copied().unwrap_or(0);
                let current = Token {
                    uses: token.uses.saturating_add(earlier),
                    ..token.clone()
                };
                if !current.is_usable_at(*now) {
                    return Some(refusal(Some(&current), *now));
                }
                *taken.entry(id.as_str()).or_insert(0) += 1;
            }
            serials.insert(&c.serial);
            None
        })
        .collect();
    Plan { refused }
}

/// A backend's half of group commit.
#[async_trait]
pub(crate) trait BatchWriter: Send + Sync + 'static {
    /// Writes `items` in one transaction and returns each item's outcome;
    /// `Err` when the transaction failed as a whole (nothing was written).
    async fn write_batch(&self, items: &[Item]) -> BatchResult;
}

/// A message to the commit task.
// Items are nearly every message; boxing them to shrink the rare Flush
// would cost an allocation per certificate for nothing.
#[allow(clippy::large_enum_variant)]
enum Message {
    /// A record and where to send its outcome.
    Item(Item, oneshot::Sender<Outcome>),
    /// Answered once every earlier item has been answered.
    Flush(oneshot::Sender<()>),
}

/// The handle to a store's commit task; dropping it ends the task once the
/// queue is empty.
pub(crate) struct Committer {
    queue: mpsc::Sender<Message>,
}

impl Committer {
    /// Starts the commit task on the current Tokio runtime.
    pub(crate) fn spawn(writer: impl BatchWriter, max_batch: usize) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(run(Arc::new(writer), rx, max_batch.max(1)));
        Committer { queue }
    }

    /// Queues `item` and waits until it is committed (or refused).
    pub(crate) async fn submit(&self, item: Item) -> Result<(), StoreError> {
        let (reply, outcome) = oneshot::channel();
        self.queue
            .send(Message::Item(item, reply))
            .await
            .map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    /// Waits until everything queued before this call has been answered.
    pub(crate) async fn flush(&self) {
        let (reply, done) = oneshot::channel();
        if self.queue.send(Message::Flush(reply)).await.is_ok() {
            // An error means the task is gone, so nothing is pending either.
            let _ = done.await;
        }
    }
}

/// The error a submitter gets when the commit task is gone (its runtime
/// shut down): nothing of its item was written.
fn stopped() -> StoreError {
    StoreError::Unavailable {
        context: "committing a certificate".into(),
        source: "the store's commit task has stopped".into(),
    }
}

/// The commit task: take what is queued, commit it, answer, repeat.
async fn run<W: BatchWriter>(writer: Arc<W>, mut rx: mpsc::Receiver<Message>, max_batch: usize) {
    let mut items = Vec::with_capacity(max_batch);
    let mut replies = Vec::with_capacity(max_batch);
    let mut flushes = Vec::new();
    while let Some(first) = rx.recv().await {
        // Let the tasks that are ready to run (requests about to submit
        // their record) run once before the batch is cut: on a busy CA this
        // turns many one-record transactions into one, at the cost of one
        // scheduling round, not a timer.
        tokio::task::yield_now().await;
        let mut next = Some(first);
        while let Some(message) = next.take() {
            match message {
                Message::Item(item, reply) => {
                    items.push(item);
                    replies.push(reply);
                }
                Message::Flush(reply) => flushes.push(reply),
            }
            if items.len() < max_batch {
                next = rx.try_recv().ok();
            }
        }
        if !items.is_empty() {
            let batch = std::mem::take(&mut items);
            let outcomes = commit(&writer, batch).await;
            for (reply, outcome) in replies.drain(..).zip(outcomes) {
                // A waiter that gave up (its request was cancelled) is fine:
                // its record is committed all the same.
                let _ = reply.send(outcome);
            }
        }
        for reply in flushes.drain(..) {
            let _ = reply.send(());
        }
    }
}

/// Commits one batch and returns one outcome per item, in order.
async fn commit<W: BatchWriter>(writer: &Arc<W>, items: Vec<Item>) -> Vec<Outcome> {
    let n = items.len();
    let (items, result) = guarded(writer, items).await;
    match result {
        Ok(outcomes) if outcomes.len() == n => outcomes,
        Ok(_) => {
            let e = StoreError::other("committing a batch", "one outcome per item expected");
            fan_out(e, n)
        }
        Err(e) if n > 1 && !e.is_unavailable() => {
            // Not about availability: maybe one item's fault. Retry each
            // alone so the others are not refused with it.
            let mut outcomes = Vec::with_capacity(n);
            for item in items.unwrap_or_default() {
                let (_, alone) = guarded(writer, vec![item]).await;
                outcomes.push(match alone {
                    Ok(mut v) if v.len() == 1 => v.remove(0),
                    Ok(_) => Err(StoreError::other(
                        "committing a certificate",
                        "one outcome per item expected",
                    )),
                    Err(e) => Err(e),
                });
            }
            if outcomes.len() == n {
                outcomes
            } else {
                fan_out(e, n)
            }
        }
        Err(e) => fan_out(e, n),
    }
}

/// Runs one batch on its own task, so a panic in the driver becomes an
/// error for this batch's waiters instead of ending the commit task. Returns
/// the items back unless the batch panicked.
async fn guarded<W: BatchWriter>(
    writer: &Arc<W>,
    items: Vec<Item>,
) -> (Option<Vec<Item>>, BatchResult) {
    let writer = writer.clone();
    let task = tokio::spawn(async move {
        let result = writer.write_batch(&items).await;
        (items, result)
    });
    match task.await {
        Ok((items, result)) => (Some(items), result),
        Err(e) => (None, Err(StoreError::other("committing a batch", e))),
    }
}

/// The same failure for each of `n` waiters.
fn fan_out(error: StoreError, n: usize) -> Vec<Outcome> {
    let shared = error.into_shared();
    (0..n).map(|_| Err(shared.to_error())).collect()
}

#[cfg(test)]
mod tests;
