//! A physical rebuild's programs: the backup of the source (`mariadb-backup --backup
//! --stream=xbstream`, run here for a source on this host, or the operator's program that runs
//! it where the source is) and the operator's restore program on the node's side, which stops
//! the node's server, unpacks and prepares the backup in its data directory and starts it
//! again. The stream passes through the orchestrator (bytes counted, bounded by the rebuild's
//! deadline, both programs killed on expiry); the backup's log names the GTID position of its
//! consistent point, where the node then resumes replicating.

use std::net::IpAddr;
use std::path::Path;

use super::copy::{Endpoint, Program};
use crate::manager::settings::OrchestratorSettings;

/// The backup program run here when no `rebuild_backup_command` is set.
pub(crate) const BACKUP_PROGRAM: &str = "mariadb-backup";

/// Both programs of a physical rebuild.
#[derive(Debug, Clone)]
pub(crate) struct Programs {
    pub backup: Program,
    pub restore: Program,
}

/// What the two programs are told: the cluster, both nodes, the orchestrator's login.
pub(crate) struct Names<'a> {
    pub cluster: &'a str,
    pub node: &'a str,
    pub source: &'a str,
    /// The source as the built-in backup reaches it.
    pub source_endpoint: &'a Endpoint<'a>,
    pub node_endpoint: &'a Endpoint<'a>,
}

/// The programs for a physical rebuild of `names.node` from `names.source`, or why there are
/// none (said to the operator; nothing has changed yet).
pub(crate) fn programs(
    settings: &OrchestratorSettings,
    names: &Names<'_>,
) -> Result<Programs, String> {
    let Some(restore) = &settings.rebuild_restore_command else {
        return Err(
            "a physical rebuild needs rebuild_restore_command: the program on the node's host \
             that stops its server, puts the backup in place of its data and starts it again"
                .to_owned(),
        );
    };
    let (source, node) = (names.source_endpoint, names.node_endpoint);
    let with_names = |p: Program| {
        p.env("SWITCHYARD_CLUSTER", names.cluster)
            .env("SWITCHYARD_SOURCE", names.source)
            .env("SWITCHYARD_SOURCE_HOST", source.host)
            .env("SWITCHYARD_SOURCE_PORT", source.port.to_string())
            .env("SWITCHYARD_USER", source.user)
    };
    let backup = match &settings.rebuild_backup_command {
        Some(cmd) => with_names(Program::new(
            display(cmd),
            vec![names.cluster.to_owned(), names.source.to_owned()],
        )),
        None => {
            if !is_loopback(source.host) {
                return Err(format!(
                    "the built-in backup runs mariadb-backup here, which reads the source's \
                     files: {} is not on a loopback address; set rebuild_backup_command to a \
                     program that runs it on the source's host",
                    names.source
                ));
            }
            let mut args = source.binlog_args();
            args.extend(["--backup", "--stream=xbstream"].map(str::to_owned));
            with_names(Program::new(BACKUP_PROGRAM, args))
        }
    };
    let restore = with_names(Program::new(
        display(restore),
        vec![
            names.cluster.to_owned(),
            names.node.to_owned(),
            names.source.to_owned(),
        ],
    ))
    .env("SWITCHYARD_NODE", names.node)
    .env("SWITCHYARD_NODE_HOST", node.host)
    .env("SWITCHYARD_NODE_PORT", node.port.to_string());
    Ok(Programs { backup, restore })
}

/// The GTID position of the backup's consistent point, from `mariadb-backup`'s log: its last
/// `GTID of the last change '<position>'` (an empty position for a source that has written
/// nothing). `None` when the log does not say.
pub(crate) fn backup_position(log: &str) -> Option<String> {
    const SAID: &str = "GTID of the last change '";
    let start = log.rfind(SAID)? + SAID.len();
    let len = log[start..].find('\'')?;
    Some(log[start..start + len].to_owned())
}

fn display(path: &Path) -> String {
    path.display().to_string()
}

