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

/// Copy buffer per direction for streams that may be TLS (a record is at
/// most 16 KiB of plaintext).
const BUFFER: usize = 16 * 1024;
/// Copy buffer per direction between two plain TCP sockets (passthrough):
/// larger reads mean fewer system calls per megabyte.
const TCP_BUFFER: usize = 64 * 1024;
/// Bytes moved per splice(2) round: a pipe's default capacity, so filling
/// an empty pipe never blocks on the pipe itself.
const PIPE_CHUNK: usize = 64 * 1024;
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
    fn new() -> Self {
        Activity {
            base: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn deadline(&self, idle: Duration) -> Instant {
        self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + idle
    }
}

async fn one_way<R, W>(
    from: &mut R,
    to: &mut W,
    activity: &Activity,
    buffer: usize,
) -> std::io::Result<u64>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; buffer];
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
    let activity = Activity::new();
    let (mut ar, mut aw) = tokio::io::split(a);
    let (mut br, mut bw) = tokio::io::split(b);
    let copy = async {
        tokio::try_join!(
            one_way(&mut ar, &mut bw, &activity, BUFFER),
            one_way(&mut br, &mut aw, &activity, BUFFER)
        )
    };
    let end = until_idle(copy, &activity, idle).await;
    if end.as_ref().is_ok_and(|e| *e == PipeEnd::Idle) {
        // Best effort: a peer that does not read must not hold us here.
        let close = async {
            let _ = tokio::join!(aw.shutdown(), bw.shutdown());
        };
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, close).await;
    }
    end
}

/// [`pipe`] between two plain TCP sockets (SNI passthrough).
///
/// Each direction starts by copying through a small user-space buffer;
/// once it has moved [`SPLICE_AFTER`] bytes it switches to splice(2), so
/// the bytes of a long transfer move socket → pipe → socket inside the
/// kernel. Short flows (a handshake and a request) never pay for the two
/// kernel pipes. Where splice is refused (not Linux, no pipes left), the
/// copy goes on with a larger buffer.
pub async fn pipe_tcp(
    a: &mut tokio::net::TcpStream,
    b: &mut tokio::net::TcpStream,
    idle: Duration,
) -> std::io::Result<PipeEnd> {
    let activity = Activity::new();
    let end = {
        let (mut ar, mut aw) = a.split();
        let (mut br, mut bw) = b.split();
        let copy = async {
            tokio::try_join!(
                tcp_one_way(&mut ar, &mut bw, &activity),
                tcp_one_way(&mut br, &mut aw, &activity)
            )
        };
        until_idle(copy, &activity, idle).await
    };
    if end.as_ref().is_ok_and(|e| *e == PipeEnd::Idle) {
        let _ = rustix::net::shutdown(&*a, rustix::net::Shutdown::Write);
        let _ = rustix::net::shutdown(&*b, rustix::net::Shutdown::Write);
    }
    end
}

/// Bytes one direction of [`pipe_tcp`] copies through user space before it
/// switches to splice(2) (HAProxy's `splice-auto` waits for a full buffer
/// too): creating two kernel pipes costs more than copying a handshake.
pub const SPLICE_AFTER: u64 = 64 * 1024;
/// The copy buffer of a direction before it splices (not zeroed: tokio
/// reads into its spare capacity).
const SMALL_BUFFER: usize = 16 * 1024;

/// One direction of [`pipe_tcp`]: copies until [`SPLICE_AFTER`] bytes
/// have moved, then splices (or copies on with a larger buffer); at the
/// end of `from`, half-closes `to`.
async fn tcp_one_way(
    from: &mut tokio::net::tcp::ReadHalf<'_>,
    to: &mut tokio::net::tcp::WriteHalf<'_>,
    activity: &Activity,
) -> std::io::Result<u64> {
    let mut buf = Vec::with_capacity(SMALL_BUFFER);
    let mut total = 0u64;
    while total < SPLICE_AFTER {
        buf.clear();
        // A short read clears the socket's readiness (tokio), so the next
        // round waits for the reactor instead of failing a read first.
        let n = from.read_buf(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on; the other direction keeps going.
            half_close(to.as_ref())?;
            return Ok(total);
        }
        activity.touch();
        to.write_all(&buf).await?;
        activity.touch();
        total += n as u64;
    }
    drop(buf);
    let rest = match kernel_pipe() {
        Ok(pipe) => splice_one_way(from.as_ref(), to.as_ref(), &pipe, activity).await?,
        Err(_) => one_way(from, to, activity, TCP_BUFFER).await?,
    };
    Ok(total + rest)
}

/// Shuts the write side of `to` down; a socket its peer has already reset
/// needs no half-close (and the pipe still ends `Closed`, with its counts).
fn half_close(to: &tokio::net::TcpStream) -> std::io::Result<()> {
    match rustix::net::shutdown(to, rustix::net::Shutdown::Write) {
        Err(e) if e != rustix::io::Errno::NOTCONN => Err(e.into()),
        _ => Ok(()),
    }
}

/// A non-blocking kernel pipe: (read end, write end).
fn kernel_pipe() -> std::io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    use rustix::pipe::PipeFlags;
    Ok(rustix::pipe::pipe_with(
        PipeFlags::NONBLOCK | PipeFlags::CLOEXEC,
    )?)
}

