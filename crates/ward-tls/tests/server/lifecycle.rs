//! The server's life: handshake and header deadlines, the connection cap,
//! certificate rotation, graceful shutdown and its deadline, and the
//! credential checks behind rotation.

use std::io;
use std::time::{Duration, Instant};

use hyper::StatusCode;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use ward_testkit::{read_certs, read_key};
use ward_tls::config::ClientAuth;
use ward_tls::credentials::Credentials;
use ward_tls::server::{ServeOptions, serve_http};

use crate::common::{
    PATIENCE, SlowGate, app, client_config, get_h1, h1, leaf, request, server_leaf, start,
    start_tls, tls_config, tls_connect,
};

#[tokio::test]
async fn silent_client_is_dropped_after_handshake_timeout() {
    let (_, config) = tls_config(ClientAuth::None);
    let opts = ServeOptions {
        handshake_timeout: Duration::from_millis(200),
        ..ServeOptions::default()
    };
    let server = start(Some(config), opts, app(SlowGate::default())).await;

    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let connected = Instant::now();
    let mut byte = [0u8; 1];
    let read = timeout(PATIENCE, silent.read(&mut byte))
        .await
        .expect("the server never closed the silent connection");
    assert_eq!(read.unwrap(), 0, "expected EOF");
    assert!(
        connected.elapsed() >= Duration::from_millis(190),
        "closed after {:?}, before the handshake timeout",
        connected.elapsed()
    );

    // The server is still serving.
    let stream = tls_connect(server.addr, client_config(&[b"http/1.1"], None))
        .await
        .unwrap();
    let (mut sender, _) = h1(stream).await;
    assert_eq!(get_h1(&mut sender, "/whoami").await.status, StatusCode::OK);
}

#[tokio::test]
async fn rotation_reaches_new_connections_and_spares_open_ones() {
    let (cert, server) = start_tls(ClientAuth::None).await;

    let old = tls_connect(server.addr, client_config(&[b"http/1.1"], None))
        .await
        .unwrap();
    assert_eq!(server_leaf(&old), leaf("server.crt"));
    let (mut old_sender, _) = h1(old).await;
    assert_eq!(
        get_h1(&mut old_sender, "/whoami").await.status,
        StatusCode::OK
    );

    cert.update(read_certs("peer.crt"), read_key("peer.key"))
        .unwrap();

    let new = tls_connect(server.addr, client_config(&[b"http/1.1"], None))
        .await
        .unwrap();
    assert_eq!(server_leaf(&new), leaf("peer.crt"));

    // The keep-alive connection made before the update still serves.
    assert_eq!(
        get_h1(&mut old_sender, "/whoami").await.status,
        StatusCode::OK
    );

    // A key that does not belong to the leaf is refused and changes nothing.
    let error = cert
        .update(read_certs("server.crt"), read_key("client.key"))
        .unwrap_err();
    assert!(matches!(error, ward_tls::Error::Credentials(_)), "{error}");
    let after = tls_connect(server.addr, client_config(&[b"http/1.1"], None))
        .await
        .unwrap();
    assert_eq!(server_leaf(&after), leaf("peer.crt"));
}

#[tokio::test]
async fn graceful_shutdown_finishes_in_flight_requests_and_refuses_new_connections() {
    let gate = SlowGate::default();
    let (started, release) = gate.arm();
    let (_, config) = tls_config(ClientAuth::None);
    let mut server = start(Some(config), ServeOptions::default(), app(gate)).await;

    // A: a request held in flight by the service.
    let a = tls_connect(server.addr, client_config(&[b"http/1.1"], None))
        .await
        .unwrap();
    let (mut a_sender, _) = h1(a).await;
    let in_flight = tokio::spawn(async move { get_h1(&mut a_sender, "/slow").await });
    timeout(PATIENCE, started).await.unwrap().unwrap();

    // B: an idle keep-alive connection; its closing shows that the server
    // has acted on the shutdown.
    let b = tls_connect(server.addr, client_config(&[b"http/1.1"], None))
        .await
        .unwrap();
    let (mut b_sender, b_conn) = h1(b).await;
    assert_eq!(
        get_h1(&mut b_sender, "/whoami").await.status,
        StatusCode::OK
    );

    server.stop();
    timeout(PATIENCE, b_conn)
        .await
        .expect("the idle connection was not closed at shutdown")
        .unwrap()
        .unwrap();

    // While A drains, the listener is gone.
    let refused = TcpStream::connect(server.addr).await.unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    assert!(!in_flight.is_finished());

    release.send(()).unwrap();
    let reply = timeout(PATIENCE, in_flight).await.unwrap().unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "done");
    server.finished().await.unwrap();
}

