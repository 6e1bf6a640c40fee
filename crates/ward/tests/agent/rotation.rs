//! 30-second certificates through `ward agent run`: files rotate, verify,
//! keep 0600 and trigger `--on-rotate`; the Workload API streams every
//! rotation to an unmodified `spiffe` client and a raw gRPC client, refuses
//! requests without the security header, and is found through
//! `SPIFFE_ENDPOINT_SOCKET`; the token shows up nowhere.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use spiffe::X509Source;
use ward_client::workload_api::proto::X509svidRequest;
use ward_client::workload_api::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use ward_client::workload_api::tonic::Code;
use ward_client::workload_api::{self, with_security_header};

use super::procs::{
    AgentDir, AgentProcess, CaProcess, DEADLINE, admin_get, der_serial, mode, openssl_fingerprint,
    pem_serial, wait_until,
};
use crate::common::{openssl_verify, sample};
use crate::harness::{Backend, Ca, OutputText};

/// The files verify against the root, the key is 0600, the chain's leaf is
/// the serial the agent announced.
fn check_files(ca: &Ca, out: &Path, serial: &str) {
    let (ok, text) = openssl_verify(&ca.root(), &out.join("svid.pem"), "sslclient");
    assert!(ok, "openssl verify: {text}");
    assert_eq!(mode(&out.join("svid_key.pem")), 0o600);
    assert_eq!(pem_serial(&out.join("svid.pem")), serial);
    let bundle = std::fs::read_to_string(out.join("svid_bundle.pem")).unwrap();
    let root = std::fs::read_to_string(ca.root()).unwrap();
    assert_eq!(bundle.trim(), root.trim(), "the bundle is the CA's root");
    // The key belongs to the leaf (openssl compares the public halves).
    let pubkey = |args: &[&str], file: &Path| {
        let out = Command::new("openssl")
            .args(args)
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", out.stderr_text());
        out.stdout
    };
    assert_eq!(
        pubkey(&["x509", "-noout", "-pubkey", "-in"], &out.join("svid.pem")),
        pubkey(&["pkey", "-pubout", "-in"], &out.join("svid_key.pem")),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_rotates_files_and_streams_the_workload_api() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = CaProcess::start(&ca, "127.0.0.1:0");
    let token = ca.token("spiffe://example.org/web", &["--cert-ttl", "12s"]);
    let dir = AgentDir::new(&ca, "agent");
    let out = dir.root.join("out");
    let socket = dir.path("api.sock");
    let hook_log = dir.path("hook.log");
    let hook_env = dir.path("hook.env");
    let hook = format!(
        "stat -c %a {out}/svid_key.pem >> {hook_log}; env >> {hook_env}",
        out = out.display()
    );
    let fingerprint = openssl_fingerprint(&ca.root());
    let mut agent = AgentProcess::start(
        &[
            "--ca",
            &server.url(),
            "--ca-fingerprint",
            &fingerprint,
            "--out-dir",
            out.to_str().unwrap(),
            "--socket",
            &socket,
            "--on-rotate",
            &hook,
            "--admin",
            "127.0.0.1:0",
        ],
        &[("WARD_TOKEN", &token.secret)],
    );
    let first = agent.wait_deliveries(1, DEADLINE)[0].clone();
    println!(
        "agent: process start to files written: {:?}",
        agent.started.elapsed()
    );
    check_files(&ca, &out, &first.serial);
    let admin = agent.line_value("ward agent: admin listening on ").unwrap();
    assert_eq!(admin_get(&admin, "/readyz").0, 200);

    // An unmodified SPIFFE client, pointed at the socket.
    let source = X509Source::builder()
        .endpoint(format!("unix://{socket}"))
        .build()
        .await
        .expect("X509Source connects");
    let svid = source.svid().unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://example.org/web");
    assert_eq!(der_serial(svid.leaf().as_bytes()), first.serial);
    let mut updates = source.updated();

    // A raw client: no security header → InvalidArgument, as the spec requires.
    let channel = workload_api::connect(socket.clone().into()).await.unwrap();
    let mut raw = SpiffeWorkloadApiClient::new(channel);
    let refused = raw.fetch_x509svid(X509svidRequest {}).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    // With it: one stream that carries the rotation.
    let mut stream = raw
        .fetch_x509svid(with_security_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let message = stream.message().await.unwrap().unwrap();
    assert_eq!(message.svids.len(), 1);
    assert_eq!(message.svids[0].spiffe_id, "spiffe://example.org/web");
    let streamed_rotation = tokio::spawn(async move {
        let next = stream.message().await.unwrap().unwrap();
        der_serial(&split_der(&next.svids[0].x509_svid)[0])
    });

    // A Ward consumer that honours SPIFFE_ENDPOINT_SOCKET: `ward agent fetch`.
    let fetch_out = dir.path("fetched");
    let fetched = Command::new(env!("CARGO_BIN_EXE_ward"))
        .args(["agent", "fetch", "--out-dir", &fetch_out])
        .env("SPIFFE_ENDPOINT_SOCKET", format!("unix://{socket}"))
        .output()
        .unwrap();
    assert!(fetched.status.success(), "{}", fetched.stderr_text());
    assert!(
        fetched
            .stdout_text()
            .contains(&format!("serial: {}", first.serial))
    );
    check_files(&ca, Path::new(&fetch_out), &first.serial);

    // Two rotations, each verified as it lands.
    let mut serials = vec![first.serial.clone()];
    for n in 2..=3 {
        let got = agent.wait_deliveries(n, DEADLINE);
        let latest = got[n - 1].serial.clone();
        check_files(&ca, &out, &latest);
        serials.push(latest);
    }
    let mut distinct = serials.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        3,
        "three different certificates: {serials:?}"
    );

    // The raw stream got the first rotation without a new request.
    let rotated = tokio::time::timeout(DEADLINE, streamed_rotation)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated, serials[1]);
    // The spiffe client followed too.
    let until = Instant::now() + DEADLINE;
    while der_serial(source.svid().unwrap().leaf().as_bytes()) == first.serial {
        assert!(Instant::now() < until, "X509Source never saw the rotation");
        let _ = tokio::time::timeout(Duration::from_secs(5), updates.changed()).await;
    }
    assert!(serials[1..].contains(&der_serial(source.svid().unwrap().leaf().as_bytes())));

    // --on-rotate ran after every write, and saw the key at 0600.
    let runs = std::fs::read_to_string(&hook_log).unwrap();
    assert!(runs.lines().count() >= 3, "hook runs: {runs:?}");
    assert!(runs.lines().all(|l| l == "600"), "{runs:?}");
    // The token went nowhere: not to the hook's environment, not to a log.
    let env = std::fs::read_to_string(&hook_env).unwrap();
    assert!(!env.contains("WARD_TOKEN"), "the hook inherited WARD_TOKEN");
    assert!(!env.contains(&token.secret));
    assert!(!agent.output().contains(&token.secret));
    assert!(!server.output().contains(&token.secret));

    let (status, metrics) = admin_get(&admin, "/metrics");
    assert_eq!(status, 200);
    let ok = sample(&metrics, r#"ward_agent_renewals_total{result="ok"}"#).unwrap();
    assert!(ok >= 2.0, "{metrics}");
    let expiry = sample(&metrics, "ward_agent_svid_expiry_seconds").unwrap();
    assert!(expiry > 0.0 && expiry <= 12.0, "{metrics}");
    assert!(sample(&metrics, r#"ward_agent_on_rotate_total{result="ok"}"#).unwrap() >= 3.0);

    source.shutdown().await;
    let status = agent.terminate();
    assert!(status.success(), "{status}: {}", agent.output());
    assert!(
        !Path::new(&socket).exists(),
        "the socket is removed at exit"
    );
}

/// Concatenated DER → certificates.
fn split_der(bytes: &[u8]) -> Vec<rustls_pki_types::CertificateDer<'static>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        // DER SEQUENCE: 0x30, then a long-form length (certificates are > 127 bytes).
        assert_eq!(rest[0], 0x30);
        let n = usize::from(rest[1] & 0x7f);
        let len = rest[2..2 + n]
            .iter()
            .fold(0usize, |a, b| a << 8 | usize::from(*b));
        let total = 2 + n + len;
        out.push(rustls_pki_types::CertificateDer::from(
            rest[..total].to_vec(),
        ));
        rest = &rest[total..];
    }
    out
}
