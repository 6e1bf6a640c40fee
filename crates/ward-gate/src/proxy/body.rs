//! The client's request body on its way upstream, remembering whether it
//! failed: when forwarding fails because the client's own body is broken
//! (a malformed chunk size, a connection cut mid-body), the answer is 400
//! and blames the client, not 502 and the upstream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A request body that records its own failure.
#[derive(Debug)]
pub struct ClientBody {
    inner: Inner,
    failed: Arc<AtomicBool>,
}

#[derive(Debug)]
enum Inner {
    /// Streams from the client.
    Stream(Incoming),
    /// Read already; `None` once sent.
    Buffered(Option<Bytes>),
}

/// Tells whether a [`ClientBody`] failed.
#[derive(Debug, Clone)]
pub struct BodyFailed(Arc<AtomicBool>);

impl BodyFailed {
    /// Whether reading the client's body failed.
    pub fn failed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

impl ClientBody {
    /// Wraps a request body; the second value reports its failure.
    pub fn new(inner: Incoming) -> (Self, BodyFailed) {
        let failed = Arc::new(AtomicBool::new(false));
        (
            ClientBody {
                inner: Inner::Stream(inner),
                failed: failed.clone(),
            },
            BodyFailed(failed),
        )
    }

    /// A body read whole already (it cannot fail).
    pub fn buffered(bytes: Bytes) -> Self {
        ClientBody {
            inner: Inner::Buffered((!bytes.is_empty()).then_some(bytes)),
            failed: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        match &mut this.inner {
            Inner::Stream(inner) => {
                let polled = Pin::new(inner).poll_frame(cx);
                if let Poll::Ready(Some(Err(_))) = &polled {
                    this.failed.store(true, Ordering::Relaxed);
                }
                polled
            }
            Inner::Buffered(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Stream(inner) => inner.is_end_stream(),
            Inner::Buffered(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Stream(inner) => inner.size_hint(),
            Inner::Buffered(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}
