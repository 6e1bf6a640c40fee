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
    inner: Incoming,
    failed: Arc<AtomicBool>,
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
                inner,
                failed: failed.clone(),
            },
            BodyFailed(failed),
        )
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &polled {
            self.failed.store(true, Ordering::Relaxed);
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
