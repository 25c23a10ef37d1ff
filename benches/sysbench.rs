//! `cargo bench --bench sysbench`: the same run as `switchyard bench`, quick by default
//! (about a minute), built with the bench profile. Settings come from the environment, since
//! cargo owns the command line:
//!
//! - `SWITCHYARD_BENCH_FULL=1`: the full run instead of the quick one (about 20 minutes)
//! - `SWITCHYARD_BENCH_ONLY=oltp_point_select,/64/`: row filters
//! - `SWITCHYARD_BENCH_THREADS=1,8,64`, `SWITCHYARD_BENCH_SECONDS=10`
//! - `SWITCHYARD_BENCH_OUT=dir` (default `bench-results/<UTC time>` in the package root)
//!
//! `cargo test --all-targets` runs bench targets without `--bench`: then this does nothing.

use std::path::PathBuf;
use std::str::FromStr;

use anyhow::Context;
use switchyard::bench::{self, BenchOptions};

fn main() -> anyhow::Result<()> {
    if !std::env::args().any(|a| a == "--bench") {
        println!("sysbench comparison: skipped outside `cargo bench --bench sysbench`");
        return Ok(());
    }
    let mut opts = if env("SWITCHYARD_BENCH_FULL").is_some_and(|v| v != "0") {
        BenchOptions::default()
    } else {
        BenchOptions::quick()
    };
    if let Some(only) = env("SWITCHYARD_BENCH_ONLY") {
        opts.only = list(&only);
    }
    if let Some(threads) = env("SWITCHYARD_BENCH_THREADS") {
        opts.threads = parsed_list(&threads).context("SWITCHYARD_BENCH_THREADS")?;
    }
    if let Some(seconds) = env("SWITCHYARD_BENCH_SECONDS") {
        opts.seconds = seconds.parse().context("SWITCHYARD_BENCH_SECONDS")?;
    }
    if let Some(out) = env("SWITCHYARD_BENCH_OUT") {
        opts.out_dir = PathBuf::from(out);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(bench::run(opts))?;
    let md = std::fs::read_to_string(report.out_dir.join("results.md"))?;
    println!("{md}");
    Ok(())
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
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
