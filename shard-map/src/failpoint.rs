//! Crash points for the crash tests: the process aborts where the environment says, so that a
//! test can stop a router or an orchestrator exactly between two steps of a protocol.
//!
//! Points: `xa-after-prepare` (every branch prepared, no decision yet), `xa-after-decision`
//! (decision logged, nothing committed yet), `failover-after-promote` (the new leader
//! promoted and its intent recorded, nothing published yet).

use std::sync::OnceLock;

/// Environment variable naming the point where the process aborts.
pub const FAILPOINT_ENV: &str = "SWITCHYARD_FAILPOINT";

/// Aborts the process when [`FAILPOINT_ENV`] names `point`.
pub fn failpoint(point: &str) {
    static SET: OnceLock<Option<String>> = OnceLock::new();
    let set = SET.get_or_init(|| std::env::var(FAILPOINT_ENV).ok());
    if set.as_deref() == Some(point) {
        eprintln!("switchyard: failpoint {point} reached, aborting");
        std::process::abort();
    }
}
