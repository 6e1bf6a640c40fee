//! The pure batch planner and the commit task, with a scripted writer (no
//! database): the backends' real batches are covered by `tests/store`.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use time::macros::datetime;

use super::*;

const NOW: OffsetDateTime = datetime!(2025-01-01 0:00 UTC);

fn token(id: &str, max_uses: i64, uses: i64) -> Token {
    crate::model::test_token(id, max_uses, uses)
}

fn cert(serial: &str, token_id: Option<&str>) -> NewCertificate {
    NewCertificate {
        serial: serial.parse().unwrap(),
        spiffe_id: Some("spiffe://t/a".parse().unwrap()),
        token_id: token_id.map(Into::into),
        not_before: NOW,
        not_after: NOW,
        der: vec![],
        fingerprint: "00".repeat(32),
        issued_at: NOW,
        renewed_from: None,
        origin: crate::Origin::Token,
        profile: None,
    }
}

fn issue(token_id: &str, serial: &str) -> Item {
    Item::with_token(token_id, NOW, cert(serial, Some(token_id)))
}

fn tokens(list: Vec<Token>) -> HashMap<String, Token> {
    list.into_iter().map(|t| (t.id.clone(), t)).collect()
}

/// Short names of outcomes, for table-like assertions.
fn names(outcomes: &[Result<(), StoreError>]) -> Vec<&'static str> {
    outcomes
        .iter()
        .map(|o| match o {
            Ok(()) => "ok",
            Err(StoreError::TokenNotFound) => "not_found",
            Err(StoreError::TokenRevoked) => "revoked",
            Err(StoreError::TokenExpired) => "expired",
            Err(StoreError::TokenExhausted) => "exhausted",
            Err(StoreError::DuplicateSerial) => "duplicate",
            Err(StoreError::Unavailable { .. }) => "unavailable",
            Err(_) => "other",
        })
        .collect()
}

/// Plans and finishes as if every planned insert wrote its row.
fn decide(items: &[Item], known: Vec<Token>) -> (Vec<&'static str>, Vec<(String, i64)>) {
    let plan = plan(items, &tokens(known));
    let all: HashSet<usize> = plan.inserts(items).map(|(i, _)| i).collect();
    let (outcomes, uses) = plan.finish(items, &all);
    (names(&outcomes), uses)
}

#[test]
fn uses_taken_earlier_in_the_batch_count_against_later_items() {
    let items: Vec<_> = (0..5).map(|i| issue("one", &format!("a{i}"))).collect();
    let (outcomes, uses) = decide(&items, vec![token("one", 1, 0)]);
    assert_eq!(
        outcomes,
        ["ok", "exhausted", "exhausted", "exhausted", "exhausted"]
    );
    assert_eq!(uses, [("one".to_owned(), 1)]);

    let (outcomes, uses) = decide(&items, vec![token("one", 3, 1)]);
    assert_eq!(
        outcomes,
        ["ok", "ok", "exhausted", "exhausted", "exhausted"]
    );
    assert_eq!(uses, [("one".to_owned(), 2)]);

    let (outcomes, uses) = decide(&items, vec![token("one", 0, 1_000)]);
    assert_eq!(outcomes, ["ok"; 5]);
    assert_eq!(uses, [("one".to_owned(), 5)]);
}

#[test]
fn each_refusal_stays_with_its_own_item() {
    let mut revoked = token("revoked", 0, 0);
    revoked.revoked_at = Some(NOW);
    let mut expired = token("expired", 0, 0);
    expired.expires_at = NOW; // exclusive
    let items = vec![
        issue("live", "01"),
        issue("revoked", "02"),
        issue("live", "03"),
        issue("expired", "04"),
        issue("missing", "05"),
        issue("used", "06"),
        issue("live", "01"), // same serial as the first item
        Item::record(cert("08", None)),
        Item::record(cert("09", Some("missing"))),
        Item::record(cert("0a", Some("used"))),
    ];
    let known = vec![token("live", 0, 0), revoked, expired, token("used", 2, 2)];
    let (outcomes, uses) = decide(&items, known);
    assert_eq!(
        outcomes,
        [
            "ok",
            "revoked",
            "ok",
            "expired",
            "not_found",
            "exhausted",
            "duplicate",
            "ok",
            "not_found",
            "ok"
        ]
    );
    assert_eq!(uses, [("live".to_owned(), 2)], "records consume nothing");
}

