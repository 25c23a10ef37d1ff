//! The bounded, concurrent classification cache, keyed by normalised text.
//! Eviction is a CLOCK-style sweep: when full, entries not hit since the previous
//! sweep are dropped; if that frees too little, everything is.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use super::Classification;

struct Entry {
    value: Arc<Classification>,
    /// Hit since the last sweep.
    referenced: AtomicBool,
}

pub(crate) struct Cache {
    map: DashMap<Box<str>, Entry, crate::FastHash>,
    capacity: usize,
    /// Approximate entry count: cheaper than `DashMap::len`, which locks every shard.
    len: AtomicUsize,
    /// One sweep at a time; others skip it and insert anyway, so the bound is
    /// `capacity` plus the number of concurrent inserters.
    sweeping: AtomicBool,
}

impl Cache {
    pub fn new(capacity: usize) -> Self {
        Cache {
            map: DashMap::default(),
            capacity,
            len: AtomicUsize::new(0),
            sweeping: AtomicBool::new(false),
        }
    }

    pub fn get(&self, key: &str) -> Option<Arc<Classification>> {
        let e = self.map.get(key)?;
        // Load first: a store on every hit would bounce the cache line between cores.
        if !e.referenced.load(Ordering::Relaxed) {
            e.referenced.store(true, Ordering::Relaxed);
        }
        Some(Arc::clone(&e.value))
    }

    pub fn insert(&self, key: String, value: Arc<Classification>) {
        if self.capacity == 0 {
            return;
        }
        if self.len.load(Ordering::Relaxed) >= self.capacity {
            self.sweep();
        }
        let entry = Entry {
            value,
            referenced: AtomicBool::new(false),
        };
        if self.map.insert(key.into_boxed_str(), entry).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether entries are kept (a capacity above 0).
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops entries not hit since the last sweep and clears the others' marks; if
    /// more than three quarters remain, clears the map, so that a sweep always frees
    /// at least a quarter of the capacity and sweeps stay O(1) amortised per insert.
    fn sweep(&self) {
        if self.sweeping.swap(true, Ordering::Acquire) {
            return;
        }
        self.map
            .retain(|_, e| e.referenced.swap(false, Ordering::Relaxed));
        if self.map.len() > self.capacity / 4 * 3 {
            self.map.clear();
        }
        self.len.store(self.map.len(), Ordering::Relaxed);
        self.sweeping.store(false, Ordering::Release);
    }
}
