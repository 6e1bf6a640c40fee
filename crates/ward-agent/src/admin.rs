//! The admin listener: `/healthz` (the process runs), `/readyz` (an
//! identity is held and renewal has not been refused), `/metrics`.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use ward_tls::server::{ServeOptions, serve_http};

use crate::metrics::Metrics;
use crate::workload::Published;

fn reply(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    resp
}

/// Serves the admin routes until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    published: watch::Receiver<Published>,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()> + Send + 'static,
) {
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let published = published.clone();
        let metrics = metrics.clone();
        async move {
            let now = SystemTime::now();
            let state = published.borrow().clone();
            let resp = match req.uri().path() {
                "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
                "/readyz" => match state {
                    Published::Ready(svid) if !svid.is_expired(now) => {
                        reply(StatusCode::OK, "text/plain", "ready\n".into())
                    }
                    Published::Ready(_) => reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "application/json",
                        r#"{"error":"expired","message":"the identity expired"}"#.into(),
                    ),
                    Published::Pending => reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "application/json",
                        r#"{"error":"no_identity","message":"no identity yet"}"#.into(),
                    ),
                    Published::Refused(_) => reply(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "application/json",
                        r#"{"error":"renewal_refused","message":"the CA refused renewal"}"#.into(),
                    ),
                },
                "/metrics" => {
                    let not_after = match &state {
                        Published::Ready(svid) => Some(svid.not_after()),
                        _ => None,
                    };
                    reply(
                        StatusCode::OK,
                        ward_telemetry::Registry::content_type(),
                        metrics.render(not_after, now),
                    )
                }
                _ => reply(
                    StatusCode::NOT_FOUND,
                    "application/json",
                    r#"{"error":"not_found","message":"no such route"}"#.into(),
                ),
            };
            Ok::<_, Infallible>(resp)
        }
    });
    if let Err(e) = serve_http(listener, service, ServeOptions::default(), stop).await {
        tracing::warn!(error = %e, "admin listener stopped");
    }
}
