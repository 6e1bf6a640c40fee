//! Per-worker tallies and the one-line JSON summary of a run.
//!
//! Latencies are kept exactly: every successful request inside the
//! measurement window adds its latency in microseconds to a vector, the
//! workers' vectors are concatenated and sorted once at the end, and a
//! percentile is the nearest-rank value (the smallest sample such that at
//! least `q` of all samples are less than or equal to it). At the rates a
//! single-core CA reaches (tens of thousands of requests in a 10 s window)
//! this costs a few hundred KiB and no approximation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// What one worker saw during the measurement window.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Latency of each successful (2xx) request, in microseconds.
    latencies_us: Vec<u64>,
    /// Answers by HTTP status code, plus failures by kind (`connect`,
    /// `transport`, `timeout`).
    counts: BTreeMap<String, u64>,
    /// 2xx answers.
    ok: u64,
    /// Everything else: non-2xx answers and failures.
    errors: u64,
    /// TLS handshakes completed (full or resumed).
    handshakes: u64,
    /// Of those, the resumed ones.
    resumed: u64,
}

impl Tally {
    /// Records a complete HTTP answer.
    pub(crate) fn answer(&mut self, status: u16, latency: Duration) {
        *self.counts.entry(status.to_string()).or_default() += 1;
        if (200..300).contains(&status) {
            self.ok += 1;
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            self.latencies_us.push(us);
        } else {
            self.errors += 1;
        }
    }

    /// Records a request that got no HTTP answer.
    pub(crate) fn failure(&mut self, kind: &'static str) {
        *self.counts.entry(kind.to_owned()).or_default() += 1;
        self.errors += 1;
    }

    /// Records a completed TLS handshake.
    pub(crate) fn handshake(&mut self, resumed: bool) {
        self.handshakes += 1;
        if resumed {
            self.resumed += 1;
        }
    }

    /// Adds another worker's tally to this one.
    pub(crate) fn merge(&mut self, other: Tally) {
        self.latencies_us.extend(other.latencies_us);
        for (k, v) in other.counts {
            *self.counts.entry(k).or_default() += v;
        }
        self.ok += other.ok;
        self.errors += other.errors;
        self.handshakes += other.handshakes;
        self.resumed += other.resumed;
    }

    /// Turns the merged tally into the run's summary.
    pub(crate) fn summarize(mut self, mode: &str, concurrency: usize, window: Duration) -> Summary {
        self.latencies_us.sort_unstable();
        let secs = window.as_secs_f64();
        let ms = |us: u64| round3(us as f64 / 1000.0);
        let lat = &self.latencies_us;
        let per_s = |n: u64| {
            if secs > 0.0 {
                round3(n as f64 / secs)
            } else {
                0.0
            }
        };
        Summary {
            mode: mode.to_owned(),
            concurrency,
            duration_s: round3(secs),
            requests: self.ok + self.errors,
            ok: self.ok,
            errors: self.errors,
            status_counts: self.counts,
            rps: per_s(self.ok),
            handshakes: self.handshakes,
            resumed: self.resumed,
            hps: per_s(self.handshakes),
            p50_ms: ms(percentile(lat, 0.50)),
            p90_ms: ms(percentile(lat, 0.90)),
            p99_ms: ms(percentile(lat, 0.99)),
            max_ms: ms(lat.last().copied().unwrap_or(0)),
        }
    }
}

/// The JSON line printed at the end of a run. Field order is the output order.
#[derive(Debug, Serialize)]
pub(crate) struct Summary {
    /// The workload: `sign`, `issue`, `cfssl-sign`, `handshake`, `resume`
    /// or `keepalive`.
    pub(crate) mode: String,
    /// Number of workers (one keep-alive connection each).
    pub(crate) concurrency: usize,
    /// Length of the measurement window (warmup excluded), seconds.
    pub(crate) duration_s: f64,
    /// Requests that completed (answered or failed) inside the window.
    pub(crate) requests: u64,
    /// 2xx answers inside the window.
    pub(crate) ok: u64,
    /// Non-2xx answers and failures inside the window.
    pub(crate) errors: u64,
    /// Answers by status code and failures by kind.
    pub(crate) status_counts: BTreeMap<String, u64>,
    /// Successful requests per second (`ok / duration_s`).
    pub(crate) rps: f64,
    /// TLS handshakes completed inside the window (0 for plain HTTP; for
    /// keep-alive only reconnections).
    pub(crate) handshakes: u64,
    /// Of `handshakes`, those that resumed a session (TLS 1.3 PSK).
    pub(crate) resumed: u64,
    /// Handshakes per second (`handshakes / duration_s`).
    pub(crate) hps: f64,
    /// Median latency of successful requests, milliseconds.
    pub(crate) p50_ms: f64,
    /// 90th percentile, milliseconds.
    pub(crate) p90_ms: f64,
    /// 99th percentile, milliseconds.
    pub(crate) p99_ms: f64,
    /// Slowest successful request, milliseconds.
    pub(crate) max_ms: f64,
}

/// Nearest-rank percentile of an ascending slice; 0 when it is empty.
pub(crate) fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let n = sorted.len();
    let rank = (q * n as f64).ceil() as usize;
    sorted[rank.clamp(1, n) - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.50), 50);
        assert_eq!(percentile(&v, 0.90), 90);
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&[7], 0.5), 7);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn tally_counts_and_summary() {
        let mut a = Tally::default();
        a.answer(201, Duration::from_millis(2));
        a.answer(429, Duration::from_millis(1));
        let mut b = Tally::default();
        b.answer(201, Duration::from_millis(4));
        b.failure("transport");
        b.handshake(true);
        b.handshake(false);
        a.merge(b);
        let s = a.summarize("sign", 2, Duration::from_secs(2));
        assert_eq!(s.requests, 4);
        assert_eq!(s.ok, 2);
        assert_eq!(s.errors, 2);
        assert_eq!(s.status_counts.get("201"), Some(&2));
        assert_eq!(s.status_counts.get("429"), Some(&1));
        assert_eq!(s.status_counts.get("transport"), Some(&1));
        assert!((s.rps - 1.0).abs() < 1e-9);
        assert!((s.p50_ms - 2.0).abs() < 1e-9);
        assert!((s.max_ms - 4.0).abs() < 1e-9);
        assert_eq!((s.handshakes, s.resumed), (2, 1));
        assert!((s.hps - 1.0).abs() < 1e-9);
        let line = serde_json::to_string(&s).unwrap_or_default();
        assert!(line.starts_with(r#"{"mode":"sign","concurrency":2,"duration_s":2.0"#));
    }
}