/// `localhost` or a loopback address: a server whose files are on this host.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manager::settings::RebuildMethod;
    use crate::tls::NodeTls;
    use std::time::Duration;

    fn endpoint<'a>(host: &'a str, port: u16, tls: &'a NodeTls) -> Endpoint<'a> {
        Endpoint {
            host,
            port,
            user: "orc",
            connect_timeout: Duration::from_secs(1),
            tls,
        }
    }

    fn env(p: &Program, name: &str) -> Option<String> {
        p.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn the_position_is_the_last_one_the_backup_log_names() {
        let log = "[00] 2026-12-07 21:48:03 Streaming xtrabackup_binlog_info\n\
                   [00] 2026-12-07 21:48:03 MySQL binlog position: filename 'node-bin.000001', \
                   position '1419', GTID of the last change '0-1-7,1-2-9'\n\
                   [00] 2026-12-07 21:48:03 completed OK!\n";
        assert_eq!(backup_position(log).as_deref(), Some("0-1-7,1-2-9"));
        assert_eq!(
            backup_position("GTID of the last change ''").as_deref(),
            Some("")
        );
        assert_eq!(backup_position("completed OK!"), None);
        assert_eq!(backup_position("GTID of the last change '0-1-"), None);
    }

    #[test]
    fn without_a_restore_program_a_physical_rebuild_is_refused() {
        let tls = NodeTls::Disabled;
        let (source, node) = (
            endpoint("127.0.0.1", 3312, &tls),
            endpoint("127.0.0.1", 3311, &tls),
        );
        let names = Names {
            cluster: "c1",
            node: "127.0.0.1:3311",
            source: "127.0.0.1:3312",
            source_endpoint: &source,
            node_endpoint: &node,
        };
        let settings = OrchestratorSettings {
            rebuild_method: RebuildMethod::Physical,
            ..OrchestratorSettings::default()
        };
        let e = programs(&settings, &names).unwrap_err();
        assert!(e.contains("rebuild_restore_command"), "{e}");
    }

    #[test]
    fn the_built_in_backup_reads_only_a_local_source_and_both_programs_are_told_the_nodes() {
        let tls = NodeTls::Disabled;
        let settings = OrchestratorSettings {
            rebuild_restore_command: Some("/opt/restore".into()),
            ..OrchestratorSettings::default()
        };
        let (local, node) = (
            endpoint("127.0.0.1", 3312, &tls),
            endpoint("127.0.0.1", 3311, &tls),
        );
        let names = Names {
            cluster: "c1",
            node: "127.0.0.1:3311",
            source: "127.0.0.1:3312",
            source_endpoint: &local,
            node_endpoint: &node,
        };
        let p = programs(&settings, &names).unwrap();
        assert_eq!(p.backup.program, BACKUP_PROGRAM);
        for want in [
            "--no-defaults",
            "--backup",
            "--stream=xbstream",
            "--port=3312",
        ] {
            assert!(
                p.backup.args.iter().any(|a| a == want),
                "{:?}",
                p.backup.args
            );
        }
        assert!(!p.backup.args.iter().any(|a| a.contains("password")));
        assert_eq!(p.restore.program, "/opt/restore");
        assert_eq!(
            p.restore.args,
            ["c1", "127.0.0.1:3311", "127.0.0.1:3312"].map(str::to_owned)
        );
        assert_eq!(
            env(&p.restore, "SWITCHYARD_NODE_PORT").as_deref(),
            Some("3311")
        );
        assert_eq!(
            env(&p.restore, "SWITCHYARD_SOURCE").as_deref(),
            Some("127.0.0.1:3312")
        );
        assert_eq!(env(&p.backup, "SWITCHYARD_USER").as_deref(), Some("orc"));

        let remote = endpoint("10.1.2.3", 3306, &tls);
        let names = Names {
            source: "10.1.2.3:3306",
            source_endpoint: &remote,
            ..names
        };
        let e = programs(&settings, &names).unwrap_err();
        assert!(e.contains("rebuild_backup_command"), "{e}");
        let settings = OrchestratorSettings {
            rebuild_backup_command: Some("/opt/backup".into()),
            ..settings
        };
        let p = programs(&settings, &names).unwrap();
        assert_eq!(p.backup.args, ["c1", "10.1.2.3:3306"].map(str::to_owned));
        assert_eq!(
            env(&p.backup, "SWITCHYARD_SOURCE_HOST").as_deref(),
            Some("10.1.2.3")
        );
        assert!(is_loopback("localhost") && is_loopback("::1") && is_loopback("127.0.0.2"));
    }
}
