//! A metric family: one name, help text and label schema, with one child
//! metric per distinct tuple of label values.
//!
//! Finding a child is the only hot-path cost callers cannot cache away, so
//! it takes a read lock and does not allocate: children are keyed by a hash
//! of the borrowed label values, with the owned values kept beside each child
//! to resolve collisions. A write lock is taken only to add a new child.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::{PoisonError, RwLock};

use crate::Error;

/// A metric handle that can make a fresh, zeroed sibling of itself (same
/// histogram buckets, independent values).
pub(crate) trait Metric: Clone {
    /// A new zeroed metric of the same shape.
    fn fresh(&self) -> Self;
}

/// The children that share one hash: almost always exactly one.
type Bucket<M> = Vec<(Box<[String]>, M)>;

/// Children keyed by a hash already computed with the family's `RandomState`.
type Children<M> = HashMap<u64, Bucket<M>, BuildHasherDefault<PreHashed>>;

/// One metric family and its children.
#[derive(Debug)]
pub(crate) struct Family<M> {
    /// The metric name.
    pub(crate) name: String,
    /// The `# HELP` text.
    pub(crate) help: String,
    /// Label names, in the order values are given.
    pub(crate) label_names: Box<[String]>,
    hasher: RandomState,
    children: RwLock<Children<M>>,
    /// A zeroed metric that new children are made from.
    proto: M,
}

impl<M: Metric> Family<M> {
    /// A family with no children, or, if it has no labels, its one child at
    /// zero, so that unlabelled metrics are exposed before their first use.
    pub(crate) fn new(name: &str, help: &str, label_names: Box<[String]>, proto: M) -> Self {
        let family = Self {
            name: name.to_owned(),
            help: help.to_owned(),
            label_names,
            hasher: RandomState::new(),
            children: RwLock::new(Children::default()),
            proto,
        };
        if family.label_names.is_empty() {
            // Cannot fail: zero values for zero labels.
            let _ = family.try_with(&[]);
        }
        family
    }

    /// The child for these label values, created at zero on first use.
    pub(crate) fn try_with(&self, values: &[&str]) -> Result<M, Error> {
        if values.len() != self.label_names.len() {
            return Err(Error::LabelCount {
                name: self.name.clone(),
                expected: self.label_names.len(),
                got: values.len(),
            });
        }
        let hash = self.hasher.hash_one(values);
        {
            let children = self.children.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(found) = find(&children, hash, values) {
                return Ok(found);
            }
        }
        let mut children = self
            .children
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Another thread may have added it between the two locks.
        if let Some(found) = find(&children, hash, values) {
            return Ok(found);
        }
        let metric = self.proto.fresh();
        let owned = values.iter().map(|v| (*v).to_owned()).collect();
        children
            .entry(hash)
            .or_default()
            .push((owned, metric.clone()));
        Ok(metric)
    }

    /// Like [`Family::try_with`], but a wrong number of values is a
    /// programming error: it panics in debug builds, and in release builds
    /// logs it and returns a detached metric that is never exposed.
    pub(crate) fn with(&self, values: &[&str]) -> M {
        match self.try_with(values) {
            Ok(metric) => metric,
            Err(error) => {
                tracing::error!(%error, "metric used with the wrong labels; value not exposed");
                if cfg!(debug_assertions) {
                    panic!("{error}");
                }
                self.proto.fresh()
            }
        }
    }

    /// The zeroed metric new children are made from.
    pub(crate) fn proto(&self) -> &M {
        &self.proto
    }

    /// A snapshot of the children (handles, not values), sorted by label
    /// values so that rendering is deterministic.
    pub(crate) fn sorted_children(&self) -> Vec<(Box<[String]>, M)> {
        let children = self.children.read().unwrap_or_else(PoisonError::into_inner);
        let mut all: Vec<_> = children.values().flatten().cloned().collect();
        drop(children);
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }
}

fn find<M: Clone>(children: &Children<M>, hash: u64, values: &[&str]) -> Option<M> {
    children
        .get(&hash)?
        .iter()
        .find(|(owned, _)| owned.iter().map(String::as_str).eq(values.iter().copied()))
        .map(|(_, metric)| metric.clone())
}

/// A `Hasher` for keys that are already hashes: no second round of hashing.
#[derive(Default)]
pub(crate) struct PreHashed(u64);

impl Hasher for PreHashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed with this hasher; fold anything else in
        // rather than lose it.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
