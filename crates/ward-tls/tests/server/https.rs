//! Who the service sees: `PeerInfo` over HTTP/1.1 and HTTP/2 with and
//! without client certificates, and over plain HTTP.

use std::io;

use hyper::{StatusCode, Version};
use rustls::AlertDescription;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use ward_tls::config::ClientAuth;
use ward_tls::server::ServeOptions;

use crate::common::{
    PATIENCE, Reply, SlowGate, app, client_config, get_h1, h1, h2, request, roots, start,
    start_tls, tls_connect,
};

#[tokio::test]
async fn http1_request_with_client_cert_sees_peer_chain() {
    let (_, server) = start_tls(ClientAuth::Required(roots())).await;
    let stream = tls_connect(server.addr, client_config(&[b"http/1.1"], Some("client")))
        .await
        .unwrap();
    let local = stream.get_ref().0.local_addr().unwrap();
    let (mut sender, _) = h1(stream).await;

    let reply = get_h1(&mut sender, "/whoami").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    let f = reply.fields();
    assert_eq!(f["id"], "spiffe://example.org/client");
    assert_eq!(f["chain_len"], "2", "leaf and intermediate, as sent");
    assert_eq!(f["http"], "HTTP/1.1");
    assert_eq!(f["alpn"], "http/1.1");
    assert_eq!(f["tls"], "Some(TLSv1_3)");
    assert_eq!(f["cipher_set"], "true");
    assert_eq!(f["sni"], "localhost");
    assert_eq!(f["remote"], local.to_string());
}

#[tokio::test]
async fn http2_request_with_client_cert_sees_peer_chain() {
    let (_, server) = start_tls(ClientAuth::Required(roots())).await;
    let stream = tls_connect(
        server.addr,
        client_config(&[b"h2", b"http/1.1"], Some("client")),
    )
    .await
    .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let mut sender = h2(stream).await;

    let response = sender
        .send_request(request("https://localhost/whoami"))
        .await
        .unwrap();
    let reply = Reply::read(response).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert_eq!(reply.version, Version::HTTP_2);
    let f = reply.fields();
    assert_eq!(f["id"], "spiffe://example.org/client");
    assert_eq!(f["http"], "HTTP/2.0");
    assert_eq!(f["alpn"], "h2");
}

#[tokio::test]
async fn optional_client_auth_lets_anonymous_clients_in_without_chain() {
    let (_, server) = start_tls(ClientAuth::Optional(roots())).await;

    let anonymous = tls_connect(server.addr, client_config(&[b"http/1.1"], None))
        .await
        .unwrap();
    let (mut sender, _) = h1(anonymous).await;
    let reply = get_h1(&mut sender, "/whoami").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.fields()["id"], "-");
    assert_eq!(reply.fields()["chain_len"], "0");

    let known = tls_connect(server.addr, client_config(&[b"http/1.1"], Some("client")))
        .await
        .unwrap();
    let (mut sender, _) = h1(known).await;
    let reply = get_h1(&mut sender, "/whoami").await;
    assert_eq!(reply.fields()["id"], "spiffe://example.org/client");
}

#[tokio::test]
async fn required_client_auth_refuses_clients_without_cert() {
    let (_, server) = start_tls(ClientAuth::Required(roots())).await;

    // In TLS 1.3 the client may finish its side of the handshake before the
    // server judges it; the refusal then arrives as an alert on first read.
    let attempt = async {
        let mut stream = tls_connect(server.addr, client_config(&[b"http/1.1"], None)).await?;
        stream
            .write_all(b"GET /whoami HTTP/1.1\r\nhost: localhost\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, io::Error>(response)
    };
    let error = timeout(PATIENCE, attempt).await.unwrap().unwrap_err();
    let tls_error = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>());
    assert_eq!(
        tls_error,
        Some(&rustls::Error::AlertReceived(
            AlertDescription::CertificateRequired
        )),
        "{error}"
    );
}

#[tokio::test]
async fn plain_http_serves_router_with_address_only_peer_info() {
    let server = start(None, ServeOptions::default(), app(SlowGate::default())).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let local = tcp.local_addr().unwrap();
    let (mut sender, _) = h1(tcp).await;

    let reply = get_h1(&mut sender, "/whoami").await;
    assert_eq!(reply.status, StatusCode::OK);
    let f = reply.fields();
    assert_eq!(f["id"], "-");
    assert_eq!(f["tls"], "None");
    assert_eq!(f["sni"], "-");
    assert_eq!(f["http"], "HTTP/1.1");
    assert_eq!(f["remote"], local.to_string());
}
