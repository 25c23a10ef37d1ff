//! The `switchyard` command: parse the command line, set up logging, call the library.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use switchyard::cli::{self, ApiArgs};
use switchyard::sandbox::{self, SandboxOptions};
use switchyard::{App, Config};

/// mimalloc instead of the system allocator: a routed statement allocates and frees a few
/// small buffers and one command future, on whichever worker thread runs it, and glibc's
/// malloc spends measurably more of the router's CPU on that (see the README's speed notes).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "MySQL/MariaDB router and replication orchestrator",
    after_help = "Examples:
  switchyard sandbox                              local clusters and a switchyard over them
  switchyard serve --config config/serve.toml     against servers you run
  export SWITCHYARD_ADMIN_TOKEN=...               the operator commands read it
  switchyard status
  switchyard switchover c1 --to 127.0.0.1:3312
  switchyard rebuild c1 127.0.0.1:3311
  switchyard maintenance c1 127.0.0.1:3311 on
  switchyard shard-map diff new-map.json && switchyard shard-map put new-map.json
  switchyard config check config/serve.toml"
)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start local MariaDB clusters and a switchyard over them, in the foreground.
    ///
    /// Example: switchyard sandbox --clusters 2 --replicas 2
    Sandbox {
        /// Directory for the servers' data (reused on the next start).
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = 2)]
        clusters: usize,
        #[arg(long, default_value_t = 2)]
        replicas: usize,
        /// Router (MySQL protocol) address.
        #[arg(long, default_value = "127.0.0.1:6033")]
        listen: String,
        /// Admin API address.
        #[arg(long, default_value = "127.0.0.1:8080")]
        admin: String,
        /// Admin API bearer token; one is generated and printed when absent.
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN")]
        admin_token: Option<String>,
        /// Admin SQL port address (user `admin`, the admin token as password); "" for none.
        #[arg(long, default_value = "127.0.0.1:6034")]
        admin_sql: String,
        /// First MariaDB port (0 picks free ports).
        #[arg(long, default_value_t = 3310)]
        base_port: u16,
        #[arg(long, default_value = "app")]
        app_user: String,
        #[arg(long, default_value = "app")]
        app_password: String,
        /// Split keyspace `app` into K equal key ranges over the clusters (0: unsharded).
        #[arg(long, default_value_t = 0)]
        shards: usize,
        /// Put every node's binary log on a tmpfs of its own of this many MiB, so that a full
        /// disk can be tried (needs root; 0: in the datadir).
        #[arg(long, default_value_t = 0)]
        binlog_disk_mb: u32,
        /// The program a physical rebuild restores a node's backup with
        /// (`scripts/physical-restore-local`; `scripts/sandbox` sets it).
        #[arg(long)]
        rebuild_restore_command: Option<PathBuf>,
        /// Run this many orchestrator candidates (this process and `switchyard serve`
        /// children, role "all") over a local etcd; 0 with --routers 0: one process, no etcd.
        #[arg(long, default_value_t = 0)]
        orchestrators: usize,
        /// Run this many more routers (children, role "router") over the local etcd.
        #[arg(long, default_value_t = 0)]
        routers: usize,
        /// Members of the local etcd (1 or 3) when --orchestrators or --routers is given.
        #[arg(long, default_value_t = 1)]
        etcd: usize,
    },
    /// Show every cluster and node of a running switchyard.
    ///
    /// Example: SWITCHYARD_ADMIN_TOKEN=... switchyard status --admin http://127.0.0.1:8080
    Status {
        #[command(flatten)]
        api: ApiArgs,
        /// Print the API's JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Planned switchover of a cluster's leader, each step printed as it happens.
    ///
    /// Example: switchyard switchover c1 --to 127.0.0.1:3311
    Switchover {
        cluster: String,
        /// The replica to promote (`host:port`); elected when absent.
        #[arg(long)]
        to: Option<String>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Rebuild a node (one kept out for transactions the leader lacks, a broken replica): empty
    /// it, copy a healthy replica (or the leader) into it, make it a replica of the leader;
    /// each step printed as it happens. Refused for the leader.
    ///
    /// Example: switchyard rebuild c1 127.0.0.1:3311 --source 127.0.0.1:3312
    Rebuild {
        cluster: String,
        /// The node to rebuild, `host:port`.
        node: String,
        /// The node to copy (`host:port`); the most up-to-date healthy replica, else the
        /// leader, when absent.
        #[arg(long)]
        source: Option<String>,
        /// `logical` (mariadb-dump over SQL) or `physical` (a mariadb-backup stream into the
        /// orchestrator's rebuild_restore_command); the orchestrator's rebuild_method when
        /// absent.
        #[arg(long)]
        method: Option<orchestrator::RebuildMethod>,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Fail over a cluster whose leader is dead (refused while it is alive).
    ///
    /// Example: switchyard failover c1
    Failover {
        cluster: String,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Put a node under maintenance (never elected, not failed over) or take it out.
    ///
    /// Example: switchyard maintenance c1 127.0.0.1:3311 on
    Maintenance {
        cluster: String,
        /// The node, `host:port`.
        node: String,
        #[arg(value_enum)]
        state: OnOff,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Read, compare or replace the shard map of a running switchyard.
    ///
    /// Examples: switchyard shard-map get > map.json; switchyard shard-map diff map.json;
    /// switchyard shard-map put map.json
    #[command(subcommand)]
    ShardMap(ShardMapCommand),
    /// Split or merge shards online (see also `movetables`).
    ///
    /// Example: switchyard reshard create split --keyspace app --from 80- --to 80-c0=c3 --to c0-=c4;
    /// switchyard reshard status split; switchyard reshard diff split;
    /// switchyard reshard switch-writes split; switchyard reshard complete split
    #[command(subcommand)]
    Reshard(switchyard::moves::cli::ReshardCommand),
    /// Move unsharded tables into a sharded keyspace online.
    ///
    /// Example: switchyard movetables create users --keyspace app --table users:id:hash
    #[command(subcommand)]
    Movetables(switchyard::moves::cli::MoveTablesCommand),
    /// Check a configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print an argon2id hash of the password read from stdin, for `admin.users.password_hash`.
    ///
    /// Example: printf %s 's3cret' | switchyard hash-password
    HashPassword,
    /// Make a key file for encrypted configuration values (64 hex digits, mode 0600).
    ///
    /// Example: switchyard keygen --key-file /etc/switchyard/key
    Keygen {
        #[arg(long)]
        key_file: PathBuf,
    },
    /// Print the `enc:...` form of the secret read from stdin, to paste into the config
    /// (with `key_file` set there).
    ///
    /// Example: printf %s 's3cret' | switchyard encrypt --key-file /etc/switchyard/key
    Encrypt {
        #[arg(long, env = "SWITCHYARD_KEY_FILE")]
        key_file: PathBuf,
    },
    /// Run named failure scenarios on fresh local servers (a frozen or partitioned leader, a
    /// full disk, a cut path...), printing each step checked; exit code 1 if one failed.
    ///
    /// Examples: switchyard scenario list; switchyard scenario run freeze-leader;
    /// switchyard scenario run --all --config /etc/switchyard/switchyard.toml
    #[command(subcommand)]
    Scenario(ScenarioCommand),
    /// Measure switchyard against direct connections and HAProxy with sysbench, against
    /// MariaDB Spider on sharded workloads, and time leader failover and switchover.
    ///
    /// Example: switchyard bench --quick
    ///
    /// Example: switchyard bench --quick --only sharded --repeat 3
    ///
    /// Example: switchyard bench --only failover --trials 10
    ///
    /// Example: switchyard bench --only oltp_point_select/ps/8,sharded_point_select
    Bench(switchyard::bench::BenchArgs),
    /// Print a complete haproxy.cfg for the clusters of a configuration file (the leaders it
    /// names; `GET /api/v1/haproxy/config` gives the live topology's).
    ///
    /// Example: switchyard haproxy-config --config config/serve.toml > haproxy.cfg
    HaproxyConfig {
        #[arg(long)]
        config: PathBuf,
    },
    /// Run against existing clusters described in a TOML file.
    ///
    /// Example: switchyard serve --config config/serve.toml
    Serve {
        #[arg(long)]
        config: PathBuf,
        /// Admin API bearer token (overrides the file's).
        #[arg(long, env = "SWITCHYARD_ADMIN_TOKEN")]
        admin_token: Option<String>,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

#[derive(Subcommand)]
enum ShardMapCommand {
    /// Print the applied shard map (JSON, with its version).
    ///
    /// Example: switchyard shard-map get > map.json
    Get {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Replace the shard map with FILE (refused whole, every problem listed, if invalid).
    ///
    /// Example: switchyard shard-map put map.json
    Put {
        file: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Show what replacing the shard map with FILE would change, changing nothing.
    ///
    /// Example: switchyard shard-map diff map.json
    Diff {
        file: PathBuf,
        #[command(flatten)]
        api: ApiArgs,
    },
}

#[derive(Subcommand)]
enum ScenarioCommand {
    /// Name and describe every scenario.
    List,
    /// Run scenarios by name (all with --all).
    Run {
        names: Vec<String>,
        /// Every scenario.
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Use this configuration's failure-handling settings ([failover], the orchestrator's
        /// timings, the router's hold and dead-path limits) instead of the sandbox's.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate FILE and print every problem; exit code 1 when there is any.
    ///
    /// Example: switchyard config check config/serve.toml
    Check { file: PathBuf },
    /// Make a running switchyard read its configuration file again (as SIGHUP does) and
    /// print what is now in force and what needs a restart.
    ///
    /// Example: switchyard config reload --admin http://127.0.0.1:8080
    Reload {
        #[command(flatten)]
        api: ApiArgs,
    },
    /// Print the reference of every option (Markdown, generated from the code).
    ///
    /// Example: switchyard config reference > docs/configuration.md
    Reference,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if cli.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    match cli.command {
        Command::Sandbox {
            dir,
            clusters,
            replicas,
            listen,
            admin,
            admin_token,
            admin_sql,
            base_port,
            app_user,
            app_password,
            shards,
            binlog_disk_mb,
            rebuild_restore_command,
            orchestrators,
            routers,
            etcd,
        } => {
            let opts = SandboxOptions {
                dir: dir.unwrap_or_else(sandbox::default_dir),
                clusters,
                replicas,
                base_port: (base_port != 0).then_some(base_port),
                listen,
                admin,
                admin_token: admin_token.unwrap_or_else(generate_token),
                app_user,
                app_password,
                shards,
                binlog_disk_mb: (binlog_disk_mb != 0).then_some(binlog_disk_mb),
                rebuild_restore_command,
            };
            let processes = (orchestrators > 0 || routers > 0).then_some(SandboxProcesses {
                orchestrators: orchestrators.max(1),
                routers,
                etcd: etcd.max(1),
            });
            run_sandbox(
                opts,
                (!admin_sql.is_empty()).then_some(admin_sql),
                processes,
            )
            .await
        }
        Command::Scenario(ScenarioCommand::List) => {
            print!("{}", switchyard::scenario::list());
            Ok(())
        }
        Command::Scenario(ScenarioCommand::Run { names, all, config }) => {
            anyhow::ensure!(
                all || !names.is_empty(),
                "name the scenarios to run, or --all (`switchyard scenario list` names them)"
            );
            let settings = config.map(|c| Config::load(&c)).transpose()?;
            // Dropping the run (Ctrl-C) kills the servers it started and undoes its faults.
            tokio::select! {
                passed = switchyard::scenario::run_named(&names, settings.as_ref()) => {
                    if !passed? {
                        std::process::exit(1);
                    }
                    Ok(())
                }
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            }
        }
        Command::Bench(args) => {
            // Dropping the run (Ctrl-C) kills the servers, HAProxy and sysbench it started.
            tokio::select! {
                report = switchyard::bench::run(args.options()) => {
                    let report = report?;
                    print!("{}", std::fs::read_to_string(report.out_dir.join("results.md"))?);
                    Ok(())
                }
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
            }
        }
        Command::Status { api, json } => {
            let client = api.client()?;
            let body = client.get("/api/v1/clusters").await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&body)?);
            } else {
                print!("{}", cli::format_status(&body));
                // A server of an older version has no members endpoint.
                if let Ok(members) = client.get("/api/v1/members").await {
                    print!("{}", cli::format_members(&members));
                }
            }
            Ok(())
        }
        Command::Switchover { cluster, to, api } => {
            println!("switchover of {cluster} ...");
            let mut out = std::io::stdout();
            cli::switchover_with_progress(&api.client()?, &cluster, to.as_deref(), &mut out)
                .await?;
            Ok(())
        }
        Command::Rebuild {
            cluster,
            node,
            source,
            method,
            api,
        } => {
            println!("rebuild of {node} in {cluster} ...");
            let mut out = std::io::stdout();
            cli::rebuild_with_progress(
                &api.client()?,
                &cluster,
                &node,
                source.as_deref(),
                method,
                &mut out,
            )
            .await?;
            Ok(())
        }
        Command::Maintenance {
            cluster,
            node,
            state,
            api,
        } => {
            let on = matches!(state, OnOff::On);
            let r = cli::maintenance(&api.client()?, &cluster, &node, on).await?;
            println!(
                "{cluster} {node}: maintenance {}",
                if r["flags"]["maintenance"] == true {
                    "on"
                } else {
                    "off"
                }
            );
            Ok(())
        }
        Command::Reshard(cmd) => switchyard::moves::cli::reshard(cmd).await,
        Command::Movetables(cmd) => switchyard::moves::cli::move_tables(cmd).await,
        Command::ShardMap(ShardMapCommand::Get { api }) => {
            let map = api.client()?.get("/api/v1/shard-map").await?;
            println!("{}", serde_json::to_string_pretty(&map)?);
            Ok(())
        }
        Command::ShardMap(ShardMapCommand::Put { file, api }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("can't read {}", file.display()))?;
            let r = api.client()?.put_text("/api/v1/shard-map", text).await?;
            println!("shard map version {} applied", r["version"]);
            for c in r["changes"].as_array().into_iter().flatten() {
                println!("  {}", c.as_str().unwrap_or(""));
            }
            Ok(())
        }
        Command::ShardMap(ShardMapCommand::Diff { file, api }) => {
            let changes = cli::shard_map_diff(&api.client()?, &file).await?;
            if changes.is_empty() {
                println!("no changes");
            }
            for c in changes {
                println!("{c}");
            }
            Ok(())
        }
        Command::Config(ConfigCommand::Check { file }) => {
            if !cli::config_check(&file, &mut std::io::stdout())? {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Config(ConfigCommand::Reference) => {
            print!("{}", switchyard::config::reference::markdown());
            Ok(())
        }
        Command::Config(ConfigCommand::Reload { api }) => {
            let report = api
                .client()?
                .post("/api/v1/config/reload", serde_json::Value::Null)
                .await?;
            print!("{}", cli::format_reload(&report));
            Ok(())
        }
        Command::Keygen { key_file } => {
            switchyard::config::secrets::Key::generate(&key_file)?;
            println!("key written to {}", key_file.display());
            Ok(())
        }
        Command::Encrypt { key_file } => {
            let key = switchyard::config::secrets::Key::read(&key_file)?;
            let mut secret = String::new();
            std::io::stdin().read_line(&mut secret)?;
            let secret = secret.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!secret.is_empty(), "no secret on stdin");
            println!("{}", key.encrypt(secret));
            Ok(())
        }
        Command::HashPassword => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            anyhow::ensure!(!password.is_empty(), "no password on stdin");
            println!("{}", switchyard::acl::hash_password(password)?);
            Ok(())
        }
        Command::Failover { cluster, api } => {
            println!("failover of {cluster} ...");
            let report = api
                .client()?
                .post(
                    &format!("/api/v1/clusters/{cluster}/failover"),
                    serde_json::Value::Null,
                )
                .await?;
            print!("{}", cli::format_report(&report));
            Ok(())
        }
        Command::HaproxyConfig { config } => {
            let config = Config::load(&config)?;
            let text = switchyard::integrations::haproxy::config_for_file(&config)
                .map_err(anyhow::Error::msg)?;
            print!("{text}");
            Ok(())
        }
        Command::Serve {
            config,
            admin_token,
        } => {
            let mut config = Config::load(&config)?;
            if let Some(t) = admin_token {
                config.admin.token = Some(router::Secret::new(t));
                config.origin.admin_token_fixed = true;
            }
            if config.admin.token.is_none() {
                let t = generate_token();
                println!("admin token: {t}");
                config.admin.token = Some(router::Secret::new(t));
                config.origin.admin_token_fixed = true;
            }
            let scheme = if config.admin.tls_cert.is_some() {
                "https"
            } else {
                "http"
            };
            let app = App::start(config).await?;
            match app.router_addr {
                Some(addr) => println!("mysql: 127.0.0.1:{} (router)", addr.port()),
                None => println!("mysql: none (role \"orchestrator\")"),
            }
            if let Some(path) = &app.router_socket {
                println!("mysql socket: {} (router)", path.display());
            }
            println!("admin: {scheme}://{}/api/v1/clusters", app.admin_addr);
            let reload = tokio::spawn(reload_on_sighup(app.reloader.clone()));
            stop_signal().await;
            reload.abort();
            app.shutdown().await;
            Ok(())
        }
    }
}

/// Reloads the configuration file on every SIGHUP; the outcome goes to the log.
async fn reload_on_sighup(reloader: std::sync::Arc<switchyard::reload::Reloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("can't listen for SIGHUP; reload through the API instead");
        return;
    };
    while hup.recv().await.is_some() {
        match reloader.reload() {
            Ok(r) => tracing::info!(
                applied = ?r.applied,
                restart_required = ?r.restart_required,
                "configuration reloaded (SIGHUP)"
            ),
            Err(e) => tracing::error!(error = %e, "configuration not reloaded (SIGHUP)"),
        }
    }
}

/// The multi-process sandbox's shape.
struct SandboxProcesses {
    orchestrators: usize,
    routers: usize,
    etcd: usize,
}

async fn run_sandbox(
    opts: SandboxOptions,
    admin_sql: Option<String>,
    processes: Option<SandboxProcesses>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    println!("starting sandbox in {} ...", opts.dir.display());
    let local = sandbox::provision(&opts)
        .await
        .context("starting the local MariaDB clusters")?;
    let mut config = sandbox::config_for(&local, &opts);
    config.admin.sql_listen = admin_sql;
    // With several processes: a fresh local etcd (the topology comes back from state_dir).
    let etcd = match &processes {
        Some(p) => {
            let dir = opts.dir.join("etcd");
            let _ = std::fs::remove_dir_all(&dir);
            let etcd = orchestrator::provision::LocalEtcd::start(&dir, p.etcd)
                .await
                .context("starting the local etcd")?;
            config.etcd = Some(sandbox::etcd_section(&etcd, "o1"));
            Some(etcd)
        }
        None => None,
    };
    let base = config.clone();
    let app = match App::start(config).await {
        Ok(app) => app,
        Err(e) => {
            local.stop().await.ok();
            return Err(e);
        }
    };
    let members = match (etcd, &processes) {
        (Some(etcd), Some(p)) => {
            println!("etcd: {}", etcd.endpoints().join(","));
            let m = sandbox::spawn_members(
                &base,
                &opts,
                local.spec(),
                etcd,
                p.orchestrators,
                p.routers,
            )?;
            println!(
                "process o1 (all, this one): mysql 127.0.0.1:{}  admin http://{}",
                app.router_port(),
                app.admin_addr
            );
            for c in &m.children {
                let role = c.role.name();
                println!(
                    "process {} ({role}, pid {}): mysql {}  admin http://{}  log {}",
                    c.name,
                    c.child.id(),
                    c.router,
                    c.admin,
                    opts.dir
                        .join("members")
                        .join(format!("{}.log", c.name))
                        .display()
                );
            }
            Some(m)
        }
        _ => None,
    };
    if !app.wait_ready(Duration::from_secs(30)).await {
        eprintln!("warning: not every cluster has a healthy leader yet");
    }
    for c in local.clusters() {
        for n in &c.nodes {
            let role = if n.addr == c.leader {
                "leader"
            } else {
                "replica"
            };
            println!(
                "direct {}/{role}: mariadb -h127.0.0.1 -P{} -u{} -p{}",
                c.name, n.port, opts.app_user, opts.app_password
            );
        }
    }
    println!(
        "mysql: mariadb -h127.0.0.1 -P{} -u{} -p{}",
        app.router_port(),
        opts.app_user,
        opts.app_password
    );
    if let Some(path) = &app.router_socket {
        println!(
            "mysql (socket): mariadb -S {} -u{} -p{}",
            path.display(),
            opts.app_user,
            opts.app_password
        );
    }
    println!("admin: http://{}/api/v1/clusters", app.admin_addr);
    println!("admin token: {}", opts.admin_token);
    if let Some(a) = app.admin_sql_addr {
        println!(
            "admin sql: mariadb -h127.0.0.1 -P{} -uadmin -p{}",
            a.port(),
            opts.admin_token
        );
    }
    println!(
        "ready in {:.1} s; Ctrl-C stops everything",
        started.elapsed().as_secs_f64()
    );
    // Keep the local state file's leaders in step with failovers and switchovers, so that a
    // restart brings each cluster back with its current leader.
    let mut local = local;
    let mut changes = app.topology.subscribe();
    let stop = stop_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            changed = changes.changed() => {
                if changed.is_err() {
                    break;
                }
                if let Err(e) = sandbox::follow_leaders(&mut local, &app.topology.load()) {
                    tracing::warn!(error = %e, "could not record the new leader");
                }
            }
        }
    }
    println!("stopping ...");
    app.shutdown().await;
    drop(members);
    local.stop().await?;
    println!("stopped");
    Ok(())
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn generate_token() -> String {
    (0..32)
        .map(|_| format!("{:x}", rand::random_range(0u8..16)))
        .collect()
}
