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
/// it is dropped unfinished (a cancelled call: no status, `-`).
pub(super) struct Accounted {
    inner: ProxyBody,
    pending: Option<Pending>,
    grpc_status: Option<String>,
}

impl Accounted {
    /// Wraps the body of `response`, whose head may already carry the
    /// status (a trailers-only response).
    pub(super) fn wrap(response: Response<ProxyBody>, pending: Pending) -> Response<ProxyBody> {
        let grpc_status = status_of(response.headers());
        response.map(|inner| {
            Accounted {
                inner,
                pending: Some(pending),
                grpc_status,
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
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(status) = status_of(trailers)
                {
                    self.grpc_status = Some(status);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.finish(),
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
