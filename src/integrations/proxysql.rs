//! ProxySQL: each cluster's writer and reader hostgroups rewritten whole through ProxySQL's
//! admin interface (MySQL protocol, port 6032 by default): the hostgroups' rows of
//! `mysql_servers` are deleted and inserted again (the leader in the writer hostgroup, the
//! readable replicas in the reader hostgroup), then `LOAD MYSQL SERVERS TO RUNTIME` makes
//! them live and `SAVE MYSQL SERVERS TO DISK` keeps them over a restart.

use std::time::Duration;

use router::backend::{BackendConn, ConnectOptions};
use router::config::Secret;
use serde::{Deserialize, Serialize};

use super::{Change, ClusterView, Integration, RetryPolicy};

/// ProxySQL: each cluster's writer and reader hostgroups rewritten through the admin interface.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxysqlConfig {
    /// The admin interface, `host:port` (ProxySQL's default is 127.0.0.1:6032).
    pub admin: String,
    /// Admin user (`admin_credentials` in ProxySQL).
    pub user: String,
    /// The admin user's password.
    pub password: Secret,
    /// The writer and reader hostgroup of each cluster; clusters not listed are left alone.
    pub hostgroups: Vec<ProxysqlHostgroups>,
    /// Also `SAVE MYSQL SERVERS TO DISK` after loading them to runtime.
    #[serde(default = "default_save_to_disk")]
    pub save_to_disk: bool,
    /// How a push is retried.
    #[serde(default)]
    pub retry: RetryPolicy,
}

fn default_save_to_disk() -> bool {
    true
}

/// One cluster's ProxySQL hostgroups.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProxysqlHostgroups {
    /// The cluster (one of `[[clusters]]`).
    pub cluster: String,
    /// Holds the leader only.
    pub writer: u32,
    /// Holds the replicas fit to serve reads (the leader when there are none).
    pub reader: u32,
}

impl ProxysqlConfig {
    pub(crate) fn validate(&self, clusters: &[&str], problems: &mut Vec<String>) {
        let at = "integrations.proxysql";
        if super::split_addr(&self.admin).is_none() {
            problems.push(format!("{at}.admin `{}` is not host:port", self.admin));
        }
        if self.user.is_empty() {
            problems.push(format!("{at}.user must not be empty"));
        }
        let mut used = std::collections::HashSet::new();
        for h in &self.hostgroups {
            if !clusters.contains(&h.cluster.as_str()) {
                problems.push(format!("{at}.hostgroups: unknown cluster `{}`", h.cluster));
            }
            if h.writer == h.reader {
                problems.push(format!(
                    "{at}.hostgroups.{}: writer and reader must differ",
                    h.cluster
                ));
            }
            for g in [h.writer, h.reader] {
                if !used.insert(g) {
                    problems.push(format!("{at}.hostgroups: hostgroup {g} is used twice"));
                }
            }
        }
        if self.hostgroups.is_empty() {
            problems.push(format!("{at}.hostgroups: list at least one cluster"));
        }
        self.retry.validate(at, problems);
    }
}

/// An SQL string literal (ProxySQL's admin is SQLite: quotes are doubled).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The statements that make ProxySQL's hostgroups say `view`, in order.
pub fn statements(hg: &ProxysqlHostgroups, view: &ClusterView, save_to_disk: bool) -> Vec<String> {
    let mut rows = Vec::new();
    if let Some((h, p)) = view.leader.as_deref().and_then(super::split_addr) {
        rows.push(format!("({}, {}, {p})", hg.writer, quote(h)));
    }
    let mut readers: Vec<(&str, u16)> = view
        .readable()
        .filter_map(|n| super::split_addr(&n.addr))
        .collect();
    if readers.is_empty() {
        readers.extend(view.leader.as_deref().and_then(super::split_addr));
    }
    for (h, p) in readers {
        rows.push(format!("({}, {}, {p})", hg.reader, quote(h)));
    }
    let mut out = vec![format!(
        "DELETE FROM mysql_servers WHERE hostgroup_id IN ({}, {})",
        hg.writer, hg.reader
    )];
    if !rows.is_empty() {
        out.push(format!(
            "INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES {}",
            rows.join(", ")
        ));
    }
    out.push("LOAD MYSQL SERVERS TO RUNTIME".into());
    if save_to_disk {
        out.push("SAVE MYSQL SERVERS TO DISK".into());
    }
    out
}

/// The admin interface integration.
pub(crate) struct Proxysql {
    config: ProxysqlConfig,
}

impl Proxysql {
    pub(crate) fn new(config: ProxysqlConfig) -> Self {
        Proxysql { config }
    }
}

impl Integration for Proxysql {
    fn name(&self) -> &'static str {
        "proxysql"
    }

    fn retry(&self) -> &RetryPolicy {
        &self.config.retry
    }

    async fn push(&self, change: Change<'_>) -> Result<(), String> {
        let Some(hg) = self
            .config
            .hostgroups
            .iter()
            .find(|h| h.cluster == change.view.cluster)
        else {
            return Ok(());
        };
        let opts = ConnectOptions {
            user: self.config.user.as_str().into(),
            password: self.config.password.expose().clone(),
            deprecate_eof: false,
            found_rows: false,
            connect_timeout: Duration::from_millis(self.config.retry.timeout_ms),
            // ProxySQL's admin interface is reached in plain text (as its own clients do).
            tls: None,
            tcp: Default::default(),
        };
        let admin = &self.config.admin;
        let mut conn = BackendConn::connect(admin, &opts)
            .await
            .map_err(|e| format!("{admin}: {e}"))?;
        // One statement per query: ProxySQL's admin runs them one by one anyway, and an error
        // then names the statement.
        for sql in statements(hg, change.view, self.config.save_to_disk) {
            conn.query(&sql)
                .await
                .map_err(|e| format!("{admin}: `{sql}`: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::NodeView;

    #[test]
    fn statements_rewrite_both_hostgroups() {
        let node = |addr: &str, readable| NodeView {
            addr: addr.into(),
            role: if readable { "replica" } else { "leader" },
            up: true,
            maintenance: false,
            readable,
        };
        let view = ClusterView {
            cluster: "c1".into(),
            leader: Some("10.0.0.2:3306".into()),
            epoch: 2,
            held: false,
            nodes: vec![node("10.0.0.1:3306", true), node("10.0.0.2:3306", false)],
        };
        let hg = ProxysqlHostgroups {
            cluster: "c1".into(),
            writer: 10,
            reader: 20,
        };
        assert_eq!(
            statements(&hg, &view, true),
            [
                "DELETE FROM mysql_servers WHERE hostgroup_id IN (10, 20)",
                "INSERT INTO mysql_servers (hostgroup_id, hostname, port) VALUES \
                 (10, '10.0.0.2', 3306), (20, '10.0.0.1', 3306)",
                "LOAD MYSQL SERVERS TO RUNTIME",
                "SAVE MYSQL SERVERS TO DISK",
            ]
        );
    }
}
