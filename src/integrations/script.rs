//! Scripts run for every change of a cluster (not only the orchestrator's operations: also a
//! node going down, coming back or put under maintenance), with arguments
//! `<event> <cluster> <leader> <previous_leader> <epoch>` and the cluster's state as JSON on
//! stdin. A script that exits non-zero or overruns its time limit is a failed push, retried.

use std::path::PathBuf;
use std::process::Stdio;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use super::{Change, Integration, RetryPolicy};

/// How much of a failing script's output goes into the error.
const OUTPUT_TAIL: usize = 300;

/// A script run for every change of a cluster: `<event> <cluster> <leader> <previous_leader>
/// <epoch>`, the state as JSON on stdin.
#[derive(Debug, Clone, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScriptConfig {
    /// The executable.
    pub path: PathBuf,
    /// `retry.timeout_ms` is the script's time limit; it is killed past it.
    #[serde(default)]
    pub retry: RetryPolicy,
}

impl ScriptConfig {
    pub(crate) fn validate(&self, at: &str, problems: &mut Vec<String>) {
        if !self.path.is_file() {
            problems.push(format!("{at}.path: {} is not a file", self.path.display()));
        }
        self.retry.validate(at, problems);
    }
}

/// A script.
pub(crate) struct Script {
    config: ScriptConfig,
}

impl Script {
    pub(crate) fn new(config: ScriptConfig) -> Self {
        Script { config }
    }
}

impl Integration for Script {
    fn name(&self) -> &'static str {
        "script"
    }

    fn retry(&self) -> &RetryPolicy {
        &self.config.retry
    }

    async fn push(&self, change: Change<'_>) -> Result<(), String> {
        let v = change.view;
        let path = &self.config.path;
        let mut cmd = Command::new(path);
        cmd.args([
            change.event,
            &v.cluster,
            v.leader.as_deref().unwrap_or(""),
            change.previous_leader.unwrap_or(""),
            &v.epoch.to_string(),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
        let mut child = orchestrator::spawn::spawn(&mut cmd)
            .await
            .map_err(|e| format!("{}: cannot start: {e}", path.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            let body = super::webhook::payload(change).to_string();
            // A script that does not read its input is fine.
            let _ = stdin.write_all(body.as_bytes()).await;
        }
        orchestrator::spawn::finish(path, child, self.config.retry.timeout(), OUTPUT_TAIL).await
    }
}
