//! The benchmark harness end to end, small: point selects against the four targets for two
//! seconds each; a sharded point select against Spider and switchyard with one failover
//! trial. They check the files and that every figure is there, not how fast anything is
//! (this machine is shared and the router is a debug build here).

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
    assert_eq!(
        targets,
        ["direct", "switchyard", "switchyard-socket", "haproxy"]
    );
    for row in &parsed.rows {
        let key = row.key();
        assert_eq!(row.failure, None, "{key}");
        assert!(row.stats.qps > 0.0, "{key}: {row:?}");
        assert_eq!(row.stats.errors, 0, "{key}: {row:?}");
        assert_eq!(row.stats.reconnects, 0, "{key}: {row:?}");
        assert!(row.ratio.is_some_and(|r| r > 0.0), "{key}");
        let lat = row.stats.latency;
        assert!(lat.p50 > 0.0 && lat.p50 <= lat.p99, "{key}: {lat:?}");
        // Our reading of the histogram agrees with sysbench's own two-decimal p99.
        assert!((lat.p99 - lat.p99_sysbench).abs() < 0.006, "{key}: {lat:?}");
    }
    // Over TCP and over the socket, the router ran every query sysbench counted.
    for router in &parsed.rows[1..3] {
        let cpu = router.cpu.as_ref().expect("router CPU figure");
        assert_eq!(cpu.process, "switchyard");
        assert!(
            cpu.us_per_query.is_finite() && cpu.us_per_query > 0.0,
            "{cpu:?}"
        );
        let counted = router.router.expect("router counters");
        assert!(
            counted.statements >= router.stats.queries,
            "{}: {counted:?} vs {}",
            router.target,
            router.stats.queries
        );
    }
    assert!(parsed.rows[3].cpu.is_some(), "HAProxy's CPU figure");

    let md = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    for target in ["direct", "switchyard", "switchyard-socket", "haproxy"] {
        let row = format!("| oltp_point_select | ps | 4 | {target} | ");
        assert!(md.contains(&row), "no `{row}` in results.md:\n{md}");
    }
    let png = std::fs::read(out.path().join("chart.png")).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "chart.png is a PNG");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_writes_sharded_and_failover_rows() {
    let out = tempfile::Builder::new()
        .prefix("sy-bench-out-")
        .tempdir()
        .expect("temp dir");
    let opts = BenchOptions {
        out_dir: out.path().to_path_buf(),
        only: vec!["sharded_point_select".into(), "failover/kill_leader".into()],
        threads: vec![4],
        seconds: 2,
        table_size: 500,
        repeat: 2,
        failover_trials: 1,
        ..BenchOptions::quick()
    };
    let report = match bench::run(opts).await {
        Ok(r) => r,
        Err(e) => panic!(
            "the benchmark failed: {e:#}\n\
             It needs MariaDB with the Spider plugin: scripts/install-deps"
        ),
    };

    for file in [
        "results.json",
        "results.md",
        "chart-sharded.png",
        "chart-failover.png",
    ] {
        assert!(out.path().join(file).is_file(), "{file} is missing");
    }
    assert!(
        !out.path().join("chart.png").exists(),
        "no sysbench rows, no sysbench chart"
    );
    let json = std::fs::read_to_string(out.path().join("results.json")).unwrap();
    let parsed: BenchReport = serde_json::from_str(&json).expect("results.json parses");
    // (serde_json may read the last digit of a float back differently: no whole-report ==.)
    assert_eq!(
        parsed.meta.settings, report.meta.settings,
        "results.json holds the report"
    );
    assert_eq!(parsed.rows.len(), report.rows.len());
    assert_eq!(parsed.failover.len(), report.failover.len());
    assert_eq!(parsed.meta.settings.repeat, 2);

    let keys: Vec<String> = parsed.rows.iter().map(|r| r.key()).collect();
    assert_eq!(
        keys,
        [
            "sharded_point_select/text/4/spider",
            "sharded_point_select/text/4/switchyard"
        ]
    );
    for row in &parsed.rows {
        let key = row.key();
        assert!(row.measured(), "{key}: {row:?}");
        assert!(row.stats.qps > 0.0, "{key}: {row:?}");
        let spread = row.qps_spread.as_ref().expect("a QPS spread");
        assert_eq!(spread.runs.len(), 2, "{key}: measured twice");
        assert!(
            spread.min <= row.stats.qps && row.stats.qps <= spread.max,
            "{key}: {spread:?}"
        );
        let lat = row.stats.latency;
        assert!(lat.p50 > 0.0 && lat.p50 <= lat.p99, "{key}: {lat:?}");
    }
    let (spider, switchyard) = (&parsed.rows[0], &parsed.rows[1]);
    // CPU per statement of whoever routed (Spider's server, or the router's threads without
    // the clients'), and of the shards' servers.
    for (row, process) in [(spider, "spider"), (switchyard, "switchyard")] {
        let cpu = row.cpu.as_ref().expect("the proxy's CPU figure");
        assert_eq!(cpu.process, process);
        assert!(
            cpu.us_per_query.is_finite() && cpu.us_per_query > 0.0,
            "{cpu:?}"
        );
        let shards = row.leader_cpu.as_ref().expect("the shards' CPU figure");
        assert_eq!(shards.process, "shards");
        assert!(shards.us_per_query > 0.0, "{shards:?}");
    }
    assert_eq!(spider.ratio, Some(1.0), "Spider is the baseline");
    let ratio = switchyard.ratio.expect("switchyard / Spider");
    assert!(
        (ratio - switchyard.stats.qps / spider.stats.qps).abs() < 1e-9,
        "the ratio of the medians: {ratio}"
    );
    json_has(&json, &["qps_spread", "ratio", "failover", "time_ms"]);

    assert_eq!(parsed.failover.len(), 1);
    let kill = &parsed.failover[0];
    assert_eq!(kill.key(), "failover/kill_leader");
    assert!(kill.failures.is_empty(), "{:?}", kill.failures);
    let time = kill.time_ms.as_ref().expect("a time to first write");
    assert_eq!(time.runs.len(), 1);
    assert!(time.median > 0.0 && time.median < 60_000.0, "{time:?}");
    assert_eq!(kill.client_errors.len(), 1, "a count of client errors");
    assert_eq!(kill.writes_lost, vec![0], "no acknowledged write lost");

    let md = std::fs::read_to_string(out.path().join("results.md")).unwrap();
    for section in ["## Sharded", "## Failover and switchover"] {
        assert!(md.contains(section), "no {section} in results.md:\n{md}");
    }
    let row = format!(
        "| sharded_point_select | 4 | switchyard | {:.0} | ",
        switchyard.stats.qps
    );
    assert!(md.contains(&row), "no `{row}` in results.md:\n{md}");
    assert!(md.contains(&format!("| {ratio:.2} |")), "{md}");
    let row = format!(
        "| failover/kill_leader | 1 of 1 | {:.0} | {:.0} | {} |",
        time.median,
        time.max,
        kill.client_errors_total()
    );
    assert!(md.contains(&row), "no `{row}` in results.md:\n{md}");
}

fn json_has(json: &str, fields: &[&str]) {
    for f in fields {
        assert!(json.contains(&format!("\"{f}\"")), "no {f} in results.json");
    }
}