#[test]
fn a_serial_already_stored_gives_its_use_back() {
    let items = vec![issue("t", "01"), issue("t", "02"), issue("t", "03")];
    let plan = plan(&items, &tokens(vec![token("t", 5, 0)]));
    let inserted: HashSet<usize> = [0, 2].into();
    let (outcomes, uses) = plan.finish(&items, &inserted);
    assert_eq!(names(&outcomes), ["ok", "duplicate", "ok"]);
    assert_eq!(uses, [("t".to_owned(), 2)]);
}

#[test]
fn token_ids_are_sorted_and_distinct() {
    let items = vec![
        issue("b", "01"),
        issue("a", "02"),
        Item::record(cert("03", Some("c"))),
        Item::record(cert("04", None)),
        issue("b", "05"),
    ];
    assert_eq!(token_ids(&items), ["a", "b", "c"]);
}

#[test]
fn expiry_is_judged_at_each_items_own_time_and_precision() {
    let mut t = token("t", 0, 0);
    t.expires_at = datetime!(2025-01-01 0:00:01 UTC);
    let early = Item::with_token(
        "t",
        datetime!(2025-01-01 0:00:00.9999995 UTC),
        cert("01", Some("t")),
    );
    let late = Item::with_token(
        "t",
        datetime!(2025-01-01 0:00:01.0000005 UTC),
        cert("02", Some("t")),
    );
    let (outcomes, _) = decide(&[early, late], vec![t]);
    assert_eq!(outcomes, ["ok", "expired"]);
}

/// A writer that records batch sizes and answers from a script.
struct Scripted {
    sizes: Mutex<Vec<usize>>,
    calls: AtomicUsize,
    script: fn(usize, &[Item]) -> BatchResult,
    gate: tokio::sync::Semaphore,
}

#[async_trait]
impl BatchWriter for Arc<Scripted> {
    async fn write_batch(&self, items: &[Item]) -> BatchResult {
        self.sizes.lock().unwrap().push(items.len());
        let _permit = self.gate.acquire().await;
        let call = self.calls.fetch_add(1, Ordering::SeqCst);
        (self.script)(call, items)
    }
}

fn scripted(script: fn(usize, &[Item]) -> BatchResult, open: bool) -> Arc<Scripted> {
    Arc::new(Scripted {
        sizes: Mutex::new(Vec::new()),
        calls: AtomicUsize::new(0),
        script,
        gate: tokio::sync::Semaphore::new(if open { 1_000 } else { 0 }),
    })
}

fn all_ok(_: usize, items: &[Item]) -> BatchResult {
    Ok(items.iter().map(|_| Ok(())).collect())
}

/// Waits until the first batch is in the (held) writer and the rest of
/// `n` items wait in the queue behind it.
async fn wait_queued(committer: &Committer, writer: &Scripted, n: usize) {
    loop {
        let first = writer.sizes.lock().unwrap().first().copied();
        let queued = QUEUE_DEPTH - committer.queue.capacity();
        if first.is_some_and(|f| f + queued == n) {
            return;
        }
        tokio::task::yield_now().await;
    }
}

/// Submits `n` items concurrently, each a spawned task.
fn submit_all(
    committer: &Arc<Committer>,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Result<(), StoreError>>> {
    (0..n)
        .map(|i| {
            let c = committer.clone();
            // Serials 0001..: a serial is positive.
            let serial = format!("{:04x}", i + 1);
            tokio::spawn(async move { c.submit(issue("t", &serial)).await })
        })
        .collect()
}

#[tokio::test]
async fn waiting_items_are_committed_together_up_to_max_batch() {
    let writer = scripted(all_ok, false);
    let committer = Arc::new(Committer::spawn(writer.clone(), 4));
    let tasks = submit_all(&committer, 10);
    // The writer is held shut until all ten wait: the first batch, the rest queued.
    wait_queued(&committer, &writer, 10).await;
    writer.gate.add_permits(1_000);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let sizes = writer.sizes.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 10);
    assert!(sizes.iter().all(|s| *s <= 4), "{sizes:?}");
    assert!(sizes.len() <= 4, "batched: {sizes:?}");
}