/// Moves `from` → `to` through `pipe` with splice(2) until `from` ends,
/// then half-closes `to`. Each round fills the empty pipe from the socket
/// (at most its capacity, so only the socket can make it wait) and drains
/// it completely into the other socket (so only that socket can).
async fn splice_one_way(
    from: &tokio::net::TcpStream,
    to: &tokio::net::TcpStream,
    pipe: &(std::os::fd::OwnedFd, std::os::fd::OwnedFd),
    activity: &Activity,
) -> std::io::Result<u64> {
    use rustix::pipe::{SpliceFlags, splice};
    use tokio::io::Interest;
    let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
    let (pipe_out, pipe_in) = pipe;
    let mut total = 0u64;
    loop {
        let n = loop {
            from.readable().await?;
            match from.try_io(Interest::READABLE, || {
                Ok(splice(from, None, pipe_in, None, PIPE_CHUNK, flags)?)
            }) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        };
        if n == 0 {
            // Pass the half-close on; the other direction keeps going.
            half_close(to)?;
            return Ok(total);
        }
        activity.touch();
        let mut left = n;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || {
                Ok(splice(pipe_out, None, to, None, left, flags)?)
            }) {
                Ok(m) => left -= m,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
        activity.touch();
        total += n as u64;
    }
}

/// Runs `copy` until it ends or no byte has moved for `idle`.
async fn until_idle(
    copy: impl Future<Output = std::io::Result<(u64, u64)>>,
    activity: &Activity,
    idle: Duration,
) -> std::io::Result<PipeEnd> {
    let watchdog = async {
        loop {
            let deadline = activity.deadline(idle);
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    tokio::select! {
        r = copy => r.map(|(a_to_b, b_to_a)| PipeEnd::Closed { a_to_b, b_to_a }),
        () = watchdog => Ok(PipeEnd::Idle),
    }
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

    /// A connected pair of loopback TCP sockets.
    async fn tcp_pair() -> (tokio::net::TcpStream, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (connected, accepted) =
            tokio::join!(tokio::net::TcpStream::connect(addr), listener.accept());
        (connected.unwrap(), accepted.unwrap().0)
    }

    #[tokio::test]
    async fn tcp_pipe_copies_a_megabyte_both_ways_and_passes_half_close() {
        let (mut client, mut a) = tcp_pair().await;
        let (mut b, mut server) = tcp_pair().await;
        let task =
            tokio::spawn(async move { pipe_tcp(&mut a, &mut b, Duration::from_secs(5)).await });
        let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&sent).await.unwrap();
            client.shutdown().await.unwrap();
            client
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, big);
        server.write_all(b"pong!").await.unwrap();
        server.shutdown().await.unwrap();
        let mut client = writer.await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"pong!");
        assert_eq!(
            task.await.unwrap().unwrap(),
            PipeEnd::Closed {
                a_to_b: 1_000_000,
                b_to_a: 5
            }
        );
    }

    #[tokio::test]
    async fn tcp_pipe_closes_both_sides_when_idle() {
        let (mut client, mut a) = tcp_pair().await;
        let (mut b, mut server) = tcp_pair().await;
        let idle = Duration::from_millis(300);
        let started = Instant::now();
        let task = tokio::spawn(async move { pipe_tcp(&mut a, &mut b, idle).await });
        client.write_all(b"x").await.unwrap();
        let mut one = [0u8; 1];
        server.read_exact(&mut one).await.unwrap();
        // Nothing more moves: both peers see the pipe's FIN.
        assert_eq!(task.await.unwrap().unwrap(), PipeEnd::Idle);
        assert!(started.elapsed() >= idle);
        assert_eq!(client.read(&mut one).await.unwrap(), 0);
        assert_eq!(server.read(&mut one).await.unwrap(), 0);
    }

    #[tokio::test]
    async fn tcp_pipe_switches_to_splice_mid_stream_in_both_directions() {
        // Both directions cross SPLICE_AFTER, in writes that straddle it.
        let (client, mut a) = tcp_pair().await;
        let (mut b, server) = tcp_pair().await;
        let task =
            tokio::spawn(async move { pipe_tcp(&mut a, &mut b, Duration::from_secs(5)).await });
        let len = usize::try_from(SPLICE_AFTER).unwrap() * 3 + 12_345;
        let up: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
        let down: Vec<u8> = (0..len).map(|i| (i % 241) as u8).collect();
        let echo = |mut s: tokio::net::TcpStream, data: Vec<u8>| async move {
            let (mut r, mut w) = s.split();
            let write = async {
                for piece in data.chunks(7_000) {
                    w.write_all(piece).await.unwrap();
                }
                w.shutdown().await.unwrap();
            };
            let mut got = Vec::new();
            tokio::join!(write, r.read_to_end(&mut got)).1.unwrap();
            got
        };
        let (at_server, at_client) =
            tokio::join!(echo(server, down.clone()), echo(client, up.clone()));
        assert!(at_server == up && at_client == down);
        let n = len as u64;
        assert_eq!(
            task.await.unwrap().unwrap(),
            PipeEnd::Closed {
                a_to_b: n,
                b_to_a: n
            }
        );
    }
}
