//! Waiting for a connection's first byte before building its HTTP server.
//!
//! hyper allocates its read and write buffers (about 8 KiB each) when it
//! starts serving a connection. A client that completed its handshake but
//! has not sent a request yet (a pool's warm spare) would hold them for
//! nothing, so the gate reads one byte first, with no buffer beyond that
//! byte, and hands hyper a stream that replays it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// A stream whose first bytes were already read; they are returned first.
#[derive(Debug)]
pub(crate) struct Prefixed<T> {
    first: BytesMut,
    inner: T,
}

impl<T> Prefixed<T> {
    /// `inner`, with `read` (bytes already taken from it) replayed first.
    pub(crate) fn new(inner: T, read: BytesMut) -> Self {
        Prefixed { first: read, inner }
    }

    /// The stream underneath (bytes read from it are not replayed).
    pub(crate) fn get_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

/// Reads the first byte of `io`; `Ok(None)` when the peer closed first.
pub(crate) async fn first_byte<T: AsyncRead + Unpin>(mut io: T) -> io::Result<Option<Prefixed<T>>> {
    let mut byte = [0u8; 1];
    match io.read(&mut byte).await? {
        0 => Ok(None),
        _ => Ok(Some(Prefixed {
            first: BytesMut::from(&byte[..]),
            inner: io,
        })),
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if buf.remaining() > 0 && !self.first.is_empty() {
            let n = buf.remaining().min(self.first.len());
            buf.put_slice(&self.first[..n]);
            self.first.advance(n);
            if !self.first.is_empty() || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            self.first = BytesMut::new();
            // Add whatever is ready without waiting for more.
            return match Pin::new(&mut self.inner).poll_read(cx, buf) {
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                _ => Poll::Ready(Ok(())),
            };
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncWriteExt, duplex};

    #[tokio::test]
    async fn replays_the_first_byte_then_the_rest() {
        let (mut client, server) = duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut stream = first_byte(server).await.unwrap().unwrap();
        let mut got = vec![0u8; 16];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(got, b"GET / HTTP/1.1\r\n");
        stream.write_all(b"ok").await.unwrap();
        let mut answer = [0u8; 2];
        client.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"ok");
    }

    #[tokio::test]
    async fn a_closed_peer_gives_none() {
        let (client, server) = duplex(64);
        drop(client);
        assert!(first_byte(server).await.unwrap().is_none());
    }
}
