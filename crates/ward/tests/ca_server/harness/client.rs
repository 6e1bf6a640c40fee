//! An HTTPS client for the CA: tokio-rustls and hyper's HTTP/1.1 client
//! connection, one connection per request or one per worker in a burst,
//! and the admin API queries the scenarios count rows with.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::oracles::pem_certs;

/// An HTTP request to send (cloneable, so bursts can repeat it).
#[derive(Clone, Debug)]
pub(crate) struct Req {
    method: Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Req {
    /// `GET path`.
    pub(crate) fn get(path: &str) -> Req {
        Req {
            method: Method::GET,
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// `POST path` with a JSON body.
    pub(crate) fn json(path: &str, body: &Value) -> Req {
        Req::raw(path, body.to_string().into_bytes())
    }

    /// `POST path` with these bytes as an `application/json` body.
    pub(crate) fn raw(path: &str, body: Vec<u8>) -> Req {
        Req {
            method: Method::POST,
            path: path.to_owned(),
            headers: vec![("content-type".into(), "application/json".into())],
            body,
        }
    }

    /// `DELETE path`.
    pub(crate) fn delete(path: &str) -> Req {
        Req {
            method: Method::DELETE,
            ..Req::get(path)
        }
    }

    /// Replaces the `Content-Type` (`None`: sends none).
    pub(crate) fn content_type(mut self, value: Option<&str>) -> Req {
        self.headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case("content-type"));
        if let Some(v) = value {
            self.headers.push(("content-type".into(), v.into()));
        }
        self
    }

    /// Adds a header.
    pub(crate) fn header(mut self, name: &str, value: &str) -> Req {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A response: status and body.
#[derive(Clone, Debug)]
pub(crate) struct Resp {
    /// HTTP status.
    pub(crate) status: u16,
    /// Body bytes.
    pub(crate) body: Vec<u8>,
}

impl Resp {
    /// The body as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.status, self.text()))
    }

    /// Asserts the status and returns the JSON body.
    pub(crate) fn expect(&self, status: u16) -> Value {
        assert_eq!(self.status, status, "{}", self.text());
        self.json()
    }

    /// Asserts an error answer in SPEC §5's one shape:
    /// exactly `{"error": code, "message": "…"}`.
    pub(crate) fn expect_error(&self, status: u16, code: &str) {
        let json = self.expect(status);
        let obj = json.as_object().unwrap_or_else(|| panic!("{json}"));
        assert_eq!(obj.len(), 2, "{json}");
        assert_eq!(json["error"], code, "{json}");
        assert!(
            json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{json}"
        );
    }
}

/// An HTTPS client for one server.
#[derive(Clone)]
pub(crate) struct Client {
    addr: SocketAddr,
    config: Arc<ClientConfig>,
}

impl Client {
    /// A client for `addr` trusting `root`, presenting `identity` (chain, key) if given.
    pub(crate) fn new(addr: SocketAddr, root: &Path, identity: Option<(&Path, &Path)>) -> Client {
        let mut roots = RootCertStore::empty();
        for cert in pem_certs(root) {
            roots.add(cert).unwrap();
        }
        let builder = ClientConfig::builder_with_provider(ward_tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(pem_certs(chain), PrivateKeyDer::from_pem_file(key).unwrap())
                .unwrap(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Client {
            addr,
            config: Arc::new(config),
        }
    }

    /// The same client presenting `chain`/`key`.
    pub(crate) fn with_identity(&self, root: &Path, chain: &Path, key: &Path) -> Client {
        Client::new(self.addr, root, Some((chain, key)))
    }

    /// Opens a connection (TCP, TLS, HTTP/1.1 handshake).
    pub(crate) async fn connect(&self) -> Result<Conn, String> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let tls = TlsConnector::from(self.config.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender })
    }

    /// Writes `bytes` on a new HTTP/1.1 TLS connection and returns
    /// everything the server sends until it closes (bounded to 30 s).
    pub(crate) async fn raw_http1(&self, bytes: &[u8]) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        let mut tls = TlsConnector::from(self.config.clone())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        // A server that refuses the request from its head (413 on the
        // Content-Length) may answer and close before the body is all
        // written: the write then fails, and the answer is still there to
        // read.
        let written = async {
            tls.write_all(bytes).await?;
            tls.flush().await
        };
        if let Err(e) = written.await {
            assert!(
                matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ),
                "writing the request: {e}"
            );
        }
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), tls.read_to_end(&mut out));
        // The server may close without a TLS close_notify: keep what came.
        let _ = read.await.expect("the server answers and closes");
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Sends one request on a new connection.
    pub(crate) async fn try_send(&self, req: &Req) -> Result<Resp, String> {
        self.connect().await?.send(req).await
    }

    /// Sends one request on a new connection; a transport error fails the test.
    pub(crate) async fn send(&self, req: &Req) -> Resp {
        self.try_send(req)
            .await
            .unwrap_or_else(|e| panic!("{} {}: {e}", req.method, req.path))
    }

