//! The benchmark harness end to end, small: point selects against the three targets for two
//! seconds each. It checks the files and that every figure is there, not how fast anything
//! is (this machine is shared and the router is a debug build here).

use switchyard::bench::{self, BenchOptions, BenchReport};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quick_run_writes_results_for_every_target() {
    let out = tempfile::Builder::new()
        .prefix("sy-bench-out-")
        .tempdir()
        .expect("temp dir");
    let opts = BenchOptions {
        out_dir: out.path().to_path_buf(),
        only: vec!["oltp_point_select".into()],
        threads: vec![4],
        seconds: 2,
        ..BenchOptions::quick()
    };
    let report = match bench::run(opts).await {
        Ok(r) => r,
        Err(e) => panic!(
            "the benchmark failed: {e:#}\n\
             It needs MariaDB, sysbench and HAProxy: scripts/install-deps"
        ),
    };

    for file in ["results.json", "results.md", "chart.png"] {
        assert!(out.path().join(file).is_file(), "{file} is missing");
    }
    let json = std::fs::read_to_string(out.path().join("results.json")).unwrap();
    let parsed: BenchReport = serde_json::from_str(&json).expect("results.json parses");
    assert_eq!(
        parsed.meta.settings, report.meta.settings,
        "results.json holds the report"
    );
    assert_eq!(parsed.rows.len(), report.rows.len());
    let targets: Vec<String> = parsed.rows.iter().map(|r| r.target.to_string()).collect();
    assert_eq!(targets, ["direct", "switchyard", "haproxy"]);
    for row in &parsed.rows {
        let key = row.key();
        assert_eq!(row.failure, None, "{key}");
        assert!(row.stats.qps > 0.0, "{key}: {row:?}");
        assert_eq!(row.stats.errors, 0, "{key}: {row:?}");
        assert_eq!(row.stats.reconnects, 0, "{key}: {row:?}");
        assert!(row.ratio_to_direct.is_some_and(|r| r > 0.0), "{key}");
        let lat = row.stats.latency;
        assert!(lat.p50 > 0.0 && lat.p50 <= lat.p99, "{key}: {lat:?}");
        // Our reading of the histogram agrees with sysbench's own two-decimal p99.
        assert!((lat.p99 - lat.p99_sysbench).abs() < 0.006, "{key}: {lat:?}");
    }
    let router = &parsed.rows[1];
    let cpu = router.cpu.as_ref().expect("router CPU figure");
    assert_eq!(cpu.process, "switchyard");
    assert!(
        cpu.us_per_query.is_finite() && cpu.us_per_query > 0.0,
        "{cpu:?}"
    );
    let counted = router.router.expect("router counters");
    assert!(
        counted.statements >= router.stats.queries,
        "the router ran every query sysbench counted: {counted:?} vs {}",
        router.stats.queries
    );
    assert!(parsed.rows[2].cpu.is_some(), "HAProxy's CPU figure");

    let md = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    for target in ["direct", "switchyard", "haproxy"] {
        let row = format!("| oltp_point_select | ps | 4 | {target} |");
        assert!(md.contains(&row), "no `{row}` in results.md:\n{md}");
    }
    let png = std::fs::read(out.path().join("chart.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "chart.png is a PNG");
}
