//! The plain-HTTP listener of the http-01 challenge: it answers
//! `GET /.well-known/acme-challenge/TOKEN` with the pending key
//! authorization and redirects every other request to HTTPS (308, same
//! host and path), so port 80 serves nothing but challenges.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::{Challenges, stopped};

/// The challenge path prefix.
pub const PREFIX: &str = "/.well-known/acme-challenge/";
/// Longest a connection may stay open.
const CONN_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for a request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections at once.
const MAX_CONNECTIONS: usize = 256;
/// Largest request head read.
const MAX_HEAD: usize = 16 * 1024;

/// Serves `listener` until `stop` turns true.
pub async fn serve(listener: TcpListener, challenges: Challenges, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            () = stopped(&mut stop) => return,
        };
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "http-01 listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => return,
        };
        let challenges = challenges.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let challenges = challenges.clone();
                async move { Ok::<_, Infallible>(answer(&challenges, &req)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .max_buf_size(MAX_HEAD)
                .serve_connection(TokioIo::new(tcp), service);
            let _ = tokio::time::timeout(CONN_TIMEOUT, conn).await;
            drop(permit);
        });
    }
}

/// The response to one request.
pub fn answer(challenges: &Challenges, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    answer_parts(challenges, req.method(), req.uri(), req.headers())
}

fn answer_parts(
    challenges: &Challenges,
    method: &Method,
    uri: &hyper::Uri,
    headers: &hyper::HeaderMap,
) -> Response<Full<Bytes>> {
    let path = uri.path();
    if let Some(token) = path.strip_prefix(PREFIX) {
        if method != Method::GET && method != Method::HEAD {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
        }
        return match challenges.http(token) {
            Some(key_authorization) => plain(StatusCode::OK, &key_authorization),
            None => plain(StatusCode::NOT_FOUND, "no such challenge\n"),
        };
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.parse::<hyper::http::uri::Authority>().ok())
        .map(|a| a.host().to_owned());
    let Some(host) = host else {
        return plain(StatusCode::BAD_REQUEST, "a Host header is required\n");
    };
    let target = match uri.path_and_query() {
        Some(pq) => format!("https://{host}{pq}"),
        None => format!("https://{host}/"),
    };
    let mut response = plain(StatusCode::PERMANENT_REDIRECT, "use HTTPS\n");
    if let Ok(v) = header::HeaderValue::from_str(&target) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    response
}

fn plain(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(c: &Challenges, method: Method, uri: &str, host: Option<&str>) -> Response<Full<Bytes>> {
        let mut headers = hyper::HeaderMap::new();
        if let Some(h) = host {
            headers.insert(header::HOST, h.parse().unwrap());
        }
        answer_parts(c, &method, &uri.parse().unwrap(), &headers)
    }

    #[test]
    fn serves_challenges_and_redirects_the_rest() {
        let c = Challenges::default();
        c.add_http("tok", "tok.thumb");
        let ok = get(
            &c,
            Method::GET,
            "/.well-known/acme-challenge/tok",
            Some("a.test"),
        );
        assert_eq!(ok.status(), StatusCode::OK);
        let missing = get(&c, Method::GET, "/.well-known/acme-challenge/other", None);
        assert_eq!(missing.status(), StatusCode::NOT_FOUND);
        let post = get(&c, Method::POST, "/.well-known/acme-challenge/tok", None);
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        let r = get(&c, Method::GET, "/app?x=1", Some("a.test:80"));
        assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(r.headers()[header::LOCATION], "https://a.test/app?x=1");
        let no_host = get(&c, Method::GET, "/app", None);
        assert_eq!(no_host.status(), StatusCode::BAD_REQUEST);
        let bad_host = get(&c, Method::GET, "/app", Some("a b"));
        assert_eq!(bad_host.status(), StatusCode::BAD_REQUEST);
    }
}
