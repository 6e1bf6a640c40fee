//! When to renew and when to retry: pure functions of the certificate's
//! validity, the clock and a random draw, so they can be tested with tables.
//!
//! - Renewal happens at two thirds of the lifetime, counted from when the
//!   certificate became usable here: the later of its notBefore and the
//!   moment it was received (Ward's CA backdates notBefore by 30 s for clock
//!   skew; counting that would renew a 30 s certificate after 10 s). A jitter
//!   moves the point earlier by up to [`JITTER_FRACTION`] of the lifetime, so
//!   a fleet started together does not renew in lockstep.
//! - After a failure the next attempt waits an exponentially growing,
//!   capped, jittered delay (half of it fixed, half random: "equal jitter"),
//!   never reaching past the certificate's expiry: at most half of the time
//!   that is left, so there is always another try before the end.

use std::time::{Duration, SystemTime};

/// Renewal point as a fraction of the usable lifetime.
pub const RENEW_FRACTION: f64 = 2.0 / 3.0;

/// Largest jitter, as a fraction of the usable lifetime (renewal happens
/// up to this much earlier than [`RENEW_FRACTION`]).
pub const JITTER_FRACTION: f64 = 0.05;

/// Exponential backoff bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failure (before jitter).
    pub base: Duration,
    /// Largest delay (before jitter).
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        }
    }
}

/// When to renew a certificate valid from `not_before` to `not_after`,
/// received at `received_at`. `jitter` is a random draw in `[0, 1)`; values
/// outside are clamped. The result is never after `not_after` and never
/// before the certificate became usable.
pub fn renew_at(
    not_before: SystemTime,
    not_after: SystemTime,
    received_at: SystemTime,
    jitter: f64,
) -> SystemTime {
    let start = not_before.max(received_at);
    let lifetime = not_after.duration_since(start).unwrap_or_default();
    let jitter = clamp_unit(jitter);
    let early = lifetime.mul_f64(JITTER_FRACTION * jitter);
    let point = lifetime.mul_f64(RENEW_FRACTION).saturating_sub(early);
    // Received after expiry: "now" (already past), not later.
    (start + point).min(not_after.max(not_before))
}

/// How long to wait before attempt number `failures + 1`, after `failures`
/// (≥ 1) consecutive failures, at `now`, for a certificate that expires at
/// `not_after`. `None` when it has already expired: nothing is left to
/// retry with.
pub fn retry_after(
    failures: u32,
    backoff: Backoff,
    now: SystemTime,
    not_after: SystemTime,
    jitter: f64,
) -> Option<Duration> {
    let remaining = not_after
        .duration_since(now)
        .ok()
        .filter(|d| !d.is_zero())?;
    Some(backoff_delay(failures, backoff, jitter).min(remaining / 2))
}

/// The backoff delay alone (no expiry to respect, e.g. before the first
/// certificate exists): `min(cap, base · 2^(failures-1))`, of which the
/// upper half is scaled by `jitter`.
pub fn backoff_delay(failures: u32, backoff: Backoff, jitter: f64) -> Duration {
    let exponent = failures.saturating_sub(1).min(32);
    let grown = backoff
        .base
        .checked_mul(1u32 << exponent.min(31))
        .unwrap_or(backoff.cap);
    let delay = grown.min(backoff.cap);
    let half = delay / 2;
    half + half.mul_f64(clamp_unit(jitter))
}

fn clamp_unit(x: f64) -> f64 {
    if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }
}

