//! The admin listener (/healthz, /readyz, /metrics) and the file watcher
//! that triggers reloads (built on `ward_tls::watch`).

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use ward_tls::server::{ServeOptions, serve_http};

use crate::Shared;

/// Serves the admin routes until `stop`.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let service = tower::service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move {
            let (status, ctype, body) = match req.uri().path() {
                "/healthz" => (StatusCode::OK, "text/plain", "ok\n".to_owned()),
                "/readyz" => (StatusCode::OK, "text/plain", "ready\n".to_owned()),
                "/metrics" => (
                    StatusCode::OK,
                    ward_telemetry::Registry::content_type(),
                    shared.registry.render(),
                ),
                _ => (
                    StatusCode::NOT_FOUND,
                    "application/json",
                    r#"{"error":"not_found","message":"no such route"}"#.to_owned(),
                ),
            };
            let mut resp = Response::new(Full::new(Bytes::from(body)));
            *resp.status_mut() = status;
            if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
                resp.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = serve_http(listener, service, ServeOptions::default(), stopped).await {
        tracing::warn!(error = %e, "admin listener stopped");
    }
}

/// Every file the configuration names (and the configuration file).
fn watched_files(shared: &Shared) -> HashSet<PathBuf> {
    let runtime = shared.runtime.load();
    let mut files: Vec<PathBuf> = Vec::new();
    for t in &runtime.config.tenants {
        files.extend(
            [&t.cert, &t.key, &t.client_ca]
                .into_iter()
                .flatten()
                .cloned(),
        );
        files.extend(t.policy.clone());
        files.extend(t.routes.iter().filter_map(|r| r.policy.clone()));
    }
    if let Some(u) = &runtime.config.upstream_tls {
        files.extend(u.ca.clone());
        files.extend(u.cert.clone());
        files.extend(u.key.clone());
    }
    if let crate::Source::File(p) = &shared.source {
        files.push(p.clone());
    }
    files.into_iter().collect()
}

/// Watches every file the configuration names and reloads, debounced, when
/// one of them may read differently (written, renamed over, swapped
/// through a symlink as Kubernetes Secret volumes do). Dropping the
/// returned watcher stops it.
pub fn watch_files(shared: Arc<Shared>) -> Option<ward_tls::watch::FileWatcher> {
    let files = watched_files(&shared);
    ward_tls::watch::watch_files(files, move || shared.reload().is_ok())
}
