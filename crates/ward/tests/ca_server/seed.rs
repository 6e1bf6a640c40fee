//! The seed's serverless function code, unchanged in substance: Node.js with
//! only its built-in `https` module fetches `{certificate, private_key,
//! ca_chain}` from `/internal/pki/issue-certificate` with a bootstrap token,
//! builds an `https.Agent` from them and completes an mTLS request to a
//! server (rustls, client certificates required) that reports who called.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use rustls::server::WebPkiClientVerifier;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::harness::{Backend, Ca, OutputText, Req, pem_certs};

on_both_backends!(
    node_function_gets_a_certificate_and_completes_mtls,
    seed_route_keeps_its_error_codes_under_a_race,
);

/// The seed's `getHttpsAgent` + request, with axios replaced by the
/// built-in `https` module.
const FUNCTION: &str = r#"
const https = require('https');

const PHOENIX_CA_URL = process.env.PHOENIX_CA_URL;
const BOOTSTRAP_TOKEN = process.env.BOOTSTRAP_TOKEN;
const TARGET_URL = process.env.TARGET_URL;

function request(url, options, body) {
  return new Promise((resolve, reject) => {
    const req = https.request(url, options, (res) => {
      let data = '';
      res.setEncoding('utf8');
      res.on('data', (chunk) => { data += chunk; });
      res.on('end', () => resolve({ status: res.statusCode, body: data }));
    });
    req.on('error', reject);
    req.setTimeout(10000, () => req.destroy(new Error('timeout')));
    if (body) req.write(body);
    req.end();
  });
}

let httpsAgent = null;

async function getHttpsAgent() {
  if (httpsAgent) return httpsAgent;
  const payload = JSON.stringify({ bootstrap_token: BOOTSTRAP_TOKEN });
  const response = await request(`${PHOENIX_CA_URL}/internal/pki/issue-certificate`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
  }, payload);
  if (response.status !== 200) {
    throw new Error(`CA answered ${response.status}: ${response.body}`);
  }
  const { certificate, private_key, ca_chain } = JSON.parse(response.body);
  httpsAgent = new https.Agent({
    cert: certificate,
    key: private_key,
    ca: ca_chain,
    keepAlive: true,
  });
  return httpsAgent;
}

async function main() {
  const agent = await getHttpsAgent();
  const res = await request(TARGET_URL, { method: 'GET', agent });
  console.log(JSON.stringify(res));
  agent.destroy();
}

main().catch((error) => {
  console.error('mTLS certificate acquisition or request failed:', error);
  process.exit(1);
});
"#;

/// A server that requires a client certificate from the CA's root and
/// answers each request with 200 and the caller's SPIFFE ID.
async fn mtls_server(ca: &Ca) -> (std::net::SocketAddr, tokio::task::JoinHandle<Vec<String>>) {
    let prefix = ca.pki().issue(
        "server",
        "spiffe://example.org/api",
        &["--dns", "localhost", "--ip", "127.0.0.1"],
    );
    let mut roots = RootCertStore::empty();
    for c in pem_certs(&ca.root()) {
        roots.add(c).unwrap();
    }
    let provider = ward_tls::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(ward_tls::TLS13_ONLY)
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(
            pem_certs(&prefix.with_extension("crt")),
            PrivateKeyDer::from_pem_file(prefix.with_extension("key")).unwrap(),
        )
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        // One request is all the function makes.
        let (tcp, _) = listener.accept().await.unwrap();
        let mut tls = acceptor.accept(tcp).await.expect("mTLS handshake");
        let leaf = tls
            .get_ref()
            .1
            .peer_certificates()
            .expect("a client certificate")[0]
            .clone();
        let id = ward_pki::inspect::spiffe_id_of(&leaf)
            .unwrap()
            .map(|id| id.to_string())
            .unwrap_or_default();
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = tls.read(&mut buf).await.unwrap();
            assert!(n > 0, "request cut short");
            head.extend_from_slice(&buf[..n]);
        }
        let body = json!({ "spiffe_id": id }).to_string();
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tls.write_all(answer.as_bytes()).await.unwrap();
        tls.shutdown().await.unwrap();
        vec![id]
    });
    (addr, task)
}

