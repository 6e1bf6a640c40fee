//! Upstreams the gate forwards to: an HTTP/1 server (hyper, on its own
//! thread and runtime) that answers with the request it received as JSON,
//! and a line echo server for TCP mode.

use std::convert::Infallible;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{oneshot, watch};

/// What the echo server shares with its handlers.
struct State {
    hits: AtomicUsize,
    slow_started: Mutex<mpsc::Sender<()>>,
    release: watch::Receiver<bool>,
}

/// An HTTP/1.1 upstream that answers every request with
/// `{"method","path","version","headers":[[name,value],…]}`. `GET /slow`
/// answers only after [`Echo::release_slow`].
pub(crate) struct Echo {
    pub(crate) addr: SocketAddr,
    state: Arc<State>,
    slow_started: mpsc::Receiver<()>,
    release: watch::Sender<bool>,
    stop: Option<oneshot::Sender<()>>,
}

async fn answer(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.hits.fetch_add(1, Ordering::SeqCst);
    if req.uri().path() == "/slow" {
        let _ = state.slow_started.lock().unwrap().send(());
        let mut release = state.release.clone();
        let _ = release.wait_for(|r| *r).await;
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "version": format!("{:?}", req.version()),
        "headers": headers,
    });
    Ok(Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap())
}

impl Echo {
    /// Starts the server on 127.0.0.1:0.
    pub(crate) fn start() -> Echo {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (started_tx, slow_started) = mpsc::channel();
        let (release, release_rx) = watch::channel(false);
        let state = Arc::new(State {
            hits: AtomicUsize::new(0),
            slow_started: Mutex::new(started_tx),
            release: release_rx,
        });
        let (stop, mut stop_rx) = oneshot::channel();
        let shared = state.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                loop {
                    let tcp = tokio::select! {
                        a = listener.accept() => match a { Ok((tcp, _)) => tcp, Err(_) => continue },
                        _ = &mut stop_rx => break,
                    };
                    let state = shared.clone();
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |req| answer(state.clone(), req));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(tcp), service)
                            .await;
                    });
                }
            });
        });
        Echo {
            addr,
            state,
            slow_started,
            release,
            stop: Some(stop),
        }
    }

    /// `http://ADDR`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests received so far.
    pub(crate) fn hits(&self) -> usize {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until a `/slow` request has arrived.
    pub(crate) fn wait_slow_started(&self) {
        self.slow_started
            .recv_timeout(Duration::from_secs(20))
            .expect("a /slow request reaches the upstream");
    }

    /// Lets every `/slow` request answer.
    pub(crate) fn release_slow(&self) {
        self.release.send_replace(true);
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.release.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A TCP server that answers each line with `echo: LINE` and closes the
/// connection on the line `bye`.
pub(crate) struct LineEcho {
    pub(crate) addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl LineEcho {
    /// Starts it on 127.0.0.1:0 (the accept thread lives until the test
    /// binary exits).
    pub(crate) fn start() -> LineEcho {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = connections.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                count.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    let mut out = tcp.try_clone().unwrap();
                    for line in BufReader::new(tcp).lines() {
                        let Ok(line) = line else { return };
                        if line == "bye" {
                            return;
                        }
                        if writeln!(out, "echo: {line}").is_err() {
                            return;
                        }
                    }
                });
            }
        });
        LineEcho { addr, connections }
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}
