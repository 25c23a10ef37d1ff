//! The sysbench rows: sysbench drives the same leader four ways, directly, through
//! switchyard (in this process) over TCP and over its Unix-domain socket, and through HAProxy
//! in TCP mode, group after group, so that the noise of a shared machine hits them alike.
//! Before each row the replica applies what the leader wrote, so that no row pays for the one
//! before.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, ensure, Context};
use orchestrator::provision::LocalClusters;

use super::cpu::{self, CpuCost, CpuTime};
use super::haproxy::{self, Haproxy};
use super::matrix::{self, RowSpec, Target};
use super::report::{self, RouterCounters, RowResult};
use super::settle::{self, connect, first_value};
use super::stage::Stage;
use super::sysbench::{self, Endpoint, Sysbench};
use super::BenchOptions;
use crate::App;

/// Measures `rows` in the order of `schedule` ([`matrix::schedule`]) on a fresh leader and
/// replica; returns one merged result per row and the versions of what ran. Every server and
/// proxy it starts is stopped before it returns, also on error.
pub async fn run(
    opts: &BenchOptions,
    rows: &[RowSpec],
    schedule: &[(usize, u32)],
) -> anyhow::Result<(Vec<RowResult>, Versions)> {
    let tools = Tools::locate()?;
    eprintln!("starting a leader, a replica and switchyard");
    let backend_sockets = opts.backend_sockets;
    let stage = Stage::start_configured("sy-bench-", 1, 1, None, |config, local| {
        if backend_sockets {
            // Every node by its socket: the leader's is what the rows use.
            for node in local.clusters().iter().flat_map(|c| &c.nodes) {
                config
                    .router
                    .backend_sockets
                    .insert(node.addr.clone(), node.socket.clone());
            }
        }
    })
    .await?;
    let outcome = measure(
        opts,
        &tools,
        &stage.local,
        &stage.app,
        stage.tmp.path(),
        rows,
        schedule,
    )
    .await;
    stage.stop().await;
    outcome
}

/// The external programs a run needs.
struct Tools {
    sysbench: PathBuf,
    haproxy: PathBuf,
}

impl Tools {
    fn locate() -> anyhow::Result<Tools> {
        let sysbench = find_program("sysbench");
        let haproxy = find_program("haproxy");
        match (sysbench, haproxy) {
            (Some(sysbench), Some(haproxy)) => Ok(Tools { sysbench, haproxy }),
            (s, h) => {
                let missing: Vec<&str> = [("sysbench", s.is_none()), ("haproxy", h.is_none())]
                    .into_iter()
                    .filter_map(|(name, gone)| gone.then_some(name))
                    .collect();
                bail!(
                    "the benchmark needs {} (not found on PATH or in /usr/sbin); install: \
                     apt-get install -y haproxy sysbench (or scripts/install-deps)",
                    missing.join(" and ")
                )
            }
        }
    }
}

/// A program on `$PATH` or in the system directories Debian keeps daemons in (`haproxy` is
/// in /usr/sbin, often not on a user's PATH).
fn find_program(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from));
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// The versions of the programs the sysbench rows ran.
pub struct Versions {
    pub mariadbd: String,
    pub sysbench: String,
    pub haproxy: String,
}

/// How long the replica may take to apply a row's writes before the next row starts anyway.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Where each target listens and whose CPU to read.
struct Targets {
    leader_addr: String,
    replica_addrs: Vec<String>,
    leader_port: u16,
    leader_pid: Option<u32>,
    router_port: u16,
    router_socket: PathBuf,
    haproxy: Haproxy,
}

impl Targets {
    /// Where sysbench connects for `target`; an error for a target of the sharded rows.
    fn endpoint(&self, target: Target) -> anyhow::Result<Endpoint> {
        match target {
            Target::Direct => Ok(Endpoint::Port(self.leader_port)),
            Target::Switchyard => Ok(Endpoint::Port(self.router_port)),
            Target::SwitchyardSocket => Ok(Endpoint::Socket(self.router_socket.clone())),
            Target::Haproxy => Ok(Endpoint::Port(self.haproxy.port)),
            Target::Spider => bail!("{target} is not a target of the sysbench rows"),
        }
    }
}

