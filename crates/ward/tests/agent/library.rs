//! `ward-client`'s auto-rotating rustls configurations, in process: an mTLS
//! connection made before a rotation keeps working, a new one uses the new
//! certificate on both sides.

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use ward_client::{BootstrapConfig, CaTrust, RotationState, Rotator, Token};

use super::procs::{CaProcess, DEADLINE};
use crate::harness::{Backend, Ca};

/// Accepts mTLS connections; to each, sends the SHA-256 of the client's
/// leaf as the first line, then echoes lines.
async fn echo_server(listener: TcpListener, acceptor: TlsAcceptor) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let peer = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
            let (read, mut write) = tokio::io::split(tls);
            let hello = format!("{}\n", ward_pki::Fingerprint::of_der(&peer));
            write.write_all(hello.as_bytes()).await.unwrap();
            let mut lines = BufReader::new(read).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if write
                    .write_all(format!("{line}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

struct Conn {
    lines: tokio::io::Lines<
        BufReader<tokio::io::ReadHalf<tokio_rustls::client::TlsStream<TcpStream>>>,
    >,
    write: tokio::io::WriteHalf<tokio_rustls::client::TlsStream<TcpStream>>,
    /// Fingerprint of the server's leaf.
    server_leaf: String,
    /// Fingerprint of our leaf as the server saw it.
    seen_by_server: String,
}

async fn connect(rotator: &Rotator, addr: std::net::SocketAddr) -> Conn {
    let connector = TlsConnector::from(rotator.client_config().unwrap());
    let tcp = TcpStream::connect(addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let server_leaf =
        ward_pki::Fingerprint::of_der(&tls.get_ref().1.peer_certificates().unwrap()[0]).to_string();
    let (read, write) = tokio::io::split(tls);
    let mut lines = BufReader::new(read).lines();
    let seen_by_server = lines.next_line().await.unwrap().unwrap();
    Conn {
        lines,
        write,
        server_leaf,
        seen_by_server,
    }
}

impl Conn {
    async fn echo(&mut self, text: &str) -> String {
        self.write
            .write_all(format!("{text}\n").as_bytes())
            .await
            .unwrap();
        self.lines.next_line().await.unwrap().unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_configs_keep_open_connections_and_use_new_certificates() {
    ward_tls::install_default_provider();
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = CaProcess::start(&ca, "127.0.0.1:0");
    let token = ca.token(
        "spiffe://example.org/lib",
        &["--cert-ttl", "10s", "--dns", "localhost"],
    );
    let config = BootstrapConfig::new(
        server.url(),
        CaTrust::bundle_file(&ca.root()).unwrap(),
        Token::new(&token.secret).unwrap(),
    );
    let rotator = Rotator::bootstrap(config).await.unwrap();
    let first = rotator.current();
    assert_eq!(first.spiffe_id().as_str(), "spiffe://example.org/lib");
    let first_fp = first.fingerprint().to_string();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(rotator.server_config().unwrap());
    tokio::spawn(echo_server(listener, acceptor));

    let mut before = connect(&rotator, addr).await;
    assert_eq!(before.server_leaf, first_fp);
    assert_eq!(before.seen_by_server, first_fp);
    assert_eq!(before.echo("one").await, "one");

    let mut updates = rotator.subscribe();
    tokio::time::timeout(DEADLINE, updates.changed())
        .await
        .expect("a rotation within the deadline")
        .unwrap();
    let second = rotator.current();
    let second_fp = second.fingerprint().to_string();
    assert_ne!(second_fp, first_fp);
    assert_ne!(
        second.key_pkcs8_der(),
        first.key_pkcs8_der(),
        "renewal rotates the key"
    );
    assert_eq!(second.spiffe_id(), first.spiffe_id());
    // The status follows right after the identity.
    let mut status = rotator.status();
    tokio::time::timeout(DEADLINE, status.wait_for(|s| s.renewals >= 1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.borrow().state, RotationState::Healthy);

    // The connection made before the rotation is untouched.
    assert_eq!(before.echo("two").await, "two");
    // A new one uses the new certificate, on both sides (same config objects).
    let after = connect(&rotator, addr).await;
    assert_eq!(after.server_leaf, second_fp);
    assert_eq!(after.seen_by_server, second_fp);
    assert_eq!(before.echo("three").await, "three");
    // The resolver is what both configurations consult.
    assert!(Arc::ptr_eq(
        &rotator.resolver().current(),
        &rotator.current().certified_key()
    ));
}
