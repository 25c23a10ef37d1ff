//! The `cargo bench` targets (`sysbench`, `spider`, `failover`): each runs [`super::run`] on
//! one part of the matrix. cargo owns the command line, so settings come from the
//! environment:
//!
//! - `SWITCHYARD_BENCH_FULL=1` (or `-- --full`): the full run instead of the quick one
//! - `SWITCHYARD_BENCH_ONLY=oltp_point_select,/64/`: row filters, instead of the target's part
//! - `SWITCHYARD_BENCH_THREADS=1,8,64`, `SWITCHYARD_BENCH_SECONDS=10`,
//!   `SWITCHYARD_BENCH_ROWS=5000` (rows per table and per shard), `SWITCHYARD_BENCH_REPEAT=3`,
//!   `SWITCHYARD_BENCH_TRIALS=10` (failover trials)
//! - `SWITCHYARD_BENCH_OUT=dir` (default `bench-results/<UTC time>`)
//!
//! `cargo test --all-targets` runs bench targets without `--bench`: then they do nothing.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context;

use super::BenchOptions;

/// The `main` of a bench target: `part` filters the rows (`oltp_`, `sharded`, `failover`),
/// `name` is the target's, for the message when it is not run with `--bench`.
pub fn main(name: &str, part: &str) -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("{name}: skipped outside `cargo bench --bench {name}`");
        return Ok(());
    }
    let full = args.iter().any(|a| a == "--full") || env("SWITCHYARD_BENCH_FULL").is_some();
    let opts = options(full, part, env)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(super::run(opts))?;
    let md = std::fs::read_to_string(report.out_dir.join("results.md"))?;
    println!("{md}");
    Ok(())
}

/// The options of a bench target from `var` (the environment in [`main`]).
fn options(
    full: bool,
    part: &str,
    var: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<BenchOptions> {
    let mut opts = if full {
        BenchOptions::default()
    } else {
        BenchOptions::quick()
    };
    opts.only = match var("SWITCHYARD_BENCH_ONLY") {
        Some(only) => list(&only),
        None => vec![part.to_string()],
    };
    let parse = |name: &str, into: &mut u32| -> anyhow::Result<()> {
        if let Some(v) = var(name) {
            *into = v.trim().parse().with_context(|| format!("{name}={v}"))?;
        }
        Ok(())
    };
    parse("SWITCHYARD_BENCH_SECONDS", &mut opts.seconds)?;
    parse("SWITCHYARD_BENCH_ROWS", &mut opts.table_size)?;
    parse("SWITCHYARD_BENCH_REPEAT", &mut opts.repeat)?;
    parse("SWITCHYARD_BENCH_TRIALS", &mut opts.failover_trials)?;
    if let Some(threads) = var("SWITCHYARD_BENCH_THREADS") {
        opts.threads = parsed_list(&threads).context("SWITCHYARD_BENCH_THREADS")?;
    }
    if let Some(out) = var("SWITCHYARD_BENCH_OUT") {
        opts.out_dir = PathBuf::from(out);
    }
    Ok(opts)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .filter(|v| !v.trim().is_empty() && v != "0")
}

fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(String::from)
        .collect()
}

fn parsed_list<T: FromStr>(s: &str) -> anyhow::Result<Vec<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    list(s)
        .iter()
        .map(|p| p.parse().with_context(|| format!("`{p}`")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_runs_its_own_part_with_the_environment_settings() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let o = options(false, "sharded", vars(&[])).unwrap();
        assert!(o.quick);
        assert_eq!(o.only, ["sharded"]);
        let o = options(
            true,
            "sharded",
            vars(&[
                ("SWITCHYARD_BENCH_ONLY", "sharded_point_select,/4/"),
                ("SWITCHYARD_BENCH_THREADS", "4,16"),
                ("SWITCHYARD_BENCH_REPEAT", "3"),
            ]),
        )
        .unwrap();
        assert!(!o.quick);
        assert_eq!(o.only, ["sharded_point_select", "/4/"]);
        assert_eq!((o.threads.as_slice(), o.repeat), (&[4, 16][..], 3));
        let bad = options(false, "failover", vars(&[("SWITCHYARD_BENCH_TRIALS", "x")]));
        assert!(bad.is_err());
    }
}