/// Everything between start-up and shut-down: HAProxy, the data, then the rows.
async fn measure(
    opts: &BenchOptions,
    tools: &Tools,
    local: &LocalClusters,
    app: &App,
    tmp: &Path,
    rows: &[RowSpec],
    schedule: &[(usize, u32)],
) -> anyhow::Result<(Vec<RowResult>, Versions)> {
    ensure!(
        app.wait_ready(Duration::from_secs(30)).await,
        "switchyard saw no healthy leader within 30 s"
    );
    let cluster = local.clusters().first().context("no cluster")?;
    let leader = cluster.leader_node().context("no leader")?;
    let (program, dir, backend) = (
        tools.haproxy.clone(),
        tmp.to_path_buf(),
        leader.addr.clone(),
    );
    let haproxy =
        tokio::task::spawn_blocking(move || Haproxy::start(&program, &dir, &backend)).await??;
    let targets = Targets {
        leader_addr: leader.addr.clone(),
        replica_addrs: cluster.replicas().map(|n| n.addr.clone()).collect(),
        leader_port: leader.port,
        leader_pid: local.pid(&leader.addr),
        router_port: app.router_port(),
        router_socket: app
            .router_socket
            .clone()
            .context("the router has no Unix-domain socket (router.socket)")?,
        haproxy,
    };

    // The database, and one query through each target before anything is timed.
    let mut conn = connect(&targets.leader_addr).await?;
    let mariadbd = first_value(&mut conn, "SELECT VERSION()").await?;
    conn.query(&format!("CREATE DATABASE IF NOT EXISTS {}", sysbench::DB))
        .await
        .context("creating the sysbench database")?;
    for target in Target::SYSBENCH {
        // The socket's first query is the warm-up's.
        let Endpoint::Port(port) = targets.endpoint(target)? else {
            continue;
        };
        let addr = format!("127.0.0.1:{port}");
        let mut c = connect(&addr)
            .await
            .with_context(|| format!("through {target}"))?;
        first_value(&mut c, "SELECT 1")
            .await
            .with_context(|| format!("SELECT 1 through {target}"))?;
    }
    let sb = Sysbench {
        program: tools.sysbench.clone(),
        tables: opts.tables,
        table_size: opts.table_size,
    };
    let versions = Versions {
        mariadbd,
        sysbench: sb.version().await?,
        haproxy: haproxy::version(&tools.haproxy)?,
    };
    eprintln!(
        "preparing {} tables x {} rows",
        opts.tables, opts.table_size
    );
    sb.prepare(targets.leader_port).await?;
    let waited = settle(&targets).await?;
    eprintln!(
        "the replica applied the data in {:.1} s",
        waited.as_secs_f64()
    );
    warm_up(&sb, &targets).await?;

    let results = report::measure_scheduled(rows, schedule, async |row: &RowSpec| {
        let result = measure_row(&sb, &targets, app, row, opts.seconds).await;
        match (&result.failure, result.target) {
            (Some(why), _) => eprintln!("FAILED: {}", why.lines().next().unwrap_or_default()),
            (None, Target::Direct) => eprintln!("{:.0} qps", result.stats.qps),
            (None, _) => eprintln!(
                "{:.0} qps, {:.1} µs CPU/query",
                result.stats.qps,
                result.cpu.as_ref().map_or(f64::NAN, |c| c.us_per_query)
            ),
        }
        settle(&targets).await?;
        Ok(result)
    })
    .await?;
    drop(targets);
    Ok((results, versions))
}

/// Waits for the replica to apply what the leader has written.
async fn settle(targets: &Targets) -> anyhow::Result<Duration> {
    settle::replicas_caught_up(&targets.leader_addr, &targets.replica_addrs, SETTLE_TIMEOUT).await
}

/// A second of point selects through each target: buffer pool, router pools and the
/// classifier's cache are warm before the first timed row.
async fn warm_up(sb: &Sysbench, targets: &Targets) -> anyhow::Result<()> {
    for target in Target::SYSBENCH {
        let row = RowSpec {
            workload: "oltp_point_select",
            protocol: matrix::Protocol::Ps,
            threads: 4,
            target,
        };
        sb.run(&targets.endpoint(target)?, &row, 1)
            .await
            .with_context(|| format!("warming up {target}"))?;
    }
    Ok(())
}

/// Runs one row, reading the CPU of this process, HAProxy and the leader around it.
async fn measure_row(
    sb: &Sysbench,
    targets: &Targets,
    app: &App,
    row: &RowSpec,
    seconds: u32,
) -> RowResult {
    let haproxy_pid = targets.haproxy.pid();
    let read_pid = |pid: Option<u32>| pid.and_then(|p| cpu::process(p).ok());
    let self_before = cpu::this_process().ok();
    let haproxy_before = read_pid(Some(haproxy_pid));
    let leader_before = read_pid(targets.leader_pid);
    let router_before = RouterCounters::read(&app.router.metrics);
    let outcome = match targets.endpoint(row.target) {
        Ok(to) => sb.run(&to, row, seconds).await,
        Err(e) => Err(e),
    };
    let router_after = RouterCounters::read(&app.router.metrics);
    let leader_after = read_pid(targets.leader_pid);
    let haproxy_after = read_pid(Some(haproxy_pid));
    let self_after = cpu::this_process().ok();

    let stats = match outcome {
        Ok(stats) => stats,
        Err(e) => return RowResult::failed(row, &e),
    };
    let used = |before: Option<CpuTime>, after: Option<CpuTime>| Some(after?.since(before?));
    let cost = |name: &str, before, after| {
        used(before, after).and_then(|t| CpuCost::new(name, t, stats.queries))
    };
    let mut result = RowResult::new(row, stats);
    result.leader_cpu = cost("mariadbd", leader_before, leader_after);
    result.cpu = match row.target {
        Target::Direct => cost("bench-process", self_before, self_after),
        Target::Switchyard | Target::SwitchyardSocket => {
            cost("switchyard", self_before, self_after)
        }
        Target::Haproxy => cost("haproxy", haproxy_before, haproxy_after),
        Target::Spider => None,
    };
    if matches!(row.target, Target::Switchyard | Target::SwitchyardSocket) {
        result.router = Some(router_after.since(router_before));
    }
    result
}
