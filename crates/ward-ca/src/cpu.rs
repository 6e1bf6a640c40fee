//! CPU-heavy work off the async workers (ARCHITECTURE.md, trap 18).
//!
//! Generating an RSA-4096 key takes ~0.6 s of CPU; run on a tokio worker
//! it stalls every request queued behind it (`/healthz` included). Key
//! generation goes to the blocking pool through [`generate`], at most
//! [`slots`] at a time (one core stays free for the async workers). RSA
//! signatures (a few milliseconds each: leaves and CRLs from an RSA CA)
//! run through [`heavy`], which hands the worker's other tasks to another
//! thread for the duration.

use std::sync::{Arc, OnceLock};

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::Semaphore;
use ward_pki::{KeyType, PrivateKey};

/// Key generations running at once: one less than the cores, at least one.
pub fn slots() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .saturating_sub(1)
        .max(1)
}

fn permits() -> &'static Arc<Semaphore> {
    static PERMITS: OnceLock<Arc<Semaphore>> = OnceLock::new();
    PERMITS.get_or_init(|| Arc::new(Semaphore::new(slots())))
}

/// Whether generating a key of this type is expensive enough to count
/// against a client's key-generation slots (RSA: tens of milliseconds to
/// seconds; ECDSA and Ed25519: microseconds).
pub fn is_expensive(key_type: KeyType) -> bool {
    matches!(
        key_type,
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096
    )
}

/// Generates a key: inline when it is cheap, else on the blocking pool,
/// waiting for one of the [`slots`].
pub async fn generate(key_type: KeyType) -> Result<PrivateKey, String> {
    if !is_expensive(key_type) {
        return key_type.generate().map_err(|e| e.to_string());
    }
    let permit = permits()
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| "the key generation pool is closed".to_owned())?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        key_type.generate().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("key generation did not finish: {e}"))?
}

/// Runs `work` (`expensive`: milliseconds of CPU) without stalling the
/// async worker it is called on: on a multi-threaded runtime the worker's
/// other tasks move to another thread meanwhile. Cheap work, and work on
/// a current-thread runtime (tests), runs inline.
pub fn heavy<T>(expensive: bool, work: impl FnOnce() -> T) -> T {
    let multi_thread =
        Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if expensive && multi_thread {
        tokio::task::block_in_place(work)
    } else {
        work()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn rsa_keys_are_generated_off_the_only_worker() {
        use std::sync::Mutex;
        use std::time::{Duration, Instant};
        // A ticker on the one worker keeps ticking while a key is made.
        let gap = Arc::new(Mutex::new(Duration::ZERO));
        let ticker = tokio::spawn({
            let gap = gap.clone();
            async move {
                let mut last = Instant::now();
                loop {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    let mut g = gap.lock().unwrap();
                    *g = (*g).max(last.elapsed());
                    last = Instant::now();
                }
            }
        });
        let started = Instant::now();
        generate(KeyType::Rsa4096).await.unwrap();
        let took = started.elapsed();
        ticker.abort();
        let gap = *gap.lock().unwrap();
        assert!(
            gap < Duration::from_millis(200),
            "the worker stalled for {gap:?} while a key took {took:?}"
        );
        assert_eq!(heavy(true, || 1 + 1), 2);
    }

    #[tokio::test]
    async fn cheap_keys_and_current_thread_runtimes_run_inline() {
        assert!(generate(KeyType::EcdsaP256).await.is_ok());
        assert_eq!(heavy(true, || 7), 7);
        assert!(!is_expensive(KeyType::Ed25519));
        assert!(slots() >= 1);
    }
}
