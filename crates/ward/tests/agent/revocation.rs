//! A revoked identity: the CA refuses renewal (401 certificate_revoked);
//! the agent says so loudly, counts it, ends Workload API streams with
//! PermissionDenied, does not retry, and exits with status 2 at expiry.

use std::time::Duration;

use ward_client::workload_api::proto::X509svidRequest;
use ward_client::workload_api::proto::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use ward_client::workload_api::tonic::Code;
use ward_client::workload_api::{self, with_security_header};

use super::procs::{
    AgentDir, AgentProcess, CaProcess, DEADLINE, admin_get, openssl_fingerprint, wait_until,
};
use crate::common::sample;
use crate::harness::{Backend, Ca, OutputText};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoked_identity_is_reported_and_not_retried() {
    let ca = Ca::new(Backend::Sqlite).unwrap();
    let server = CaProcess::start(&ca, "127.0.0.1:0");
    let token = ca.token("spiffe://example.org/revoked", &["--cert-ttl", "10s"]);
    let dir = AgentDir::new(&ca, "agent");
    let socket = dir.path("api.sock");
    let mut agent = AgentProcess::start(
        &[
            "--ca",
            &server.url(),
            "--ca-fingerprint",
            &openssl_fingerprint(&ca.root())
                .replace(':', "")
                .to_lowercase(),
            "--socket",
            &socket,
            "--admin",
            "127.0.0.1:0",
        ],
        &[("WARD_TOKEN", &token.secret)],
    );
    let first = agent.wait_deliveries(1, DEADLINE)[0].clone();
    let admin = agent.line_value("ward agent: admin listening on ").unwrap();
    let channel = workload_api::connect(socket.clone().into()).await.unwrap();
    let mut stream = SpiffeWorkloadApiClient::new(channel)
        .fetch_x509svid(with_security_header(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());

    let revoked = ca.ward(&["revoke", &first.serial, "--reason", "keyCompromise"]);
    assert!(revoked.status.success(), "{}", revoked.stderr_text());

    // At renewal time (~6.7 s) the refusal is counted and shown.
    let mut metrics = String::new();
    wait_until("the revocation metric", Duration::from_secs(20), || {
        metrics = admin_get(&admin, "/metrics").1;
        sample(&metrics, r#"ward_agent_renewals_total{result="revoked"}"#) == Some(1.0)
    });
    assert_eq!(admin_get(&admin, "/readyz").0, 503);
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("the stream ends promptly");
    let status = ended.expect_err("the stream ends with an error");
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");

    // It exits non-zero when the certificate expires, having tried once.
    let exit = agent.wait_exit(Duration::from_secs(20));
    assert_eq!(exit.code(), Some(2), "{}", agent.output());
    let output = agent.output();
    assert!(output.contains("certificate_revoked"), "{output}");
    assert!(output.contains("ERROR"), "logged as an error: {output}");
    assert_eq!(agent.count("renewal failed"), 0, "no retries: {output}");
    assert_eq!(agent.deliveries().len(), 1);
    assert!(!output.contains(&token.secret));
    let renewals = server.output().matches(r#""route":"renew""#).count();
    assert!(renewals <= 1, "the CA saw {renewals} renewal attempts");
}
