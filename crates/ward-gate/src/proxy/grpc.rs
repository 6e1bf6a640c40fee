//! gRPC on the hyper path: the gate's own refusals as gRPC statuses
//! (HTTP 200, `grpc-status`, `grpc-message`, no body), and a response body
//! that accounts for the call once its status is known: a gRPC call's
//! outcome is in the trailers, after the whole response has streamed.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Body, Frame, SizeHint};
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};
use tokio::time::{Instant, Sleep};

use super::ProxyBody;
use crate::Shared;
use crate::pipeline::{self, ConnContext, Facts, Refusal};

static GRPC_STATUS: header::HeaderName = header::HeaderName::from_static("grpc-status");
static GRPC_MESSAGE: header::HeaderName = header::HeaderName::from_static("grpc-message");

/// A refusal as a trailers-only gRPC response.
pub(super) fn refusal(refusal: &Refusal) -> Response<ProxyBody> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = StatusCode::OK;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        GRPC_STATUS.clone(),
        HeaderValue::from(refusal.grpc_status()),
    );
    if let Ok(message) = HeaderValue::from_str(&percent_encode(&refusal.message)) {
        headers.insert(GRPC_MESSAGE.clone(), message);
    }
    resp
}

/// `grpc-message` encoding (gRPC over HTTP/2): bytes outside printable
/// ASCII, and `%`, as `%XX`.
fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `grpc-status` of a header block, if it has one.
fn status_of(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(&GRPC_STATUS)?.to_str().ok()?;
    (!value.is_empty() && value.len() <= 3 && value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.to_owned())
}

/// Who to account a forwarded gRPC call to once it ends.
pub(super) struct Pending {
    pub shared: Arc<Shared>,
    pub ctx: Arc<ConnContext>,
    pub facts: Option<Facts>,
    pub route: String,
    pub status: u16,
}

/// A forwarded gRPC response body: streams unchanged, and accounts for the
/// call (metric and audit line with its `grpc-status`) at its end, or when
/// it is dropped unfinished (a cancelled call: no status, `-`). When the
/// call's deadline passes before the upstream's trailers, the upstream
/// body is dropped (its stream reset) and the client gets trailers with
/// `grpc-status` 4 DEADLINE_EXCEEDED.
pub(super) struct Accounted {
    inner: ProxyBody,
    pending: Option<Pending>,
    grpc_status: Option<String>,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl Accounted {
    /// Wraps the body of `response`, whose head may already carry the
    /// status (a trailers-only response); `deadline` from `grpc-timeout`.
    pub(super) fn wrap(
        response: Response<ProxyBody>,
        pending: Pending,
        deadline: Option<Instant>,
    ) -> Response<ProxyBody> {
        let grpc_status = status_of(response.headers());
        let deadline = deadline
            .filter(|_| grpc_status.is_none() && !response.body().is_end_stream())
            .map(|at| Box::pin(tokio::time::sleep_until(at)));
        response.map(|inner| {
            Accounted {
                inner,
                pending: Some(pending),
                grpc_status,
                deadline,
            }
            .boxed()
        })
    }

    fn finish(&mut self) {
        if let Some(p) = self.pending.take() {
            pipeline::finish(
                &p.shared,
                &p.ctx,
                p.facts,
                &p.route,
                p.status,
                None,
                Some(self.grpc_status.as_deref().unwrap_or("-")),
            );
        }
    }
}

impl Body for Accounted {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            self.deadline = None;
            // Dropping the upstream body resets its stream.
            self.inner = Empty::new().map_err(|never| match never {}).boxed();
            self.grpc_status = Some("4".to_owned());
            let mut trailers = HeaderMap::new();
            trailers.insert(GRPC_STATUS.clone(), HeaderValue::from_static("4"));
            trailers.insert(
                GRPC_MESSAGE.clone(),
                HeaderValue::from_static("the call's grpc-timeout passed in the gate"),
            );
            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref() {
                    self.deadline = None;
                    if let Some(status) = status_of(trailers) {
                        self.grpc_status = Some(status);
                    }
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                self.deadline = None;
                self.finish();
            }
            Poll::Pending => {}
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

impl Drop for Accounted {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(percent_encode("no route 100%"), "no route 100%25");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn refusals_are_trailers_only_grpc_responses() {
        let resp = refusal(&Refusal::forbidden(
            "this identity may not use this route".into(),
        ));
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["grpc-status"], "7");
        assert_eq!(resp.headers()["content-type"], "application/grpc");
        assert_eq!(
            resp.headers()["grpc-message"],
            "this identity may not use this route"
        );
        assert!(resp.body().is_end_stream());
    }

    #[test]
    fn only_numeric_statuses_are_taken() {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static("14"));
        assert_eq!(status_of(&h).as_deref(), Some("14"));
        h.insert("grpc-status", HeaderValue::from_static("x"));
        assert_eq!(status_of(&h), None);
    }
}
