//! When to renew and how long to wait after a failure: pure functions of
//! the certificate's validity, the server's renewal window (RFC 9773) and
//! a random draw, so they are tested with tables.

use std::time::Duration;

use time::OffsetDateTime;

/// Shortest wait after a failed attempt.
pub const BACKOFF_MIN: Duration = Duration::from_secs(2);
/// Longest wait after failed attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// When to renew a certificate valid from `not_before` to `not_after`.
///
/// With the server's suggested window (`ari`), a uniformly random point
/// inside it (RFC 9773 §4.2). Otherwise a random point between 60 % and
/// two thirds of the lifetime: never later than two thirds, spread so
/// that many clients issued at once do not renew at once. `draw` is
/// uniform in `[0, 1)`.
pub fn renewal_time(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    ari: Option<(OffsetDateTime, OffsetDateTime)>,
    draw: f64,
) -> OffsetDateTime {
    let draw = draw.clamp(0.0, 1.0);
    if let Some((start, end)) = ari
        && end > start
    {
        return start + (end - start) * draw;
    }
    let life = not_after - not_before;
    let earliest = not_before + life * 0.6;
    let latest = not_before + life * (2.0 / 3.0);
    earliest + (latest - earliest) * draw
}

/// The wait before retry number `attempt` (0 for the first retry):
/// doubling from [`BACKOFF_MIN`] up to [`BACKOFF_MAX`], the second half
/// jittered by `draw` (uniform in `[0, 1)`), and never shorter than the
/// server's `Retry-After`.
pub fn backoff(attempt: u32, retry_after: Option<Duration>, draw: f64) -> Duration {
    let base = BACKOFF_MIN
        .saturating_mul(1u32 << attempt.min(20))
        .min(BACKOFF_MAX);
    let jittered = base / 2 + base.mul_f64(draw.clamp(0.0, 1.0) / 2.0);
    match retry_after {
        Some(r) if r > jittered => r.min(BACKOFF_MAX * 24),
        _ => jittered,
    }
}

/// `at - now` as a `Duration`, zero if `at` has passed.
pub fn until(at: OffsetDateTime, now: OffsetDateTime) -> Duration {
    Duration::try_from(at - now).unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn without_ari_renews_between_sixty_percent_and_two_thirds() {
        let nb = datetime!(2026-01-01 00:00 UTC);
        let na = datetime!(2026-01-31 00:00 UTC); // 30 days
        let cases = [
            (0.0, datetime!(2026-01-19 00:00 UTC)),
            (1.0, datetime!(2026-01-21 00:00 UTC)),
            (0.5, datetime!(2026-01-20 00:00 UTC)),
            (-3.0, datetime!(2026-01-19 00:00 UTC)),
        ];
        for (draw, want) in cases {
            assert_eq!(renewal_time(nb, na, None, draw), want, "draw {draw}");
        }
    }

    #[test]
    fn ari_window_wins_and_an_empty_one_is_ignored() {
        let nb = datetime!(2026-01-01 00:00 UTC);
        let na = datetime!(2026-01-31 00:00 UTC);
        let start = datetime!(2026-01-05 00:00 UTC);
        let end = datetime!(2026-01-07 00:00 UTC);
        assert_eq!(renewal_time(nb, na, Some((start, end)), 0.0), start);
        assert_eq!(
            renewal_time(nb, na, Some((start, end)), 0.5),
            datetime!(2026-01-06 00:00 UTC)
        );
        // A window that ends before it starts is not a window.
        assert_eq!(
            renewal_time(nb, na, Some((end, start)), 0.0),
            datetime!(2026-01-19 00:00 UTC)
        );
    }

    #[test]
    fn backoff_doubles_caps_and_respects_retry_after() {
        let s = Duration::from_secs;
        assert_eq!(backoff(0, None, 0.0), s(1));
        assert_eq!(backoff(0, None, 1.0), s(2));
        assert_eq!(backoff(1, None, 1.0), s(4));
        assert_eq!(backoff(3, None, 1.0), s(16));
        assert_eq!(backoff(40, None, 1.0), BACKOFF_MAX);
        assert_eq!(backoff(0, Some(s(30)), 0.0), s(30));
        assert_eq!(backoff(5, Some(s(1)), 1.0), s(64));
    }

    #[test]
    fn until_never_goes_negative() {
        let now = datetime!(2026-01-01 00:00 UTC);
        assert_eq!(until(now - time::Duration::hours(1), now), Duration::ZERO);
        assert_eq!(
            until(now + time::Duration::seconds(5), now),
            Duration::from_secs(5)
        );
    }
}
