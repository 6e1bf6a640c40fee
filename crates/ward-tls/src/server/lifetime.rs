//! How long a connection may stay open: an idle limit (no request or
//! response in flight) and a maximum age, for HTTP/2 as much as HTTP/1.
//!
//! hyper closes an idle HTTP/1 connection through its header-read timeout
//! but has no idle limit for HTTP/2: a client that opens a connection and
//! sends nothing, or finishes its streams and stays, would hold a
//! connection slot for ever. [`Streams`] counts what is in flight on one
//! connection (a request counts from its arrival until its response body
//! is done or dropped); [`Streams::expired`] resolves when the connection
//! has been idle for the idle limit or has reached its maximum age. The
//! caller then shuts the connection down gracefully: HTTP/2 sends GOAWAY
//! and lets in-flight streams finish, HTTP/1 closes after the current
//! response.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::watch;
use tokio::time::Instant;

/// Why a connection's time is up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expiry {
    /// Nothing was in flight for the idle limit.
    Idle,
    /// The connection reached its maximum age.
    MaxAge,
}

impl Expiry {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Expiry::Idle => "idle",
            Expiry::MaxAge => "max_age",
        }
    }
}

/// The requests in flight on one connection. Cheap to clone (shared).
#[derive(Clone, Debug)]
pub struct Streams {
    open: Arc<watch::Sender<usize>>,
    started: Instant,
}

impl Default for Streams {
    fn default() -> Self {
        Self::new()
    }
}

impl Streams {
    /// A connection with nothing in flight, starting now.
    pub fn new() -> Self {
        Streams {
            open: Arc::new(watch::Sender::new(0)),
            started: Instant::now(),
        }
    }

    /// Counts one request as in flight until the guard is dropped. Only
    /// the change from idle to busy wakes [`Streams::expired`]: a busy
    /// connection's requests come and go without waking its task.
    pub fn open(&self) -> StreamGuard {
        self.open.send_if_modified(|n| {
            *n += 1;
            *n == 1
        });
        StreamGuard(self.open.clone())
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        *self.open.borrow()
    }

    /// Whether the connection is older than `max_age`.
    pub fn older_than(&self, max_age: Duration) -> bool {
        self.started.elapsed() >= max_age
    }

    /// Resolves when nothing has been in flight for `idle`, or when the
    /// connection is `max_age` old; `None` disables a limit (both `None`:
    /// never resolves).
    pub async fn expired(&self, idle: Option<Duration>, max_age: Option<Duration>) -> Expiry {
        let aged = async {
            match max_age {
                Some(age) => tokio::time::sleep_until(self.started + age).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = aged => Expiry::MaxAge,
            () = self.idle_for(idle) => Expiry::Idle,
        }
    }

    async fn idle_for(&self, idle: Option<Duration>) {
        let Some(idle) = idle else {
            return std::future::pending().await;
        };
        let mut open = self.open.subscribe();
        // One timer for the connection, reset each time it turns idle.
        let sleep = tokio::time::sleep(idle);
        tokio::pin!(sleep);
        loop {
            let busy = *open.borrow_and_update() > 0;
            if busy {
                // Never fails: `self` holds the sender.
                let _ = open.changed().await;
                continue;
            }
            sleep.as_mut().reset(Instant::now() + idle);
            tokio::select! {
                () = sleep.as_mut() => return,
                _ = open.changed() => {}
            }
        }
    }
}

/// Holds one request in flight; dropping it ends that.
#[derive(Debug)]
pub struct StreamGuard(Arc<watch::Sender<usize>>);

impl Drop for StreamGuard {
    fn drop(&mut self) {
        // Only the change from busy to idle wakes the idle timer.
        self.0.send_if_modified(|n| {
            let was = *n;
            *n = was.saturating_sub(1);
            was == 1
        });
    }
}

/// A response body that keeps its request in flight until it is done.
#[derive(Debug)]
pub struct Tracked<B> {
    inner: B,
    guard: Option<StreamGuard>,
}

impl<B: Body> Tracked<B> {
    /// Wraps `inner`; `guard` is released at its end (or when dropped).
    pub fn new(inner: B, guard: StreamGuard) -> Self {
        let guard = (!inner.is_end_stream()).then_some(guard);
        Tracked { inner, guard }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_))))
            || self.inner.is_end_stream()
        {
            self.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_counts_from_the_last_request() {
        let streams = Streams::new();
        let guard = streams.open();
        let expired = streams.expired(Some(Duration::from_secs(1)), None);
        tokio::pin!(expired);
        // Busy: never idle, however long.
        assert!(
            tokio::time::timeout(Duration::from_secs(5), expired.as_mut())
                .await
                .is_err()
        );
        drop(guard);
        let start = Instant::now();
        assert_eq!(expired.await, Expiry::Idle);
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn max_age_ends_a_busy_connection() {
        let streams = Streams::new();
        let _busy = streams.open();
        let start = Instant::now();
        let why = streams
            .expired(Some(Duration::from_secs(1)), Some(Duration::from_secs(7)))
            .await;
        assert_eq!(why, Expiry::MaxAge);
        assert_eq!(start.elapsed(), Duration::from_secs(7));
        assert!(streams.older_than(Duration::from_secs(7)));
    }

    #[test]
    fn only_turning_busy_or_idle_notifies() {
        let streams = Streams::new();
        let mut seen = streams.open.subscribe();
        let first = streams.open();
        assert!(seen.has_changed().unwrap_or(false), "idle to busy notifies");
        seen.borrow_and_update();
        // Requests coming and going on a busy connection wake nobody.
        let second = streams.open();
        drop(second);
        assert!(!seen.has_changed().unwrap_or(true));
        assert_eq!(streams.in_flight(), 1);
        drop(first);
        assert!(seen.has_changed().unwrap_or(false), "busy to idle notifies");
        assert_eq!(streams.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_timer_restarts_with_each_idle_spell() {
        let streams = Streams::new();
        let expired = streams.expired(Some(Duration::from_secs(2)), None);
        tokio::pin!(expired);
        let start = Instant::now();
        // Three busy spells, each ending 1.5 s into the idle limit.
        for _ in 0..3 {
            assert!(
                tokio::time::timeout(Duration::from_millis(1500), expired.as_mut())
                    .await
                    .is_err()
            );
            drop(streams.open());
        }
        assert_eq!(expired.await, Expiry::Idle);
        assert_eq!(start.elapsed(), Duration::from_millis(4500 + 2000));
    }

    #[tokio::test(start_paused = true)]
    async fn no_limits_never_expire() {
        let streams = Streams::new();
        assert!(
            tokio::time::timeout(Duration::from_secs(3600), streams.expired(None, None))
                .await
                .is_err()
        );
        assert_eq!(streams.in_flight(), 0);
    }
}
