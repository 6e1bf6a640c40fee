//! `ward revoke SERIAL`: revokes a certificate this CA issued, on a local CA
//! directory (`--dir`) or through a running CA's admin API (`--ca URL` with
//! the admin client certificate). Idempotent: revoking again keeps the first
//! time and reason.
//!
//! The local form works while `ward ca serve` runs (same database); the
//! server picks the revocation up at its next CRL refresh (`[revocation]
//! crl_refresh`), while the remote form re-signs the CRL at once.

use anyhow::Context;
use clap::Args;
use hyper::Method;
use time::OffsetDateTime;
use ward_api::{RevokeRequest, RevokeResponse, paths};
use ward_ca::wire::revoke_response;
use ward_pki::Serial;
use ward_pki::crl::{parse_reason, reason_name};

use super::Outcome;
use super::admin::{AdminTarget, Backend};

/// `ward revoke` arguments.
#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// Serial of the certificate, hex in any case, colons optional
    /// (`openssl x509 -serial` output works).
    serial: String,
    /// RFC 5280 reason: unspecified, keyCompromise, cACompromise,
    /// affiliationChanged, superseded, cessationOfOperation,
    /// privilegeWithdrawn, aACompromise.
    #[arg(long)]
    reason: Option<String>,
    #[command(flatten)]
    target: AdminTarget,
}

/// Runs `ward revoke`.
pub(crate) async fn run(args: RevokeArgs) -> anyhow::Result<Outcome> {
    let serial: Serial = args.serial.parse().context("SERIAL")?;
    let reason = args
        .reason
        .as_deref()
        .map(parse_reason)
        .transpose()
        .context("--reason")?;
    let answer = match args.target.open().await? {
        Backend::Local(authority) => {
            let result = authority
                .revoke_certificate(&serial, reason, OffsetDateTime::now_utc())
                .await
                .with_context(|| format!("cannot revoke {serial}"));
            authority.store().close().await;
            revoke_response(&result?)
        }
        Backend::Remote(client) => {
            let request = RevokeRequest {
                serial: serial.to_string(),
                reason: reason.and_then(reason_name).map(str::to_owned),
            };
            client
                .json::<RevokeResponse>(Method::POST, paths::REVOKE, Some(&request))
                .await
                .with_context(|| format!("cannot revoke {serial}"))?
        }
    };
    if answer.newly_revoked {
        outln!(
            "revoked {} ({}) at {}",
            answer.serial,
            answer.reason,
            answer.revoked_at
        );
    } else {
        outln!(
            "{} was already revoked at {} ({}); the first time and reason are kept",
            answer.serial,
            answer.revoked_at,
            answer.reason
        );
    }
    Ok(Outcome::Success)
}
