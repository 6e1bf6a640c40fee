//! A fixed plain-HTTP upstream for gate benchmarks: every request on any
//! path gets `200 OK` with the same small body, over keep-alive HTTP/1.1.
//! It does as little as a server can, so the numbers measure the proxy in
//! front of it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The body of every answer.
pub(crate) const BODY: &[u8] = b"hello from ward-bench upstream\n";

/// Listens on `listen`, prints `ward-bench upstream: listening on
/// http://ADDR` on stderr once bound, and serves until killed.
pub(crate) async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let addr = listener.local_addr().context("local address")?;
    eprintln!("ward-bench upstream: listening on http://{addr}");
    let body = Bytes::from_static(BODY);
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(e) => {
                // Out of file descriptors and the like: wait, keep serving.
                eprintln!("ward-bench upstream: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let service = service_fn(move |_request| {
                let body = body.clone();
                async move {
                    let mut response = http::Response::new(Full::new(body));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("text/plain"),
                    );
                    Ok::<_, Infallible>(response)
                }
            });
            // A client going away mid-request is normal under load.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