#[tokio::test]
async fn a_failed_transaction_fails_every_waiter_of_its_batch() {
    fn down(call: usize, items: &[Item]) -> BatchResult {
        if call == 0 {
            return Err(StoreError::Unavailable {
                context: "committing certificates".into(),
                source: "disk I/O error".into(),
            });
        }
        all_ok(call, items)
    }
    let writer = scripted(down, false);
    let committer = Arc::new(Committer::spawn(writer.clone(), 64));
    let tasks = submit_all(&committer, 5);
    wait_queued(&committer, &writer, 5).await;
    writer.gate.add_permits(1_000);
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    let first = writer.sizes.lock().unwrap()[0];
    let failed: Vec<_> = outcomes.iter().filter(|o| o.is_err()).collect();
    assert_eq!(failed.len(), first, "{outcomes:?}");
    for e in failed {
        let e = e.as_ref().unwrap_err();
        assert!(e.is_unavailable());
        assert!(e.to_string().contains("disk I/O error"), "{e}");
    }
    // Unavailability is not retried item by item.
    assert_eq!(
        writer.calls.load(Ordering::SeqCst),
        1 + usize::from(first < 5)
    );
    // The task survives and commits what comes next.
    committer.submit(issue("t", "ff")).await.unwrap();
}

#[tokio::test]
async fn a_batch_broken_by_one_item_is_retried_item_by_item() {
    fn poison(_: usize, items: &[Item]) -> BatchResult {
        if items
            .iter()
            .any(|i| i.certificate.serial == "0003".parse().unwrap())
        {
            return Err(StoreError::other("committing certificates", "corrupt row"));
        }
        Ok(items.iter().map(|_| Ok(())).collect())
    }
    let writer = scripted(poison, false);
    let committer = Arc::new(Committer::spawn(writer.clone(), 64));
    let tasks = submit_all(&committer, 4);
    wait_queued(&committer, &writer, 4).await;
    writer.gate.add_permits(1_000);
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.unwrap());
    }
    assert_eq!(names(&outcomes), ["ok", "ok", "other", "ok"]);
}

#[tokio::test]
async fn a_panicking_writer_fails_its_batch_but_not_the_task() {
    fn boom(call: usize, items: &[Item]) -> BatchResult {
        assert!(call > 0, "driver bug");
        all_ok(call, items)
    }
    let committer = Committer::spawn(scripted(boom, true), 64);
    let err = committer.submit(issue("t", "01")).await.unwrap_err();
    assert!(matches!(err, StoreError::Other { .. }), "{err:?}");
    committer.submit(issue("t", "02")).await.unwrap();
}

#[tokio::test]
async fn flush_waits_for_everything_queued_before_it() {
    let writer = scripted(all_ok, false);
    let committer = Arc::new(Committer::spawn(writer.clone(), 2));
    let tasks = submit_all(&committer, 6);
    wait_queued(&committer, &writer, 6).await;
    let flushing = {
        let c = committer.clone();
        tokio::spawn(async move { c.flush().await })
    };
    writer.gate.add_permits(1_000);
    flushing.await.unwrap();
    assert_eq!(writer.sizes.lock().unwrap().iter().sum::<usize>(), 6);
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

#[test]
fn shared_errors_keep_variant_and_message() {
    let shared = StoreError::Unavailable {
        context: "committing certificates".into(),
        source: "connection reset".into(),
    }
    .into_shared();
    let (a, b) = (shared.to_error(), shared.to_error());
    assert!(a.is_unavailable() && b.is_unavailable());
    assert_eq!(
        a.to_string(),
        "storage unavailable while committing certificates: connection reset"
    );
    assert!(matches!(
        StoreError::TokenExhausted.into_shared().to_error(),
        StoreError::TokenExhausted
    ));
}
