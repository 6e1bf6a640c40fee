//! Group commit of SQLite's other writes: many small write transactions
//! (ACME order changes, used nonces, token changes, …), one transaction.
//!
//! On SQLite every commit is an fsync of the WAL (`synchronous=FULL`), and
//! the one writer connection runs them one after another, so a CA that
//! commits each small write alone does at most one write per fsync. Here
//! the writes that queue up while one transaction commits run together in
//! the next: one `BEGIN IMMEDIATE`, each write inside its own savepoint
//! (`ROLLBACK TO` it when that write fails, so it leaves nothing and the
//! others are kept), one `COMMIT`. As in [`crate::batch`] there is no timer:
//! an idle CA commits a lone write at once.
//!
//! Each write keeps the meaning it has alone: the writes of a batch run in
//! queue order inside one transaction, which is what running them as
//! consecutive transactions would have done, and the write lock is held
//! throughout as before.
//!
//! Must never: answer a writer before the transaction holding its changes
//! has committed, or keep any change of a write that failed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use sqlx::sqlite::SqliteRow;
use tokio::sync::{mpsc, oneshot};

use crate::StoreError;
use crate::dialect::{BoxFuture, Work, WriteTx};

/// How many writes may wait in the queue before writers wait too.
const QUEUE_DEPTH: usize = 4096;

/// A write with its result type erased: runs the work inside the batch's
/// transaction, keeps the result aside, and says whether it succeeded.
pub(crate) type Job =
    Box<dyn for<'t> FnOnce(&'t mut WriteTx<'_, SqliteRow>) -> BoxFuture<'t, bool> + Send>;

/// Runs a batch of jobs in one transaction: each job's `bool` says whether
/// its changes are kept; the result is the commit's.
pub(crate) trait Runner: Send + Sync + 'static {
    /// Runs `jobs` in one write transaction and commits it; `Err` when the
    /// transaction as a whole failed (nothing of it was kept).
    fn run_batch<'a>(&'a self, jobs: Vec<Job>) -> BoxFuture<'a, Result<(), StoreError>>;
}

/// A queued job and where to send its commit's outcome.
type Message = (Job, oneshot::Sender<Result<(), StoreError>>);

/// The handle to the group-commit task; dropping it ends the task once the
/// queue is empty.
pub(crate) struct GroupWriter {
    queue: mpsc::Sender<Message>,
    /// Transactions run so far (read by the tests).
    #[cfg_attr(not(test), allow(dead_code))]
    batches: Arc<AtomicU64>,
}

impl GroupWriter {
    /// Starts the task on the current Tokio runtime; at most `max_batch`
    /// writes share a transaction.
    pub(crate) fn spawn(runner: impl Runner, max_batch: usize) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE_DEPTH);
        let batches = Arc::new(AtomicU64::new(0));
        tokio::spawn(run(Arc::new(runner), rx, max_batch.max(1), batches.clone()));
        GroupWriter { queue, batches }
    }

    /// How many transactions the task has run.
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    /// Runs `work` in the next batch's transaction and returns its result
    /// once that transaction has committed (its error if it failed: then
    /// nothing it did is kept).
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        work: Work<T, SqliteRow>,
    ) -> Result<T, StoreError> {
        let slot: Arc<Mutex<Option<Result<T, StoreError>>>> = Arc::default();
        let keep = slot.clone();
        let job = erase(move |tx| {
            Box::pin(async move {
                let out = work(tx).await;
                let ok = out.is_ok();
                *keep.lock().unwrap_or_else(PoisonError::into_inner) = Some(out);
                ok
            })
        });
        let (reply, committed) = oneshot::channel();
        self.queue.send((job, reply)).await.map_err(|_| stopped())?;
        let committed = committed.await.map_err(|_| stopped())?;
        let out = slot
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(stopped);
        match (out, committed) {
            // A write that failed kept nothing, whatever the commit did.
            (Ok(Err(e)), _) => Err(e),
            (Ok(Ok(t)), Ok(())) => Ok(t),
            (Ok(Ok(_)), Err(e)) | (Err(_), Err(e)) => Err(e),
            (Err(e), Ok(())) => Err(e),
        }
    }
}

/// Boxes a job; the bound lets the closure's signature be inferred.
fn erase<F>(f: F) -> Job
where
    F: for<'t> FnOnce(&'t mut WriteTx<'_, SqliteRow>) -> BoxFuture<'t, bool> + Send + 'static,
{
    Box::new(f)
}

/// The error a writer gets when the task is gone or its batch never ran.
fn stopped() -> StoreError {
    StoreError::Unavailable {
        context: "writing to the SQLite database".into(),
        source: "the store's write task has stopped".into(),
    }
}

/// The task: take what is queued, run it in one transaction, answer, repeat.
async fn run<R: Runner>(
    runner: Arc<R>,
    mut rx: mpsc::Receiver<Message>,
    max_batch: usize,
    batches: Arc<AtomicU64>,
) {
    while let Some(first) = rx.recv().await {
        // Let the tasks about to write run once before the batch is cut
        // (one scheduling round, not a timer).
        tokio::task::yield_now().await;
        let mut jobs = vec![first.0];
        let mut replies = vec![first.1];
        while jobs.len() < max_batch {
            match rx.try_recv() {
                Ok((job, reply)) => {
                    jobs.push(job);
                    replies.push(reply);
                }
                Err(_) => break,
            }
        }
        batches.fetch_add(1, Ordering::Relaxed);
        // On its own task, so a panic in a write fails this batch only.
        let task = {
            let runner = runner.clone();
            tokio::spawn(async move { runner.run_batch(jobs).await })
        };
        let outcome = match task.await {
            Ok(outcome) => outcome,
            Err(e) => Err(StoreError::other("committing a batch of writes", e)),
        };
        match outcome {
            Ok(()) => {
                for reply in replies {
                    let _ = reply.send(Ok(()));
                }
            }
            Err(e) => {
                let shared = e.into_shared();
                for reply in replies {
                    let _ = reply.send(Err(shared.to_error()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
