//! The servers and the switchyard of one part of a run: MariaDB clusters in a temp dir and
//! switchyard in this process, with the application account every part connects as.

use anyhow::Context;
use orchestrator::LocalClusters;
use tempfile::TempDir;

use super::sysbench::{PASSWORD, USER};
use crate::sandbox::{self, SandboxOptions};
use crate::App;

/// Started by [`Stage::start`], stopped by [`Stage::stop`]; dropping it kills the servers.
pub struct Stage {
    /// Holds the clusters' data; room for more (HAProxy's config, a Spider server).
    pub tmp: TempDir,
    pub local: LocalClusters,
    pub app: App,
    /// The admin API's bearer token.
    pub admin_token: String,
}

impl Stage {
    /// `clusters` clusters of a leader and `replicas` replicas each, and switchyard over them.
    pub async fn start(prefix: &str, clusters: usize, replicas: usize) -> anyhow::Result<Stage> {
        Self::start_with(prefix, clusters, replicas, None).await
    }

    /// Like [`Stage::start`], every node's binary log on a tmpfs of `binlog_disk_mb` MiB.
    pub async fn start_with(
        prefix: &str,
        clusters: usize,
        replicas: usize,
        binlog_disk_mb: Option<u32>,
    ) -> anyhow::Result<Stage> {
        Self::start_configured(prefix, clusters, replicas, binlog_disk_mb, |_, _| {}).await
    }

    /// Like [`Stage::start_with`], with `adjust` applied to switchyard's configuration (given
    /// the servers started) first.
    pub async fn start_configured(
        prefix: &str,
        clusters: usize,
        replicas: usize,
        binlog_disk_mb: Option<u32>,
        adjust: impl FnOnce(&mut crate::Config, &LocalClusters),
    ) -> anyhow::Result<Stage> {
        let tmp = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .context("creating a temp dir")?;
        let opts = SandboxOptions {
            dir: tmp.path().join("clusters"),
            clusters,
            replicas,
            base_port: None,
            listen: "127.0.0.1:0".into(),
            admin: "127.0.0.1:0".into(),
            admin_token: format!("{:016x}", rand::random::<u64>()),
            app_user: USER.into(),
            app_password: PASSWORD.into(),
            binlog_disk_mb,
            shards: 0,
            rebuild_restore_command: None,
        };
        // Dropping `local` kills the servers: an early return stops them.
        let local = sandbox::provision(&opts).await.context(
            "starting MariaDB (the benchmark needs it: apt-get install -y mariadb-server)",
        )?;
        let mut config = sandbox::config_for(&local, &opts);
        adjust(&mut config, &local);
        let app = App::start(config).await.context("starting switchyard")?;
        Ok(Stage {
            tmp,
            local,
            app,
            admin_token: opts.admin_token,
        })
    }

    /// Shuts switchyard down and stops the servers (a failure to stop is logged).
    pub async fn stop(self) {
        self.app.shutdown().await;
        if let Err(e) = self.local.stop().await {
            tracing::warn!(error = %e, "stopping the benchmark's servers");
        }
    }
}
