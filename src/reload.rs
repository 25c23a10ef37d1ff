//! Configuration reload without a restart (SIGHUP or `POST /api/v1/config/reload`): the file
//! is read again (with its includes and encrypted values) and validated whole; nothing
//! changes unless it is valid. What can change live is put in force at once: the router's
//! users (for new logins), the admin users, token and audit file, and the failover policy.
//! Everything else that differs is listed as needing a restart, never silently ignored.
//! Client sessions are not touched.

use std::sync::{Arc, Mutex};

use orchestrator::Orchestrator;
use router::RouterContext;
use serde::Serialize;
use utoipa::ToSchema;

use crate::acl::Acl;
use crate::config::{Config, ConfigError};

/// Settings put in force by a reload; every other change needs a restart.
const LIVE: &[&str] = &[
    "router.users",
    "admin.users",
    "admin.token",
    "admin.audit_log",
];

/// Failover settings read when the orchestrator starts, so not changed by a reload.
const FAILOVER_AT_START: &[&str] = &[
    "failover.master_connect_retry_s",
    "failover.master_heartbeat_ms",
];

/// What a reload did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReloadReport {
    /// Settings that changed and are now in force (`section.key`).
    pub applied: Vec<String>,
    /// Settings that changed in the file but keep their running value until a restart.
    pub restart_required: Vec<String>,
    /// Router users added, removed or given a new password.
    pub users_changed: Vec<String>,
    /// Reloads applied since start, this one included.
    pub generation: u64,
}

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("this configuration was not read from a file, so there is nothing to reload")]
    NoFile,
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Holds the configuration in force and the parts of the process a reload changes.
pub struct Reloader {
    running: Mutex<(Config, u64)>,
    router: Arc<RouterContext>,
    acl: Arc<Acl>,
    orchestrator: Arc<Orchestrator>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader").finish_non_exhaustive()
    }
}

impl Reloader {
    pub fn new(
        config: Config,
        router: Arc<RouterContext>,
        acl: Arc<Acl>,
        orchestrator: Arc<Orchestrator>,
    ) -> Self {
        Reloader {
            running: Mutex::new((config, 0)),
            router,
            acl,
            orchestrator,
        }
    }

    /// The configuration in force, secrets shown as `***`.
    pub fn shown(&self) -> serde_json::Value {
        serde_json::to_value(&self.lock().0).unwrap_or_default()
    }

    /// Reads the file again and applies what changed.
    pub fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let path = {
            let running = self.lock();
            running.0.origin.path.clone().ok_or(ReloadError::NoFile)?
        };
        let new = Config::load(&path)?;
        self.apply(new)
    }

    /// Applies `new` (already valid on its own): the live settings that differ are put in
    /// force, the others reported. The result must also be valid as a whole (a new
    /// `failover.hold_max_ms` against the running `router.hold_timeout_ms`, say), or
    /// nothing changes.
    pub fn apply(&self, mut new: Config) -> Result<ReloadReport, ReloadError> {
        let mut running = self.lock();
        let old = &running.0;
        if old.origin.admin_token_fixed {
            new.admin.token = old.admin.token.clone();
            new.origin.admin_token_fixed = true;
        }
        if new.router.server_version.is_none() {
            // Asked of the first leader at start, not a change of the file.
            new.router.server_version = old.router.server_version.clone();
        }
        let changed = changed_settings(old, &new);
        let (applied, restart_required): (Vec<String>, Vec<String>) =
            changed.into_iter().partition(|k| is_live(k));
        let mut next = old.clone();
        next.router.users = new.router.users.clone();
        next.admin.users = new.admin.users.clone();
        next.admin.token = new.admin.token.clone();
        next.admin.audit_log = new.admin.audit_log.clone();
        let mut failover = new.failover.clone();
        failover.master_connect_retry_s = old.failover.master_connect_retry_s;
        failover.master_heartbeat_ms = old.failover.master_heartbeat_ms;
        next.failover = failover;
        let problems = next.validate();
        if !problems.is_empty() {
            return Err(ConfigError::Invalid(problems).into());
        }
        let users_changed = self.router.set_users(&next.router.users);
        self.acl.replace(
            next.admin.users.clone(),
            next.admin.token.clone(),
            next.admin.audit_log.clone(),
        );
        self.orchestrator.set_settings(next.failover.clone());
        running.1 += 1;
        running.0 = next;
        Ok(ReloadReport {
            applied,
            restart_required,
            users_changed,
            generation: running.1,
        })
    }

    /// Every problem `text` would have as the configuration file (its relative paths
    /// anchored next to the running one); nothing is applied.
    pub fn check(&self, text: &str) -> Vec<String> {
        let dir = {
            let running = self.lock();
            running
                .0
                .origin
                .path
                .as_ref()
                .and_then(|p| p.parent().map(|p| p.to_path_buf()))
                .unwrap_or_default()
        };
        match Config::from_text(text, &dir.join("(request body)")) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(problems)) => problems,
            Err(e) => vec![e.to_string()],
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Config, u64)> {
        self.running.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn is_live(key: &str) -> bool {
    LIVE.contains(&key) || (key.starts_with("failover.") && !FAILOVER_AT_START.contains(&key))
}

/// The `section.key` settings that differ between `a` and `b` (secrets compared by value
/// through fingerprints, never shown).
fn changed_settings(a: &Config, b: &Config) -> Vec<String> {
    let (a, b) = router::config::with_secret_fingerprints(|| {
        (
            serde_json::to_value(a).unwrap_or_default(),
            serde_json::to_value(b).unwrap_or_default(),
        )
    });
    let mut out = Vec::new();
    let empty = serde_json::Map::new();
    let (a, b) = (
        a.as_object().unwrap_or(&empty),
        b.as_object().unwrap_or(&empty),
    );
    let mut sections: Vec<&String> = a.keys().chain(b.keys()).collect();
    sections.sort();
    sections.dedup();
    for s in sections {
        match (a.get(s), b.get(s)) {
            (Some(serde_json::Value::Object(x)), Some(serde_json::Value::Object(y))) => {
                let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
                keys.sort();
                keys.dedup();
                for k in keys {
                    if x.get(k) != y.get(k) {
                        out.push(format!("{s}.{k}"));
                    }
                }
            }
            (x, y) if x != y => out.push(s.clone()),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_settings_are_the_listed_ones() {
        assert!(is_live("router.users"));
        assert!(is_live("admin.token"));
        assert!(is_live("failover.failover"));
        assert!(!is_live("failover.master_heartbeat_ms"));
        assert!(!is_live("router.listen"));
        assert!(!is_live("clusters"));
    }
}
