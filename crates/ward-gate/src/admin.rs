//! The admin listener (/healthz, /readyz, /metrics) and the file watcher
//! that triggers reloads.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

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
    files.into_iter().map(absolute).collect()
}

pub(crate) fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map_or(p.clone(), |cwd| cwd.join(p))
    }
}

fn parent_dir(p: &std::path::Path) -> PathBuf {
    p.parent()
        .map_or_else(|| PathBuf::from("/"), std::path::Path::to_path_buf)
}

/// Watches the configuration's directories and reloads, debounced, when
/// something in them changes. Dropping the returned watcher stops it.
pub fn watch_files(shared: Arc<Shared>) -> Option<notify::RecommendedWatcher> {
    let files = watched_files(&shared);
    on_file_change(files, move || {
        let _ = shared.reload();
    })
}

/// Calls `on_change`, debounced (editors and `mv` produce bursts of
/// events), whenever one of `files` (absolute paths) changes. Their
/// directories are watched, since files are replaced by rename, but only
/// events on the named files count: an audit log in the same directory must
/// not trigger reloads. Dropping the returned watcher stops it.
pub(crate) fn on_file_change(
    files: HashSet<PathBuf>,
    on_change: impl Fn() + Send + 'static,
) -> Option<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let dirs: HashSet<PathBuf> = files.iter().map(|f| parent_dir(f)).collect();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(e) = event
            && !e.kind.is_access()
            && e.paths.iter().any(|p| files.contains(p))
        {
            let _ = tx.send(());
        }
    })
    .map_err(|e| tracing::warn!(error = %e, "file watching unavailable; reload with SIGHUP"))
    .ok()?;
    for dir in dirs {
        if let Err(e) = watcher.watch(&dir, RecursiveMode::NonRecursive) {
            tracing::warn!(error = %e, dir = %dir.display(), "cannot watch directory");
        }
    }
    tokio::spawn(async move {
        while rx.recv().await.is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            while rx.try_recv().is_ok() {}
            on_change();
        }
    });
    Some(watcher)
}