fn run_node(script: &Path, env: Vec<(&'static str, String)>) -> std::process::Output {
    Command::new("node")
        .arg(script)
        .envs(env)
        .output()
        .expect("node runs")
}

async fn node_function_gets_a_certificate_and_completes_mtls(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    let server = ca.serve();
    let client = ca.client(&server);
    let id = "spiffe://example.org/fn/checkout";
    let token = ca.token(id, &["--cert-ttl", "15m"]);

    let (target, seen) = mtls_server(&ca).await;
    let script = ca.write("function.js", FUNCTION);
    let env = vec![
        // The CA connection trusts the CA root, as a deployed function
        // trusts its CA through the platform's bundle.
        ("NODE_EXTRA_CA_CERTS", ca.root().display().to_string()),
        ("PHOENIX_CA_URL", format!("https://{}", server.addr)),
        ("BOOTSTRAP_TOKEN", token.secret.clone()),
        (
            "TARGET_URL",
            format!("https://127.0.0.1:{}/v1/secure-data", target.port()),
        ),
    ];
    let out = tokio::task::spawn_blocking(move || run_node(&script, env))
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "node failed: {}{}",
        out.stdout_text(),
        out.stderr_text()
    );
    let printed: Value = serde_json::from_str(out.stdout_text().trim()).unwrap();
    assert_eq!(printed["status"], 200, "{printed}");
    let body: Value = serde_json::from_str(printed["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["spiffe_id"], id);
    assert_eq!(seen.await.unwrap(), [id]);

    // The wire format's errors.
    for body in [json!({}), json!({ "bootstrap_token": "" })] {
        let resp = client.post("/internal/pki/issue-certificate", &body).await;
        assert_eq!(resp.expect(400)["error"], "missing_bootstrap_token");
    }
    for bad in [
        "wdt_definitely-not-a-token".to_owned(),
        token.secret.clone(), // already used (one use)
    ] {
        let resp = client
            .send(&Req::json(
                "/internal/pki/issue-certificate",
                &json!({ "bootstrap_token": bad }),
            ))
            .await;
        assert_eq!(resp.expect(401)["error"], "invalid_bootstrap_token");
    }
    // A direct call: exactly the seed's three fields; `certificate` leads
    // with the leaf and `ca_chain` ends with the root.
    let token = ca.token(id, &[]);
    let json = client
        .post(
            "/internal/pki/issue-certificate",
            &json!({ "bootstrap_token": token.secret }),
        )
        .await
        .expect(200);
    let mut keys: Vec<&String> = json.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["ca_chain", "certificate", "private_key"]);
    let chain = ca.write("seed-chain.pem", json["ca_chain"].as_str().unwrap());
    let chain = pem_certs(&chain);
    assert_eq!(chain.last(), pem_certs(&ca.root()).first());
    assert!(
        json["private_key"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );

    // The audit log says what each caller got: 200 for the seed route's
    // successes (not the 201 of Ward's own routes), then 400, 400, 401, 401.
    let seed_statuses = || -> Vec<u64> {
        server
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v["event"] == "issuance" && v["route"] == "seed_issue")
            .map(|v| v["status"].as_u64().unwrap())
            .collect()
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while seed_statuses().len() < 6 && std::time::Instant::now() < until {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(
        seed_statuses(),
        [200, 400, 400, 401, 401, 200],
        "{}",
        server.stdout()
    );
}

/// Regression: a one-use token raced on the seed route. Losers refused by
/// the store (not by the first check) used to get 401 `token_used`, outside
/// the seed's wire format; every loser must get `invalid_bootstrap_token`.
async fn seed_route_keeps_its_error_codes_under_a_race(backend: Backend) {
    let Some(ca) = Ca::new(backend) else { return };
    let server = ca.serve();
    let client = ca.client(&server);
    let token = ca.token("spiffe://example.org/fn/raced", &[]);
    let req = Req::json(
        "/internal/pki/issue-certificate",
        &json!({ "bootstrap_token": token.secret }),
    );
    let barrier = Arc::new(tokio::sync::Barrier::new(20));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (client, barrier, req) = (client.clone(), barrier.clone(), req.clone());
        tasks.spawn(async move {
            let mut conn = client.connect().await.unwrap();
            barrier.wait().await;
            conn.send(&req).await.unwrap()
        });
    }
    let mut ok = 0;
    while let Some(resp) = tasks.join_next().await {
        let resp = resp.unwrap();
        if resp.status == 200 {
            ok += 1;
        } else {
            assert_eq!(resp.expect(401)["error"], "invalid_bootstrap_token");
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(ca.token_info(&token.id)["uses"], 1);
}
