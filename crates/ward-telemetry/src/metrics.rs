//! Metric handles: the cheap, clonable values callers keep and update on hot
//! paths, and the labelled families (`*Vec`) they come from.
//!
//! Every update is one or two relaxed atomic operations; nothing here locks
//! or allocates. Floating-point values are stored as `f64` bits in an
//! `AtomicU64` and updated with a compare-and-swap loop.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::Error;
use crate::family::{Family, Metric};

/// A monotonically increasing count.
#[derive(Clone, Debug, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds `n`.
    #[inline]
    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Metric for Counter {
    fn fresh(&self) -> Self {
        Self::default()
    }
}

/// A value that can go up and down (connections, seconds to expiry).
#[derive(Clone, Debug, Default)]
pub struct Gauge(Arc<AtomicU64>);

impl Gauge {
    /// Sets the value to an integer (exact up to 2^53).
    pub fn set(&self, value: i64) {
        self.set_f64(value as f64);
    }

    /// Sets the value.
    pub fn set_f64(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::Relaxed);
    }

    /// Adds one.
    #[inline]
    pub fn inc(&self) {
        self.add(1.0);
    }

    /// Subtracts one.
    #[inline]
    pub fn dec(&self) {
        self.add(-1.0);
    }

    /// Adds `delta` (which may be negative).
    #[inline]
    pub fn add(&self, delta: f64) {
        add_f64(&self.0, delta);
    }

    /// The current value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

impl Metric for Gauge {
    fn fresh(&self) -> Self {
        Self::default()
    }
}

/// A distribution of observations (latencies in seconds, sizes) over fixed
/// buckets.
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramCore>);

/// The shared state of one histogram.
#[derive(Debug)]
struct HistogramCore {
    /// Finite, strictly increasing upper bounds; `+Inf` is implicit.
    bounds: Arc<[f64]>,
    /// Non-cumulative counts, one per bound plus one for `+Inf`. The total
    /// count is their sum, which keeps `_count` equal to the `+Inf` bucket
    /// and saves an atomic per observation.
    counts: Box<[AtomicU64]>,
    /// Sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    /// A zeroed histogram; `bounds` must already be validated.
    pub(crate) fn new(bounds: Arc<[f64]>) -> Self {
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self(Arc::new(HistogramCore {
            bounds,
            counts,
            sum: AtomicU64::new(0.0_f64.to_bits()),
        }))
    }

    /// Records one observation. NaN is counted in the `+Inf` bucket (and
    /// makes the sum NaN), as the Go client does.
    #[inline]
    pub fn observe(&self, value: f64) {
        let core = &*self.0;
        let index = if value.is_nan() {
            core.bounds.len()
        } else {
            core.bounds.partition_point(|&bound| bound < value)
        };
        if let Some(count) = core.counts.get(index) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        add_f64(&core.sum, value);
    }

    /// Records a duration in seconds.
    #[inline]
    pub fn observe_duration(&self, duration: Duration) {
        self.observe(duration.as_secs_f64());
    }

    /// How many observations were recorded.
    pub fn count(&self) -> u64 {
        self.0
            .counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The sum of all observations.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum.load(Ordering::Relaxed))
    }

    /// The finite bucket bounds.
    pub(crate) fn bounds(&self) -> &Arc<[f64]> {
        &self.0.bounds
    }

    /// Cumulative bucket counts (the last one is `+Inf`, equal to the total
    /// count) and the sum. Under concurrent updates the sum may lag or lead
    /// the counts by the observations in flight.
    pub(crate) fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut total = 0_u64;
        let cumulative = self
            .0
            .counts
            .iter()
            .map(|c| {
                total = total.wrapping_add(c.load(Ordering::Relaxed));
                total
            })
            .collect();
        (cumulative, self.sum())
    }
}

impl Metric for Histogram {
    fn fresh(&self) -> Self {
        Self::new(Arc::clone(&self.0.bounds))
    }
}

/// Adds to an `f64` stored as bits.
#[inline]
fn add_f64(cell: &AtomicU64, delta: f64) {
    // The closure always returns `Some`, so this cannot fail.
    let _ = cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
        Some((f64::from_bits(bits) + delta).to_bits())
    });
}

macro_rules! family_handle {
    ($(#[$doc:meta])* $vec:ident, $metric:ident) => {
        $(#[$doc])*
        #[derive(Clone, Debug)]
        pub struct $vec(pub(crate) Arc<Family<$metric>>);

        impl $vec {
            #[doc = concat!("The [`", stringify!($metric), "`] for these label values, in the order the label names were registered.")]
            ///
            /// A wrong number of values is a programming error: it panics in
            /// debug builds; in release builds it is logged and the returned
            /// handle is detached (never exposed). Use `try_with` to handle it.
            /// Callers on hot paths should keep the returned handle.
            pub fn with(&self, values: &[&str]) -> $metric {
                self.0.with(values)
            }

            /// Like `with`, but returns an error for a wrong number of values.
            pub fn try_with(&self, values: &[&str]) -> Result<$metric, Error> {
                self.0.try_with(values)
            }

            /// The metric name.
            pub fn name(&self) -> &str {
                &self.0.name
            }
        }
    };
}

family_handle!(
    /// A family of [`Counter`]s sharing a name and label names.
    CounterVec,
    Counter
);
family_handle!(
    /// A family of [`Gauge`]s sharing a name and label names.
    GaugeVec,
    Gauge
);
family_handle!(
    /// A family of [`Histogram`]s sharing a name, label names and buckets.
    HistogramVec,
    Histogram
);
