//! Per-cluster statement and error rates: the counters of [`RouterMetrics`] sampled once a
//! second (by a task the binary runs), and rates computed over the samples of a recent
//! window. Counters stay the source of truth (Prometheus computes its own rates from them);
//! this serves the admin API and the dashboard, which want a number now.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::context::RouterMetrics;

/// Samples kept: a minute at one per second.
const KEPT: usize = 61;

/// The recent samples.
#[derive(Debug, Default)]
pub struct ClusterRates {
    samples: Mutex<VecDeque<Sample>>,
}

#[derive(Debug)]
struct Sample {
    at: Instant,
    /// Per cluster: statements routed there, errors its servers answered.
    counts: HashMap<Arc<str>, (u64, u64)>,
}

/// One cluster's totals and recent rates.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ClusterRate {
    pub statements: u64,
    pub errors: u64,
    /// Statements per second over the window (0 until two samples exist).
    pub qps: f64,
    pub errors_per_second: f64,
}

impl ClusterRates {
    /// Takes a sample of `m` now.
    pub fn sample(&self, m: &RouterMetrics) {
        self.sample_at(m, Instant::now());
    }

    fn sample_at(&self, m: &RouterMetrics, at: Instant) {
        let mut counts: HashMap<Arc<str>, (u64, u64)> = m
            .routed
            .iter()
            .map(|kv| {
                let [l, r] = kv.value();
                (
                    kv.key().clone(),
                    (l.load(Ordering::Relaxed) + r.load(Ordering::Relaxed), 0),
                )
            })
            .collect();
        for kv in m.cluster_errors.iter() {
            counts.entry(kv.key().clone()).or_default().1 = kv.value().load(Ordering::Relaxed);
        }
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == KEPT {
            samples.pop_front();
        }
        samples.push_back(Sample { at, counts });
    }

    /// Each cluster's totals at the last sample and its rates over the last `window` (or
    /// what the samples cover of it).
    pub fn rates(&self, window: Duration) -> BTreeMap<String, ClusterRate> {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let Some(last) = samples.back() else {
            return BTreeMap::new();
        };
        let first = samples
            .iter()
            .find(|s| last.at.duration_since(s.at) <= window)
            .unwrap_or(last);
        let secs = last.at.duration_since(first.at).as_secs_f64();
        last.counts
            .iter()
            .map(|(cluster, &(statements, errors))| {
                let (s0, e0) = first.counts.get(cluster).copied().unwrap_or((0, 0));
                let per_second = |now: u64, then: u64| {
                    if secs > 0.0 {
                        now.saturating_sub(then) as f64 / secs
                    } else {
                        0.0
                    }
                };
                (
                    cluster.to_string(),
                    ClusterRate {
                        statements,
                        errors,
                        qps: per_second(statements, s0),
                        errors_per_second: per_second(errors, e0),
                    },
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_over_the_window() {
        let m = RouterMetrics::default();
        let rates = ClusterRates::default();
        assert!(rates.rates(Duration::from_secs(10)).is_empty());
        let t0 = Instant::now();
        m.routed.entry("c1".into()).or_default()[0].store(100, Ordering::Relaxed);
        rates.sample_at(&m, t0);
        let c1: Arc<str> = "c1".into();
        m.routed.get(&c1).unwrap()[0].store(300, Ordering::Relaxed);
        m.routed.get(&c1).unwrap()[1].store(100, Ordering::Relaxed);
        m.count_cluster_error(&c1);
        m.count_cluster_error(&c1);
        rates.sample_at(&m, t0 + Duration::from_secs(2));
        let r = &rates.rates(Duration::from_secs(10))["c1"];
        assert_eq!((r.statements, r.errors), (400, 2));
        assert_eq!(r.qps, 150.0);
        assert_eq!(r.errors_per_second, 1.0);
        // A window shorter than the samples' spacing: no rate yet, totals still shown.
        let r = &rates.rates(Duration::from_millis(500))["c1"];
        assert_eq!((r.statements, r.qps), (400, 0.0));
    }
}
