//! Figures of a row measured several times (`--repeat`): the median, which one slow or fast
//! run does not move, and the spread (min–max), which shows how far to trust it.

use serde::{Deserialize, Serialize};

use super::sysbench::{Latency, Stats};

/// Several measurements of one figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    /// Each measurement, in the order taken.
    pub runs: Vec<f64>,
    /// The middle value; with an even count, the mean of the two middle ones.
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for no values or a value that is not a number.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(Spread {
            median: median_of_sorted(&sorted)?,
            min: *sorted.first()?,
            max: *sorted.last()?,
            runs: values.to_vec(),
        })
    }
}

/// The median of `values` (`None` when empty or when one is not a number).
pub fn median(values: &[f64]) -> Option<f64> {
    Spread::of(values).map(|s| s.median)
}

fn median_of_sorted(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// One [`Stats`] for a row measured in several runs: rates and latencies are the medians of
/// the runs' (each figure on its own), counts and time are the runs' totals.
pub fn combine(runs: &[Stats]) -> Stats {
    let med = |f: fn(&Stats) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>()).unwrap_or(0.0);
    Stats {
        queries: runs.iter().map(|s| s.queries).sum(),
        qps: med(|s| s.qps),
        transactions: runs.iter().map(|s| s.transactions).sum(),
        tps: med(|s| s.tps),
        errors: runs.iter().map(|s| s.errors).sum(),
        reconnects: runs.iter().map(|s| s.reconnects).sum(),
        time_s: runs.iter().map(|s| s.time_s).sum(),
        latency: Latency {
            avg: med(|s| s.latency.avg),
            p50: med(|s| s.latency.p50),
            p99: med(|s| s.latency.p99),
            p99_sysbench: med(|s| s.latency.p99_sysbench),
            max: med(|s| s.latency.max),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_is_the_middle_value_or_the_mean_of_the_two_middle_ones() {
        let s = Spread::of(&[300.0, 100.0, 200.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (200.0, 100.0, 300.0));
        assert_eq!(
            s.runs,
            [300.0, 100.0, 200.0],
            "runs stay in the order taken"
        );
        let s = Spread::of(&[4.0, 1.0, 3.0, 100.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (3.5, 1.0, 100.0));
        let s = Spread::of(&[7.5]).unwrap();
        assert_eq!((s.median, s.min, s.max), (7.5, 7.5, 7.5));
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn combined_runs_take_median_rates_and_total_counts() {
        let run = |qps: f64, p99: f64, queries: u64| Stats {
            queries,
            qps,
            transactions: queries,
            tps: qps,
            errors: 1,
            time_s: 2.0,
            latency: Latency {
                p99,
                ..Latency::default()
            },
            ..Stats::default()
        };
        let s = combine(&[
            run(1000.0, 9.0, 2000),
            run(400.0, 1.0, 800),
            run(900.0, 2.0, 1800),
        ]);
        assert_eq!(s.qps, 900.0);
        assert_eq!(s.tps, 900.0);
        assert_eq!(s.latency.p99, 2.0, "each figure's own median");
        assert_eq!((s.queries, s.errors, s.time_s), (4600, 3, 6.0));
    }
}
