//! Makes one mTLS request with an identity from `ward-client`.
//!
//! ```text
//! WARD_TOKEN=wdt_… cargo run -p ward-client --example mtls_request -- \
//!     --ca https://127.0.0.1:8443 --fingerprint <root SHA-256> https://localhost:9443/
//! SPIFFE_ENDPOINT_SOCKET=unix:///run/ward/api.sock \
//!     cargo run -p ward-client --example mtls_request -- https://localhost:9443/
//! ```
//!
//! With `--ca` (or `WARD_CA_URL`) the identity is bootstrapped from the CA:
//! a key made here, a CSR and the token from `WARD_TOKEN` or `--token-file`,
//! the CA trusted by `--fingerprint` (or `WARD_CA_FINGERPRINT`) or `--bundle`.
//! Without it, the identity comes from the SPIFFE Workload API socket named
//! by `SPIFFE_ENDPOINT_SOCKET`. The target's certificate is verified against
//! the trust bundle and its host name; the response status and body go to
//! stdout, the time from start to the response to stderr.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use ward_client::{BootstrapConfig, CaTrust, Rotator, Token, WorkloadApiConfig};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Default)]
struct Args {
    ca: Option<String>,
    fingerprint: Option<String>,
    bundle: Option<PathBuf>,
    token_file: Option<PathBuf>,
    target: Option<String>,
}

fn parse_args() -> Result<Args, Error> {
    let mut args = Args {
        ca: std::env::var("WARD_CA_URL").ok(),
        fingerprint: std::env::var("WARD_CA_FINGERPRINT").ok(),
        ..Args::default()
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--ca" => args.ca = Some(value()?),
            "--fingerprint" => args.fingerprint = Some(value()?),
            "--bundle" => args.bundle = Some(value()?.into()),
            "--token-file" => args.token_file = Some(value()?.into()),
            other if !other.starts_with("--") && args.target.is_none() => {
                args.target = Some(other.to_owned());
            }
            other => return Err(format!("unexpected argument {other:?}").into()),
        }
    }
    Ok(args)
}

async fn identity(args: &Args) -> Result<Rotator, Error> {
    let Some(ca) = &args.ca else {
        return Ok(Rotator::from_workload_api(WorkloadApiConfig::default()).await?);
    };
    let trust = match (&args.fingerprint, &args.bundle) {
        (Some(fp), _) => CaTrust::fingerprint(fp)?,
        (None, Some(bundle)) => CaTrust::bundle_file(bundle)?,
        (None, None) => return Err("give --fingerprint or --bundle".into()),
    };
    let token = match &args.token_file {
        Some(path) => Token::new(&std::fs::read_to_string(path)?)?,
        None => Token::new(&std::env::var("WARD_TOKEN").map_err(|_| "set WARD_TOKEN")?)?,
    };
    Ok(Rotator::bootstrap(BootstrapConfig::new(ca.clone(), trust, token)).await?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let start = Instant::now();
    let args = parse_args()?;
    let target = args
        .target
        .clone()
        .ok_or("usage: mtls_request [--ca URL …] TARGET_URL")?;
    let rest = target
        .strip_prefix("https://")
        .ok_or("the target must be an https:// URL")?;
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let path = format!("/{path}");
    let (host, port) = authority.rsplit_once(':').unwrap_or((authority, "443"));
    let host = host.trim_start_matches('[').trim_end_matches(']');

    let rotator = identity(&args).await?;
    let got_identity = start.elapsed();
    let tls = TlsConnector::from(rotator.client_config()?);
    let tcp = TcpStream::connect((host, port.parse::<u16>()?)).await?;
    let stream = tls
        .connect(ServerName::try_from(host.to_owned())?, tcp)
        .await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(Empty::<Bytes>::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = Limited::new(response.into_body(), 1024 * 1024)
        .collect()
        .await?
        .to_bytes();
    let done = start.elapsed();
    println!("{status}");
    println!("{}", String::from_utf8_lossy(&body));
    eprintln!(
        "mtls_request: identity {} after {got_identity:?}, first mTLS response after {done:?}",
        rotator.current().spiffe_id()
    );
    Ok(())
}
