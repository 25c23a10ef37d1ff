//! Write traffic through the router and the checks every failure scenario ends with, as the
//! tests use them: [`switchyard::scenario::writes`] (the same code the scenario runner uses),
//! with a failed check failing the test.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use mysql_async::Conn;

#[allow(unused_imports)] // each test binary uses some of them
pub use switchyard::scenario::writes::{port_of, writer, Ledger, Target, Writers};

use super::TestEnv;

/// The checks' view of a test's switchyard and clusters.
pub fn target(env: &TestEnv) -> Target<'_> {
    Target {
        app: env.app(),
        local: env.local(),
    }
}

/// Waits until `more` writes beyond those acknowledged now were acknowledged.
pub async fn more_writes(ledger: &Ledger, more: usize, limit: Duration, what: &str) {
    if let Err(e) = ledger.wait_for_more(more, limit).await {
        panic!("{what}: {e}");
    }
}

/// Stops the writers; one the router left hanging fails the test.
pub async fn stop_writers(writers: Writers, limit: Duration) -> Arc<Ledger> {
    writers.stop(limit).await.unwrap_or_else(|e| panic!("{e}"))
}

/// One cluster of a leader and two replicas with `fo.t`, and `count` writers through the
/// router that have had `warm` writes acknowledged. Returns the leader and its epoch too.
pub async fn cluster_under_writes(count: u64, warm: usize) -> (TestEnv, String, u64, Writers) {
    let env = TestEnv::start(1, 2).await;
    setup(&env).await;
    let (leader, epoch) = leader_of(&env, "c1");
    let writers = writers_flowing(&env, count, warm).await;
    (env, leader, epoch, writers)
}

/// `count` writers through the router, once they have had `warm` writes acknowledged.
pub async fn writers_flowing(env: &TestEnv, count: u64, warm: usize) -> Writers {
    let writers = Writers::start(&env.router_opts(None), count);
    more_writes(
        &writers.ledger,
        warm,
        Duration::from_secs(10),
        "writes flowing",
    )
    .await;
    writers
}

/// `CREATE DATABASE fo` with the writers' table, through the router.
pub async fn setup(env: &TestEnv) {
    switchyard::scenario::writes::setup(&env.router_opts(None))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

pub async fn ids_on(conn: &mut Conn) -> BTreeSet<u64> {
    switchyard::scenario::writes::ids_on(conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The cluster's published leader and epoch.
pub fn leader_of(env: &TestEnv, cluster: &str) -> (String, u64) {
    target(env).leader_of(cluster)
}

/// Every acknowledged write is on `leader`, and every row there was acknowledged or left
/// uncertain to its client. Returns the rows present.
pub async fn check_no_write_lost(env: &TestEnv, leader: &str, ledger: &Ledger) -> BTreeSet<u64> {
    target(env)
        .no_write_lost(leader, ledger)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `addr` is read-only and follows `leader` or was kept out holding nothing but writes whose
/// clients were left unsure. Returns whether it rejoined.
pub async fn fenced_and_in_place(
    env: &TestEnv,
    cluster: &str,
    addr: &str,
    leader: &str,
    present: &BTreeSet<u64>,
    ledger: &Ledger,
) -> bool {
    target(env)
        .fenced_and_in_place(
            cluster,
            addr,
            leader,
            present,
            ledger,
            Duration::from_secs(40),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}
