//! An online ML-DSA-65 CA: every way a certificate is made (`/v1/issue`
//! with `key_type`, `/v1/sign` with a CSR from `ward-client`), ML-DSA TLS
//! between two library instances, and a revocation reported by a CRL and
//! an OCSP response that the independent judge verifies.

use rustls_pki_types::ServerName;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use ward_client::{BootstrapConfig, CaTrust, Rotator, Token};
use ward_pki::{KeyType, PublicKeyKind};

use super::independent::judge;
use crate::harness::{Backend, Ca, Req};

fn key_of(der: &[u8]) -> PublicKeyKind {
    ward_pki::inspect::CertInfo::from_der(der, time::OffsetDateTime::now_utc())
        .unwrap()
        .key
}

async fn rotator(ca: &Ca, url: &str, id: &str, key_type: KeyType) -> Rotator {
    let token = ca.token(id, &["--dns", "localhost"]);
    let mut config = BootstrapConfig::new(
        url,
        CaTrust::bundle_file(&ca.root()).unwrap(),
        Token::new(&token.secret).unwrap(),
    );
    config.key_type = key_type;
    Rotator::bootstrap(config).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ml_dsa_ca_issues_signs_and_revokes_with_ml_dsa() {
    ward_tls::install_default_provider();
    let ca = Ca::new_with(Backend::Sqlite, &["--key-type", "ml-dsa-65"]).unwrap();
    let server = ca.serve();
    // The harness client speaks TLS 1.3 to the CA, whose own listener
    // certificate is ML-DSA-65 too (`ward cert inspect` of the endpoint).
    let client = ca.client(&server);
    let admin = ca.admin(&server);
    let out = crate::harness::ward(&[
        "cert",
        "inspect",
        &server.addr.to_string(),
        "--format",
        "json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        crate::harness::OutputText::stderr_text(&out)
    );
    let served: serde_json::Value =
        serde_json::from_str(&crate::harness::OutputText::stdout_text(&out)).unwrap();
    assert_eq!(served["certificates"][0]["key"]["level"], 65, "{served}");

    // /v1/issue: the CA generates an ML-DSA-44 key for the caller.
    let token = ca.token("spiffe://example.org/ns/issued", &[]);
    let issued = client
        .send(&Req::json(
            "/v1/issue",
            &json!({ "token": token.secret, "key_type": "ml-dsa-44" }),
        ))
        .await
        .expect(201);
    let chain = ca.write("issued-chain.pem", issued["chain"].as_str().unwrap());
    let key = ca.write("issued.key", issued["private_key"].as_str().unwrap());
    let leaf = ward_pki::pem::parse_certs(issued["certificate"].as_str().unwrap().as_bytes())
        .unwrap()
        .remove(0);
    assert_eq!(key_of(&leaf), PublicKeyKind::MlDsa { level: 44 });
    judge(&ca.root(), &chain, &[("--key", &key)]);
    // An unknown key type is a 400 naming the ML-DSA ones.
    let token = ca.token("spiffe://example.org/ns/bad", &[]);
    let refused = client
        .send(&Req::json(
            "/v1/issue",
            &json!({ "token": token.secret, "key_type": "ml-dsa-99" }),
        ))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert!(refused.text().contains("ml-dsa-65"), "{}", refused.text());

    // /v1/sign with the library's own ML-DSA-65 CSR, twice: a server and a
    // client identity, then mTLS between them, ML-DSA on both sides.
    let url = server.url("");
    let srv = rotator(&ca, &url, "spiffe://example.org/ns/srv", KeyType::MlDsa65).await;
    let cli = rotator(&ca, &url, "spiffe://example.org/ns/cli", KeyType::MlDsa65).await;
    for r in [&srv, &cli] {
        assert_eq!(
            key_of(r.current().leaf()),
            PublicKeyKind::MlDsa { level: 65 }
        );
    }
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(srv.server_config().unwrap());
    let accepted = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.unwrap();
        let peer = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.unwrap();
        tls.write_all(b"pong").await.unwrap();
        tls.shutdown().await.unwrap();
        peer
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut tls = TlsConnector::from(cli.client_config().unwrap())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    let server_leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
    tls.write_all(b"ping").await.unwrap();
    let mut reply = Vec::new();
    tls.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"pong");
    // Each side authenticated with an ML-DSA-65 key (TLS 1.3
    // CertificateVerify is made with the leaf's key).
    assert_eq!(key_of(&server_leaf), PublicKeyKind::MlDsa { level: 65 });
    let client_leaf = accepted.await.unwrap();
    assert_eq!(key_of(&client_leaf), PublicKeyKind::MlDsa { level: 65 });
    assert_eq!(client_leaf, cli.current().leaf().to_vec());

    // Revoke the client's certificate; the CRL and an OCSP answer about it
    // are ML-DSA-65 signatures the judge verifies.
    let serial = cli.current().serial().to_string();
    admin
        .send(&Req::json(
            "/v1/revoke",
            &json!({ "serial": serial, "reason": "keyCompromise" }),
        ))
        .await
        .expect(200);
    let crl = client.get("/v1/crl").await;
    assert_eq!(crl.status, 200);
    let crl_file = ca.write("crl.der", "");
    std::fs::write(&crl_file, &crl.body).unwrap();
    let int = std::fs::read(ca.file("intermediate.crt")).unwrap();
    let int = ward_pki::pem::parse_certs(&int).unwrap().remove(0);
    let query = ward_pki::ocsp::Query::for_certificate(cli.current().leaf(), &int).unwrap();
    let request = ward_pki::ocsp::build_request(&[query], None).unwrap();
    let answer = client.send(&Req::raw("/ocsp", request)).await;
    assert_eq!(answer.status, 200);
    let ocsp_file = ca.write("ocsp.der", "");
    std::fs::write(&ocsp_file, &answer.body).unwrap();
    let cli_chain = ca.write("cli-chain.pem", &cli.current().chain_pem());
    if let Some(report) = judge(
        &ca.root(),
        &cli_chain,
        &[
            ("--crl", &crl_file),
            ("--ocsp", &ocsp_file),
            ("--revoked", std::path::Path::new(&serial)),
        ],
    ) {
        let checked = report["checked"].to_string();
        assert!(checked.contains("CRL signature"), "{report}");
        assert!(checked.contains("OCSP response signature"), "{report}");
    }
}
