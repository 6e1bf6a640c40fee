//! The public-key ceiling of a full mTLS handshake on this machine
//! (`ward-bench ceiling`).
//!
//! In a full TLS 1.3 handshake with an ECDSA P-256 client chain (leaf +
//! intermediate, trusted root) and X25519 key exchange, a server does one
//! X25519 key generation and shared-secret derivation, one ECDSA P-256
//! signature (its CertificateVerify) and three ECDSA P-256 verifications
//! (the client's CertificateVerify, the leaf's signature by the
//! intermediate, the intermediate's by the root). Timing each with the same
//! aws-lc code rustls uses (through Ward's crypto provider) on one thread
//! gives the most handshakes per second one core could do if it did nothing
//! else; issue 7 asks the gate for at least 55 % of it. Operations are timed
//! in the thread's CPU time, so other work on a shared machine slows the
//! measurement down but does not inflate the result.

use std::hint::black_box;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustls::crypto::{CryptoProvider, SupportedKxGroup};
use rustls::{NamedGroup, SignatureScheme};
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;

/// Size of the message signed and verified: a TLS 1.3 CertificateVerify
/// input (64 spaces, a 33-byte context string, a zero byte, a SHA-256
/// transcript hash).
const MESSAGE_LEN: usize = 130;

/// The JSON line printed by `ward-bench ceiling`.
#[derive(Debug, Serialize)]
pub(crate) struct Ceiling {
    /// Always `ceiling`.
    mode: &'static str,
    /// One X25519 key generation + shared-secret derivation, microseconds.
    x25519_us: f64,
    /// One ECDSA P-256 SHA-256 signature, microseconds.
    ecdsa_p256_sign_us: f64,
    /// One ECDSA P-256 SHA-256 verification, microseconds.
    ecdsa_p256_verify_us: f64,
    /// The server's public-key work per full mTLS handshake
    /// (x25519 + sign + 3 × verify), microseconds.
    handshake_us: f64,
    /// 1e6 ÷ `handshake_us`: full mTLS handshakes per second per core.
    ceiling_hps: f64,
}

/// Times each operation for about `per_op` and computes the ceiling.
pub(crate) fn measure(per_op: Duration) -> anyhow::Result<Ceiling> {
    let provider = ward_tls::provider();
    let x25519 = time_x25519(&provider, per_op)?;
    let (sign, verify) = time_ecdsa(&provider, per_op)?;
    let handshake = x25519 + sign + 3.0 * verify;
    Ok(Ceiling {
        mode: "ceiling",
        x25519_us: round3(x25519),
        ecdsa_p256_sign_us: round3(sign),
        ecdsa_p256_verify_us: round3(verify),
        handshake_us: round3(handshake),
        ceiling_hps: round3(1e6 / handshake),
    })
}

/// Microseconds per call of `op`, run in batches for about `budget`.
///
/// Timed with the thread's own CPU time (`/proc/thread-self/schedstat`,
/// nanoseconds on the CPU) where the kernel offers it, so time the thread
/// spends preempted by other work on a shared machine does not count;
/// wall-clock time otherwise.
fn per_call(budget: Duration, mut op: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    // Warm caches and the CPU's frequency before timing.
    for _ in 0..16 {
        op()?;
    }
    let start = Instant::now();
    let cpu_start = thread_cpu_ns();
    let mut calls = 0u64;
    while start.elapsed() < budget || calls == 0 {
        for _ in 0..16 {
            op()?;
        }
        calls += 16;
    }
    let wall_us = start.elapsed().as_secs_f64() * 1e6;
    let us = match (cpu_start, thread_cpu_ns()) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e3,
        _ => wall_us,
    };
    Ok(us / calls as f64)
}

/// Nanoseconds this thread has run on a CPU, from the first field of
/// `/proc/thread-self/schedstat`; `None` where the file is missing.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn time_x25519(provider: &CryptoProvider, budget: Duration) -> anyhow::Result<f64> {
    let group: &dyn SupportedKxGroup = *provider
        .kx_groups
        .iter()
        .find(|g| g.name() == NamedGroup::X25519)
        .context("Ward's provider offers no X25519")?;
    let peer = group.start().context("X25519 key generation")?;
    let peer_pub = peer.pub_key().to_vec();
    per_call(budget, || {
        let ours = group.start().context("X25519 key generation")?;
        let secret = ours.complete(&peer_pub).context("X25519 derivation")?;
        black_box(secret.secret_bytes());
        Ok(())
    })
}

fn time_ecdsa(provider: &CryptoProvider, budget: Duration) -> anyhow::Result<(f64, f64)> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .context("generating a P-256 key")?;
    let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing_key = provider
        .key_provider
        .load_private_key(der)
        .context("loading the P-256 key")?;
    let scheme = SignatureScheme::ECDSA_NISTP256_SHA256;
    let signer = signing_key
        .choose_scheme(&[scheme])
        .context("the P-256 key cannot sign ECDSA_NISTP256_SHA256")?;
    let verifier = provider
        .signature_verification_algorithms
        .mapping
        .iter()
        .find(|(s, _)| *s == scheme)
        .and_then(|(_, algs)| algs.first())
        .context("Ward's provider cannot verify ECDSA_NISTP256_SHA256")?;
    let message = [0x20u8; MESSAGE_LEN];
    let public = key.public_key_raw();

    let signature = signer.sign(&message).context("signing")?;
    if verifier
        .verify_signature(public, &message, &signature)
        .is_err()
    {
        bail!("a fresh ECDSA P-256 signature does not verify");
    }
    let sign = per_call(budget, || {
        black_box(signer.sign(black_box(&message)).context("signing")?);
        Ok(())
    })?;
    let verify = per_call(budget, || {
        verifier
            .verify_signature(public, black_box(&message), &signature)
            .map_err(|_| anyhow::anyhow!("verification failed"))
    })?;
    Ok((sign, verify))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_is_consistent() {
        let c = measure(Duration::from_millis(20)).unwrap();
        assert!(c.x25519_us > 0.0 && c.ecdsa_p256_sign_us > 0.0 && c.ecdsa_p256_verify_us > 0.0);
        let sum = c.x25519_us + c.ecdsa_p256_sign_us + 3.0 * c.ecdsa_p256_verify_us;
        assert!((c.handshake_us - sum).abs() < 0.01);
        assert!((c.ceiling_hps * c.handshake_us - 1e6).abs() < 1e3);
    }
}