/// A random draw in `[0, 1)` for the functions above.
pub fn random_jitter() -> f64 {
    fastrand::f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    fn at(secs: f64) -> SystemTime {
        T0 + Duration::from_secs_f64(secs)
    }

    fn secs(t: SystemTime) -> f64 {
        t.duration_since(T0).unwrap().as_secs_f64()
    }

    #[test]
    fn renewal_point_table() {
        // (not_before, not_after, received_at, jitter) → renewal second
        let table: &[(f64, f64, f64, f64, f64)] = &[
            // 1 h certificate received at issuance: 2/3 → 40 min.
            (0.0, 3600.0, 0.0, 0.0, 2400.0),
            // Full jitter: 5 % of the lifetime earlier.
            (0.0, 3600.0, 0.0, 1.0, 2400.0 - 180.0),
            (0.0, 3600.0, 0.0, 0.5, 2400.0 - 90.0),
            // Backdated notBefore (CA skew): counted from reception.
            (-30.0, 30.0, 0.0, 0.0, 20.0),
            // Received late (e.g. from the Workload API): 2/3 of what is left.
            (0.0, 90.0, 30.0, 0.0, 70.0),
            // Already expired when received: at once (= not_after, past).
            (0.0, 10.0, 20.0, 0.0, 10.0),
            // Jitter outside [0, 1) is clamped.
            (0.0, 300.0, 0.0, 7.0, 200.0 - 15.0),
            (0.0, 300.0, 0.0, -1.0, 200.0),
            (0.0, 300.0, 0.0, f64::NAN, 200.0),
        ];
        for &(nb, na, rx, jitter, want) in table {
            let got = secs(renew_at(at(nb.max(0.0)), at(na), at(rx), jitter));
            assert!(
                (got - want).abs() < 1e-3,
                "renew_at({nb}, {na}, {rx}, {jitter}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn renewal_point_is_inside_the_validity_for_any_jitter() {
        for i in 0..=100 {
            let j = f64::from(i) / 100.0;
            let t = renew_at(at(0.0), at(30.0), at(0.0), j);
            assert!(t > at(0.0) && t < at(30.0), "jitter {j}");
            assert!(secs(t) >= 20.0 - 1.5 - 1e-9 && secs(t) <= 20.0 + 1e-9);
        }
    }

    #[test]
    fn backoff_grows_doubles_and_caps() {
        let b = Backoff {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        };
        // (failures, jitter) → seconds
        let table: &[(u32, f64, f64)] = &[
            (1, 1.0, 1.0),
            (1, 0.0, 0.5),
            (2, 1.0, 2.0),
            (3, 1.0, 4.0),
            (4, 0.5, 6.0),
            (6, 1.0, 32.0),
            (7, 1.0, 60.0),
            (7, 0.0, 30.0),
            (40, 1.0, 60.0),
            (u32::MAX, 1.0, 60.0),
            // failures = 0 is treated like the first failure.
            (0, 1.0, 1.0),
        ];
        for &(failures, jitter, want) in table {
            let got = backoff_delay(failures, b, jitter).as_secs_f64();
            assert!(
                (got - want).abs() < 1e-9,
                "backoff_delay({failures}, {jitter}) = {got}, want {want}"
            );
        }
    }

    #[test]
    fn jittered_backoff_stays_within_half_and_full() {
        let b = Backoff::default();
        for failures in 1..10 {
            let full = backoff_delay(failures, b, 1.0);
            for _ in 0..50 {
                let d = backoff_delay(failures, b, random_jitter());
                assert!(d >= full / 2 && d <= full, "{failures}: {d:?} vs {full:?}");
            }
        }
    }

    #[test]
    fn retries_never_reach_past_expiry() {
        let b = Backoff {
            base: Duration::from_secs(4),
            cap: Duration::from_secs(60),
        };
        // (failures, now, not_after) → seconds (jitter 1)
        let table: &[(u32, f64, f64, Option<f64>)] = &[
            (1, 0.0, 100.0, Some(4.0)),
            (3, 0.0, 100.0, Some(16.0)),
            (3, 90.0, 100.0, Some(5.0)),
            (1, 99.0, 100.0, Some(0.5)),
            (1, 100.0, 100.0, None),
            (1, 120.0, 100.0, None),
        ];
        for &(failures, now, not_after, want) in table {
            let got =
                retry_after(failures, b, at(now), at(not_after), 1.0).map(|d| d.as_secs_f64());
            assert_eq!(got, want, "retry_after({failures}, {now}, {not_after})");
        }
        // Walking the schedule from the renewal point always ends before expiry.
        let mut now = 20.0;
        for failures in 1..50 {
            let Some(d) = retry_after(failures, b, at(now), at(30.0), random_jitter()) else {
                panic!("expired while time was left: now={now}");
            };
            now += d.as_secs_f64();
            assert!(now < 30.0, "attempt {failures} at {now} is past expiry");
        }
    }
}
