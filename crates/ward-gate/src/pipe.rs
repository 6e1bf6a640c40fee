//! A bidirectional byte pipe with an idle timeout, for TCP tenants and
//! `ward gate client`.
//!
//! `tokio::io::copy_bidirectional` has no notion of idleness: a peer that
//! goes quiet holds two sockets forever. [`pipe`] copies both directions
//! (half-closes are passed on) and gives up once no byte has moved in
//! either direction for `idle`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

const BUFFER: usize = 16 * 1024;
/// Time allowed to send close_notify/FIN to each side of an idle pipe.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// How a pipe ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipeEnd {
    /// Both directions reached end of stream.
    Closed {
        /// Bytes copied from `a` to `b`.
        a_to_b: u64,
        /// Bytes copied from `b` to `a`.
        b_to_a: u64,
    },
    /// Nothing moved for the idle time.
    Idle,
}

/// The last time a byte moved, as milliseconds since `base`.
struct Activity {
    base: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn deadline(&self, idle: Duration) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

async fn one_way<R, W>(from: &mut R, to: &mut W, activity: &Activity) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUFFER];
    let mut total = 0u64;
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on; the other direction keeps going.
            to.shutdown().await?;
            return Ok(total);
        }
        activity.touch();
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
        activity.touch();
        total += n as u64;
    }
}

/// Copies `a` ↔ `b` until both directions end, an error occurs, or no
/// byte has moved for `idle`; an idle pipe shuts both write sides down
/// (TLS: close_notify) before the streams are dropped.
pub async fn pipe<A, B>(a: A, b: B, idle: Duration) -> std::io::Result<PipeEnd>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Activity {
        base: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let copy = async {
        tokio::try_join!(
            one_way(&mut ar, &mut bw, &activity),
            one_way(&mut br, &mut aw, &activity)
        )
    };
    let watchdog = async {
        loop {
            let deadline = activity.deadline(idle);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let end = tokio::select! {
        r = copy => r.map(|(a_to_b, b_to_a)| PipeEnd::Closed { a_to_b, b_to_a }),
        () = watchdog => Ok(PipeEnd::Idle),
    };
    if end.as_ref().is_ok_and(|e| *e == PipeEnd::Idle) {
        // Best effort: a peer that does not read must not hold us here.
        let close = async {
            let _ = tokio::join!(aw.shutdown(), bw.shutdown());
        };
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, close).await;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn copies_both_ways_and_passes_half_close() {
        let (mut client, a) = duplex(64);
        let (b, mut server) = duplex(64);
        let task = tokio::spawn(pipe(a, b, Duration::from_secs(5)));
        client.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        client.shutdown().await.unwrap();
        // The server sees EOF but can still answer.
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
        server.write_all(b"pong!").await.unwrap();
        server.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"pong!");
        assert_eq!(
            task.await.unwrap().unwrap(),
            PipeEnd::Closed {
                a_to_b: 4,
                b_to_a: 5
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn closes_after_idle_but_not_while_busy() {
        let (mut client, a) = duplex(64);
        let (b, mut server) = duplex(64);
        let started = Instant::now();
        let task = tokio::spawn(pipe(a, b, Duration::from_secs(10)));
        // Traffic every 6 s keeps it open past 10 s.
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_secs(6)).await;
            client.write_all(b"x").await.unwrap();
            let mut one = [0u8; 1];
            server.read_exact(&mut one).await.unwrap();
        }
        assert!(!task.is_finished());
        assert_eq!(task.await.unwrap().unwrap(), PipeEnd::Idle);
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_secs(28) && elapsed < Duration::from_secs(29),
            "{elapsed:?}"
        );
        // Both sides are closed once the pipe gave up.
        let mut buf = [0u8; 1];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0);
        assert_eq!(server.read(&mut buf).await.unwrap(), 0);
    }
}
