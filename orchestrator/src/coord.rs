//! How an orchestrator takes part in a deployment of several processes: whether it may act
//! at all (it leads), and the routers' part in a change of leader (they hold before the new
//! leader is promoted, and learn of it after). The embedded default is [`Solo`]: one process,
//! routers in the same process, nothing to wait for.
//!
//! The workflows call it at fixed points: [`Coordinator::ensure_leader`] before an operation
//! starts; [`Coordinator::begin`] just before a promotion (which records the change and checks
//! leadership again); [`Coordinator::hold`] after the cluster is published
//! `Held`, before anything is done to the old leader; [`Coordinator::publish`] after the new
//! leader is published.

use futures::future::BoxFuture;
pub use shard_map::etcd::Intent;

/// The multi-process side of the workflows. See the module docs.
pub trait Coordinator: Send + Sync + std::fmt::Debug {
    /// Fails (with the reason, naming the leader) unless this orchestrator leads now.
    fn ensure_leader(&self) -> BoxFuture<'_, Result<(), String>>;
    /// Like `ensure_leader` from what this process knows without asking the store: for
    /// changes that only touch the topology it publishes (operator flags).
    fn leads(&self) -> Result<(), String>;
    /// Makes the cluster's current snapshot (published `Held` at `epoch`) known to every
    /// router, and returns once each live router holds its statements for the cluster, or
    /// has lost its lease (and so sends none). Bounded; an error means the hold is not
    /// known to hold everywhere, and the operation must not go on.
    fn hold<'a>(&'a self, cluster: &'a str, epoch: u64) -> BoxFuture<'a, Result<(), String>>;
    /// Records the change of leader about to be made (just before the promotion), failing
    /// unless this orchestrator leads: another one that takes over before the outcome is
    /// published completes or undoes it ([`crate::Orchestrator::resume`]).
    fn begin<'a>(&'a self, intent: &'a Intent) -> BoxFuture<'a, Result<(), String>>;
    /// Makes the cluster's current snapshot (a new leader, a released hold) known to every
    /// router, and ends the cluster's recorded intent. An error leaves the routers holding
    /// until the next orchestrator publishes.
    fn publish<'a>(&'a self, cluster: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// One process: always the leader; its routers read the same topology handle.
#[derive(Debug, Default)]
pub struct Solo;

impl Coordinator for Solo {
    fn leads(&self) -> Result<(), String> {
        Ok(())
    }

    fn ensure_leader(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn hold<'a>(&'a self, _: &'a str, _: u64) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn begin<'a>(&'a self, _: &'a Intent) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }

    fn publish<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}
