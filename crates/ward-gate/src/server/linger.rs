//! Lingering close for hyper's HTTP/1 connections.
//!
//! The gate may answer a request before it reads the request's body (a
//! refusal). hyper then closes the connection with the client's bytes
//! still unread, and closing a socket with unread bytes sends a TCP reset:
//! a client still sending its body sees "connection reset" (or a broken
//! pipe) instead of the answer. When the request handler asks for it
//! ([`ConnContext::linger`]), this stream's shutdown sends close_notify
//! and FIN as usual, then reads and drops what the client still sends
//! (raw TLS records, not decrypted) until it closes, up to
//! [`super::LINGER_BYTES`] or for [`super::LINGER_TIME`]. The HTTP/1 fast
//! path does the same in [`super::h1`].

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::Tls;
use super::prefixed::Prefixed;
use crate::pipeline::ConnContext;

/// A client stream whose shutdown lingers when its connection asks.
pub(crate) struct Lingering {
    inner: Prefixed<Tls>,
    ctx: Arc<ConnContext>,
    state: State,
}

enum State {
    /// Not shut down (or shutting down: close_notify and FIN).
    Open,
    /// Shut down; reading what the client still sends.
    Draining {
        left: usize,
        until: Pin<Box<Sleep>>,
        buf: Vec<u8>,
    },
    /// Done.
    Closed,
}

impl Lingering {
    /// `inner`, lingering on shutdown once `ctx.linger` is set.
    pub(crate) fn new(inner: Prefixed<Tls>, ctx: Arc<ConnContext>) -> Self {
        Lingering {
            inner,
            ctx,
            state: State::Open,
        }
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
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
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Open => {
                    let shut = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
                    if shut.is_err() || !this.ctx.linger.load(Ordering::Relaxed) {
                        this.state = State::Closed;
                        return Poll::Ready(shut);
                    }
                    this.state = State::Draining {
                        left: super::LINGER_BYTES,
                        until: Box::pin(tokio::time::sleep(super::LINGER_TIME)),
                        // On the heap: allocated only by a connection that lingers.
                        buf: vec![0u8; 16 * 1024],
                    };
                }
                State::Draining { left, until, buf } => {
                    if until.as_mut().poll(cx).is_ready() {
                        this.state = State::Closed;
                        continue;
                    }
                    let (tcp, _) = this.inner.get_mut().get_mut();
                    let mut read = ReadBuf::new(buf);
                    match ready!(Pin::new(tcp).poll_read(cx, &mut read)) {
                        Ok(()) if !read.filled().is_empty() => {
                            *left = left.saturating_sub(read.filled().len());
                            if *left == 0 {
                                this.state = State::Closed;
                            }
                        }
                        // The client closed (or the connection failed).
                        Ok(()) | Err(_) => this.state = State::Closed,
                    }
                }
                State::Closed => return Poll::Ready(Ok(())),
            }
        }
    }
}
