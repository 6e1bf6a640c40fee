//! The gate's stapling policy over `ward_pki::ocsp::validate_response`:
//! only a response saying "good", with a nextUpdate in the future and a
//! thisUpdate not in the future, is stapled. Each refusal carries the
//! `ward_gate_ocsp_staple_total` label it is counted under.

use ward_pki::ocsp::{CertState, ResponseError, validate_response};

use super::{SKEW_SECONDS, Target};

/// A response that validated.
#[derive(Debug, Clone)]
pub(super) struct Good {
    pub(super) der: Vec<u8>,
    pub(super) this_update: i64,
    pub(super) next_update: i64,
}

/// Why a response was not stapled, with the metric label.
#[derive(Debug)]
pub(super) struct Refused {
    pub(super) label: &'static str,
    pub(super) why: String,
}

pub(super) fn refused(label: &'static str) -> impl Fn(String) -> Refused {
    move |why| Refused { label, why }
}

/// Validates a DER OCSP response for `target` at `now` (Unix seconds).
pub(super) fn validate(target: &Target, der: &[u8], now: i64) -> Result<Good, Refused> {
    let malformed = refused("invalid");
    let algs = ward_tls::provider().signature_verification_algorithms.all;
    let answer =
        validate_response(der, &target.query, &target.issuer, now, algs).map_err(|e| match e {
            ResponseError::Unsuccessful(_) => refused("responder_error")(e.to_string()),
            ResponseError::Untrusted => refused("untrusted")(e.to_string()),
            ResponseError::Malformed(_) | ResponseError::OtherCertificate => {
                malformed(e.to_string())
            }
        })?;
    match answer.state {
        CertState::Good => {}
        CertState::Revoked { at } => {
            return Err(refused("revoked")(format!(
                "the responder says the gate's certificate is revoked (since Unix time {at})"
            )));
        }
        CertState::Unknown => {
            return Err(refused("unknown")(
                "the responder does not know the gate's certificate".into(),
            ));
        }
    }
    let this_update = answer.this_update;
    let next_update = answer
        .next_update
        .ok_or_else(|| malformed("no nextUpdate: nothing says until when to staple it".into()))?;
    if this_update > now + SKEW_SECONDS {
        return Err(malformed("thisUpdate lies in the future".into()));
    }
    if next_update <= this_update || next_update <= now {
        return Err(refused("expired")(
            "nextUpdate has passed (or precedes thisUpdate)".into(),
        ));
    }
    Ok(Good {
        der: der.to_vec(),
        this_update,
        next_update,
    })
}
