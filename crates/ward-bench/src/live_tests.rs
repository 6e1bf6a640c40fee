//! The load modes against a real mTLS server on 127.0.0.1: a rustls server
//! (Ward's provider, TLS 1.3, client certificate required, default session
//! tickets) answering every request with hyper, and PEM files from rcgen.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use ward_tls::config::{ClientAuth, server_config};
use ward_tls::credentials::Credentials;

use crate::conn::{Target, TlsOptions};
use crate::load::{Load, Workload};

/// PEM files of a root, a server certificate and a client certificate.
struct Pki {
    dir: PathBuf,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: Vec<u8>,
    root: CertificateDer<'static>,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Pki {
    fn new() -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "ward-bench-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let alg = &rcgen::PKCS_ECDSA_P256_SHA256;
        let root_key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut root_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = root_params.self_signed(&root_key).unwrap();
        let issuer = rcgen::Issuer::new(root_params, root_key);

        let server_key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .subject_alt_names
            .push(rcgen::SanType::IpAddress([127, 0, 0, 1].into()));
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let server = params.signed_by(&server_key, &issuer).unwrap();

        let client_key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let client = params.signed_by(&client_key, &issuer).unwrap();

        std::fs::write(dir.join("root.crt"), root.pem()).unwrap();
        std::fs::write(dir.join("client.crt"), client.pem()).unwrap();
        std::fs::write(dir.join("client.key"), client_key.serialize_pem()).unwrap();
        Pki {
            dir,
            server_chain: vec![server.der().clone()],
            server_key: server_key.serialize_der(),
            root: root.der().clone(),
        }
    }

    /// Starts the mTLS server; returns its `https://` URL.
    async fn serve(&self) -> String {
        let mut roots = RootCertStore::empty();
        roots.add(self.root.clone()).unwrap();
        let credentials = Credentials::new(
            self.server_chain.clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.server_key.clone())),
        )
        .unwrap();
        let mut config =
            server_config(Arc::new(credentials), ClientAuth::Required(Arc::new(roots))).unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(|_request| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from_static(b"ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        format!("https://{addr}/")
    }

    async fn target(&self, url: &str, resumption: bool) -> Target {
        let cert = self.dir.join("client.crt");
        let key = self.dir.join("client.key");
        let roots = self.dir.join("root.crt");
        Target::with_options(
            url,
            &TlsOptions {
                ca_bundle: Some(&roots),
                server_name: Some("localhost"),
                client_cert: Some((&cert, &key)),
                resumption,
                kx_group: None,
                skip_chain_verify: false,
            },
        )
        .await
        .unwrap()
    }
}

fn get(mode: &'static str, fresh_connection: bool) -> Workload {
    Workload {
        mode,
        method: http::Method::GET,
        path: "/".to_owned(),
        body: Bytes::new(),
        content_type: None,
        fresh_connection,
    }
}

fn load(concurrency: usize, duration_ms: u64, rate: Option<f64>) -> Load {
    Load {
        concurrency,
        duration: Duration::from_millis(duration_ms),
        warmup: Duration::ZERO,
        rate,
        request_timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_handshakes_never_resume() {
    let pki = Pki::new();
    let url = pki.serve().await;
    let target = pki.target(&url, false).await;
    let s = crate::load::run(target, get("handshake", true), load(4, 400, None))
        .await
        .unwrap();
    assert_eq!(s.errors, 0, "{s:?}");
    assert!(s.ok > 0);
    assert_eq!(s.resumed, 0);
    // One handshake per request (a request in flight at the end may have
    // its handshake counted and not its answer).
    assert!(s.handshakes >= s.ok && s.handshakes <= s.ok + 4, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_mode_resumes_all_but_each_workers_first() {
    let pki = Pki::new();
    let url = pki.serve().await;
    let target = pki.target(&url, true).await;
    let s = crate::load::run(target, get("resume", true), load(4, 400, None))
        .await
        .unwrap();
    assert_eq!(s.errors, 0, "{s:?}");
    assert!(s.ok > 8, "{s:?}");
    assert!(s.resumed + 4 >= s.handshakes, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_rate_is_kept_and_timed_from_the_slot() {
    let pki = Pki::new();
    let url = pki.serve().await;
    let target = pki.target(&url, false).await;
    let s = crate::load::run(target, get("keepalive", false), load(4, 1000, Some(200.0)))
        .await
        .unwrap();
    assert_eq!(s.errors, 0, "{s:?}");
    // 200 slots in the window; the first connections' handshakes may make
    // a few late, none may be skipped.
    assert!((190.0..=201.0).contains(&s.rps), "{s:?}");
    // A local keep-alive GET takes well under the 5 ms between slots of one
    // worker, so the median wait from slot to answer is short.
    assert!(s.p50_ms < 5.0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_holds_its_connections() {
    let pki = Pki::new();
    let url = pki.serve().await;
    let target = pki.target(&url, false).await;
    let s = crate::idle::run(
        target,
        crate::idle::Plan {
            connections: 20,
            parallel: 4,
            request: true,
            path: "/".to_owned(),
            setup_timeout: Duration::from_secs(20),
            hold: Duration::from_millis(200),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (s.established, s.open_at_end, s.errors),
        (20, 20, 0),
        "{s:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_gives_up_on_a_closed_port() {
    let pki = Pki::new();
    // Bind and drop: nothing listens there any more.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let target = pki.target(&format!("https://{addr}/"), false).await;
    let started = std::time::Instant::now();
    let s = crate::idle::run(
        target,
        crate::idle::Plan {
            connections: 10,
            parallel: 10,
            request: false,
            path: "/".to_owned(),
            setup_timeout: Duration::from_secs(30),
            hold: Duration::ZERO,
        },
    )
    .await
    .unwrap();
    assert_eq!(s.established, 0);
    assert!(s.errors > 100, "{s:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
}