    /// `GET path`.
    pub(crate) async fn get(&self, path: &str) -> Resp {
        self.send(&Req::get(path)).await
    }

    /// `POST path` with a JSON body.
    pub(crate) async fn post(&self, path: &str, body: &Value) -> Resp {
        self.send(&Req::json(path, body)).await
    }
}

/// One HTTP/1.1 connection; requests on it go one after another.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
}

impl Conn {
    /// Sends a request and reads the whole answer.
    pub(crate) async fn send(&mut self, req: &Req) -> Result<Resp, String> {
        self.sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let mut builder = Request::builder()
            .method(req.method.clone())
            .uri(&req.path)
            .header("host", "localhost");
        for (name, value) in &req.headers {
            builder = builder.header(name, value);
        }
        let request = builder
            .body(Full::new(Bytes::from(req.body.clone())))
            .unwrap();
        let response = self
            .sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes()
            .to_vec();
        Ok(Resp { status, body })
    }
}

/// `/v1/sign` with a token in the body.
pub(crate) fn sign_req(token: &str, csr: &str) -> Req {
    Req::json(
        "/v1/sign",
        &serde_json::json!({ "token": token, "csr": csr }),
    )
}

/// Results of a load run.
pub(crate) struct Burst {
    /// Every answer, or the transport error, in completion order.
    pub(crate) results: Vec<Result<Resp, String>>,
    /// Latency of each answered request.
    pub(crate) latencies: Vec<Duration>,
    /// Wall time of the whole run.
    pub(crate) wall: Duration,
}

impl Burst {
    /// Statuses of the answers, errors as 0.
    pub(crate) fn statuses(&self) -> Vec<u16> {
        self.results
            .iter()
            .map(|r| r.as_ref().map_or(0, |r| r.status))
            .collect()
    }

    /// A one-line summary: requests, throughput, p50, p99.
    pub(crate) fn summary(&self) -> String {
        let mut l = self.latencies.clone();
        l.sort();
        let pct = |p: usize| l.get((l.len() * p / 100).min(l.len().saturating_sub(1)));
        format!(
            "{} requests in {:.2?} ({:.0}/s), p50 {:.1?}, p99 {:.1?}",
            self.results.len(),
            self.wall,
            self.results.len() as f64 / self.wall.as_secs_f64(),
            pct(50).copied().unwrap_or_default(),
            pct(99).copied().unwrap_or_default(),
        )
    }
}

/// Sends `total` copies of `req` with at most `in_flight` at a time, each
/// worker keeping one connection open (and opening a new one after an
/// error). `stop` ends the run early when it returns true for the answers
/// so far; `on_answer` sees each answer as it arrives.
pub(crate) async fn burst(
    client: &Client,
    req: &Req,
    total: usize,
    in_flight: usize,
    on_answer: Arc<dyn Fn(&Resp) + Send + Sync>,
) -> Burst {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..in_flight.min(total) {
        let (client, req, next, on_answer) =
            (client.clone(), req.clone(), next.clone(), on_answer.clone());
        workers.spawn(async move {
            let mut out = Vec::new();
            let mut conn: Option<Conn> = None;
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                let result = match conn.take() {
                    Some(c) => Ok(c),
                    None => client.connect().await,
                };
                let result = match result {
                    Ok(mut c) => {
                        let r = c.send(&req).await;
                        if r.is_ok() {
                            conn = Some(c);
                        }
                        r
                    }
                    Err(e) => Err(e),
                };
                if let Ok(resp) = &result {
                    on_answer(resp);
                }
                out.push((result, t.elapsed()));
            }
            out
        });
    }
    let mut results = Vec::new();
    let mut latencies = Vec::new();
    while let Some(done) = workers.join_next().await {
        for (result, latency) in done.unwrap() {
            if result.is_ok() {
                latencies.push(latency);
            }
            results.push(result);
        }
    }
    Burst {
        results,
        latencies,
        wall: started.elapsed(),
    }
}

/// Every recorded certificate, through the admin API (pages of 1,000).
pub(crate) async fn all_certificates(admin: &Client) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let page = admin
            .get(&format!(
                "/v1/admin/certificates?limit=1000&offset={}",
                out.len()
            ))
            .await
            .expect(200);
        let certs = page["certificates"].as_array().unwrap().clone();
        let total = page["total"].as_u64().unwrap();
        let done = certs.is_empty();
        out.extend(certs);
        if done || out.len() as u64 >= total {
            return out;
        }
    }
}

/// The number of recorded certificates (the admin API's `total`).
pub(crate) async fn count(admin: &Client) -> u64 {
    admin
        .get("/v1/admin/certificates?limit=1")
        .await
        .expect(200)["total"]
        .as_u64()
        .unwrap()
}

/// Serials of the recorded certificates issued from `token_id`.
pub(crate) async fn serials_of_token(admin: &Client, token_id: &str) -> Vec<String> {
    all_certificates(admin)
        .await
        .iter()
        .filter(|c| c["token_id"] == token_id)
        .map(|c| c["serial"].as_str().unwrap().to_owned())
        .collect()
}