#[tokio::test]
async fn drain_timeout_closes_stragglers_and_reports_it() {
    let gate = SlowGate::default();
    let (started, _release) = gate.arm();
    let (_, config) = tls_config(ClientAuth::None);
    let opts = ServeOptions {
        drain_timeout: Duration::from_millis(100),
        ..ServeOptions::default()
    };
    let mut server = start(Some(config), opts, app(gate)).await;

    let a = tls_connect(server.addr, client_config(&[b"http/1.1"], None))
        .await
        .unwrap();
    let (mut sender, conn) = h1(a).await;
    let in_flight = tokio::spawn(async move { sender.send_request(request("/slow")).await });
    timeout(PATIENCE, started).await.unwrap().unwrap();

    server.stop();
    let error = server.finished().await.unwrap_err();
    assert!(matches!(error, ward_tls::Error::Timeout(_)), "{error}");
    // The straggler's connection was closed under it.
    assert!(
        timeout(PATIENCE, in_flight)
            .await
            .unwrap()
            .unwrap()
            .is_err()
    );
    timeout(PATIENCE, conn).await.unwrap().unwrap().ok();
}

#[tokio::test]
async fn slow_headers_are_cut_off_by_header_read_timeout() {
    let opts = ServeOptions {
        header_read_timeout: Duration::from_millis(200),
        ..ServeOptions::default()
    };
    let server = start(None, opts, app(SlowGate::default())).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let sent = Instant::now();
    tcp.write_all(b"GET /whoami HTTP/1.1\r\nhost: loc")
        .await
        .unwrap();

    let mut rest = Vec::new();
    timeout(PATIENCE, tcp.read_to_end(&mut rest))
        .await
        .expect("the server waited forever for the headers")
        .unwrap();
    assert!(sent.elapsed() >= Duration::from_millis(190));
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
}

#[tokio::test]
async fn connections_over_the_limit_wait_for_a_free_slot() {
    let opts = ServeOptions {
        max_connections: 1,
        ..ServeOptions::default()
    };
    let server = start(None, opts, app(SlowGate::default())).await;

    let (mut first, first_conn) = h1(TcpStream::connect(server.addr).await.unwrap()).await;
    assert_eq!(get_h1(&mut first, "/whoami").await.status, StatusCode::OK);

    // The second connection is queued in the backlog, not served...
    let (mut second, _) = h1(TcpStream::connect(server.addr).await.unwrap()).await;
    let mut waiting = tokio::spawn(async move { get_h1(&mut second, "/whoami").await });
    assert!(
        timeout(Duration::from_millis(300), &mut waiting)
            .await
            .is_err(),
        "served beyond max_connections"
    );

    // ...until the first one closes.
    drop(first);
    first_conn.await.unwrap().unwrap();
    let reply = timeout(PATIENCE, waiting).await.unwrap().unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}

#[tokio::test]
async fn zero_max_connections_is_refused_up_front() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let opts = ServeOptions {
        max_connections: 0,
        ..ServeOptions::default()
    };
    let error = serve_http(
        listener,
        app(SlowGate::default()),
        opts,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(matches!(error, ward_tls::Error::Input(_)), "{error}");
}

#[test]
fn rotating_cert_checks_credentials() {
    let empty = Credentials::new(Vec::new(), read_key("server.key")).unwrap_err();
    assert!(matches!(empty, ward_tls::Error::Credentials(_)), "{empty}");
    let mismatch = Credentials::new(read_certs("server.crt"), read_key("client.key")).unwrap_err();
    assert!(
        matches!(mismatch, ward_tls::Error::Credentials(_)),
        "{mismatch}"
    );
    let cert = Credentials::new(read_certs("server.crt"), read_key("server.key")).unwrap();
    assert_eq!(cert.current().cert[0], leaf("server.crt"));
    assert!(!format!("{cert:?}").contains("key:"), "Debug shows no key");
}

/// The key match is strict (a pair that cannot be compared is refused), so
/// every key type Ward issues must be comparable.
#[test]
fn rotating_cert_accepts_every_key_type_ward_issues() {
    use ward_pki::KeyType;
    use ward_pki::issue::{CaSpec, new_root};

    let spec = CaSpec {
        name: "Rotation test".into(),
        root_validity: Duration::from_secs(3600),
        intermediate_validity: Duration::from_secs(3600),
        permitted_dns: Vec::new(),
    };
    let now = time::OffsetDateTime::now_utc();
    for key_type in [
        KeyType::EcdsaP256,
        KeyType::EcdsaP384,
        KeyType::Ed25519,
        KeyType::Rsa2048,
    ] {
        let key = key_type.generate().unwrap();
        let cert = new_root(&spec, &key, now).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.to_pkcs8_der().unwrap().to_vec(),
        ));
        Credentials::new(vec![cert.der], der).unwrap_or_else(|e| panic!("{key_type}: {e}"));
    }
}
