//! The multi-process mode against a real etcd (Debian's `etcd-server`, started by the test on
//! its own ports) and real MariaDB clusters: one orchestrator leads, every write it makes is
//! guarded by its leadership, routers follow its topology and fence their writes when they
//! lose etcd.

mod common;

use std::time::Duration;

use common::{eventually, TestEnv};
use mysql_async::prelude::*;
use orchestrator::provision::LocalEtcd;
use shard_map::etcd::{EtcdError, EtcdOptions, EtcdStore, Lease, Member, WatchEvent};
use shard_map::{ClusterStatus, NodeStatus, Role};
use switchyard::config::{EtcdConfig, ProcessRole};
use switchyard::App;

async fn local_etcd(members: usize) -> (LocalEtcd, tempfile::TempDir) {
    let dir = tempfile::Builder::new()
        .prefix("sy-etcd-")
        .tempdir()
        .expect("temp dir");
    match LocalEtcd::start(dir.path(), members).await {
        Ok(e) => (e, dir),
        Err(e) => panic!("could not start etcd: {e}\nThese tests need etcd: scripts/install-deps"),
    }
}

/// The store options of [`etcd_config`] under `prefix`.
fn options(etcd: &LocalEtcd, prefix: &str) -> EtcdOptions {
    EtcdConfig {
        prefix: prefix.into(),
        ..etcd_config(etcd, "test")
    }
    .options()
}

/// The sandbox's `[etcd]` section with the tests' prefix and a short lease (2 s).
fn etcd_config(etcd: &LocalEtcd, name: &str) -> EtcdConfig {
    EtcdConfig {
        prefix: "/sy-test".into(),
        lease_ttl_ms: 2000,
        request_timeout_ms: 500,
        ..switchyard::sandbox::etcd_section(etcd, name)
    }
}

fn member(id: &str) -> Member {
    Member {
        id: id.into(),
        admin: None,
        started_ms: 0,
    }
}

fn cluster(epoch: u64, leader: &str) -> ClusterStatus {
    let mut c = ClusterStatus::new(
        "c1",
        Some(leader.into()),
        vec![NodeStatus::new(leader, Role::Leader)],
    );
    c.epoch = epoch;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_at_a_time_and_a_deposed_one_writes_nothing() {
    let (etcd, _dir) = local_etcd(1).await;
    let store = EtcdStore::connect(&options(&etcd, "/t1"))
        .await
        .expect("etcd answers");

    let lease_a = Lease::grant(&store).await.expect("lease a");
    let lease_b = Lease::grant(&store).await.expect("lease b");
    let token_a = store
        .try_lead(&lease_a, &member("a"))
        .await
        .expect("etcd answers")
        .expect("a leads: nobody did");
    let refused = store
        .try_lead(&lease_b, &member("b"))
        .await
        .expect("etcd answers");
    assert_eq!(refused.expect_err("b must not lead while a does").id, "a");
    assert_eq!(
        store.leader().await.unwrap().map(|m| m.id).as_deref(),
        Some("a")
    );

    let r1 = store
        .put_cluster(&token_a, &cluster(1, "127.0.0.1:1"), 0)
        .await
        .expect("the leader writes");
    assert_eq!(store.cluster_revision("c1").await.unwrap(), r1);
    // A write based on an older revision of the record (one that reached etcd late) is
    // refused even from the leader.
    match store
        .put_cluster(&token_a, &cluster(0, "127.0.0.1:0"), 0)
        .await
    {
        Err(EtcdError::Changed { current, .. }) => assert_eq!(current, r1),
        other => panic!("a write based on a stale revision must be refused, got {other:?}"),
    }
    let (read, revision) = store.load_topology().await.unwrap();
    assert_eq!(read["c1"].epoch, 1);
    let mut watch = store.watch_topology(revision).await.unwrap();

    // a's lease ends (as when a is paused or cut off past its TTL): b leads, and a's writes
    // with its old token fail, even though a never learnt that it lost.
    lease_a.revoke().await;
    let token_b = eventually(Duration::from_secs(10), "b to lead", || async {
        store.try_lead(&lease_b, &member("b")).await.ok()?.ok()
    })
    .await;
    assert!(
        token_b.revision() > token_a.revision(),
        "leaderships are ordered"
    );
    match store
        .put_cluster(&token_a, &cluster(7, "127.0.0.1:9"), r1)
        .await
    {
        Err(EtcdError::NotLeader) => {}
        other => panic!("a deposed leader's write must be refused, got {other:?}"),
    }
    assert!(matches!(
        store.check_leader(&token_a).await,
        Err(EtcdError::NotLeader)
    ));
    store.check_leader(&token_b).await.expect("b leads");
    let r2 = store
        .put_cluster(&token_b, &cluster(2, "127.0.0.1:2"), r1)
        .await
        .unwrap();

    // The watcher saw b's write and not a's.
    let seen = tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("a change arrives")
        .unwrap();
    match seen {
        Some(WatchEvent::Changes { changes, .. }) => assert_eq!(
            changes,
            vec![shard_map::etcd::TopologyChange::Put(cluster(
                2,
                "127.0.0.1:2"
            ))]
        ),
        other => panic!("expected b's change, got {other:?}"),
    }
    assert_eq!(store.load_topology().await.unwrap().0["c1"].epoch, 2);

    // A watcher that asks for compacted history is told to list again.
    store
        .put_cluster(&token_b, &cluster(3, "127.0.0.1:3"), r2)
        .await
        .unwrap();
    store.compact_all().await.unwrap();
    let mut stale = store.watch_topology(revision).await.unwrap();
    let told = tokio::time::timeout(Duration::from_secs(5), stale.next())
        .await
        .expect("the watch answers")
        .unwrap();
    assert!(matches!(told, Some(WatchEvent::Compacted)), "got {told:?}");
}

/// A local etcd of `members`, `clusters` clusters of a leader and `replicas` replicas, the
/// in-process "a" (role all) over them, and a store client.
async fn deployment(
    members: usize,
    clusters: usize,
    replicas: usize,
) -> (LocalEtcd, tempfile::TempDir, TestEnv, EtcdStore) {
    let (etcd, dir) = local_etcd(members).await;
    let cfg = etcd_config(&etcd, "a");
    let env = TestEnv::start_with(clusters, replicas, |c| {
        c.etcd = Some(cfg);
    })
    .await;
    let store = EtcdStore::connect(&options(&etcd, "/sy-test"))
        .await
        .unwrap();
    (etcd, dir, env, store)
}

/// Waits until "a" leads.
async fn a_leads(store: &EtcdStore) {
    eventually(Duration::from_secs(15), "a to lead", || async {
        (store.leader().await.ok()??.id == "a").then_some(())
    })
    .await;
}

/// A second process over the same clusters and etcd.
async fn second(env: &TestEnv, etcd: &LocalEtcd, name: &str, role: ProcessRole) -> App {
    second_with(env, etcd, name, role, |_| {}).await
}

/// Like [`second`], letting the test adjust the configuration.
async fn second_with(
    env: &TestEnv,
    etcd: &LocalEtcd,
    name: &str,
    role: ProcessRole,
    adjust: impl FnOnce(&mut switchyard::Config),
) -> App {
    let mut config = switchyard::sandbox::config_for(env.local(), &env.opts);
    config.router.listen = "127.0.0.1:0".into();
    config.admin.listen = "127.0.0.1:0".into();
    config.router.socket = None;
    config.state_dir = None;
    config.shard_map_dir = None;
    config.etcd = Some(etcd_config(etcd, name));
    config.role = role;
    adjust(&mut config);
    App::start(config).await.expect("the second process starts")
}

/// Waits until a write goes through each of these routers.
async fn writes_through_each(ports: &[u16]) {
    for &port in ports {
        eventually(
            Duration::from_secs(20),
            &format!("a write through the router on {port}"),
            || async { write_through(port).await.ok() },
        )
        .await;
    }
}

async fn write_through(port: u16) -> Result<(), mysql_async::Error> {
    let r = write_once(port).await;
    if let Err(e) = &r {
        eprintln!("write through {port}: {e}");
    }
    r
}

async fn write_once(port: u16) -> Result<(), mysql_async::Error> {
    let opts = common::opts_for(port, "app", "app", None);
    let mut conn = mysql_async::Conn::new(opts).await?;
    conn.query_drop("CREATE DATABASE IF NOT EXISTS etcd_db")
        .await?;
    conn.query_drop("USE etcd_db").await?;
    conn.query_drop("CREATE TABLE IF NOT EXISTS etcd_t (id INT PRIMARY KEY AUTO_INCREMENT, v INT)")
        .await?;
    conn.query_drop("INSERT INTO etcd_t (v) VALUES (1)").await?;
    conn.disconnect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_by_the_leading_orchestrator_reaches_every_router() {
    let (etcd, _dir, mut env, store) = deployment(1, 1, 2).await;
    let b = second(&env, &etcd, "b", ProcessRole::All).await;
    let r = second(&env, &etcd, "r", ProcessRole::Router).await;

    let leader = eventually(
        Duration::from_secs(15),
        "one orchestrator to lead",
        || async { store.leader().await.ok().flatten() },
    )
    .await;
    assert!(["a", "b"].contains(&leader.id.as_str()), "{leader:?}");
    eventually(
        Duration::from_secs(15),
        "three routers registered",
        || async { (store.routers().await.ok()?.len() == 3).then_some(()) },
    )
    .await;
    writes_through_each(&[env.router_port(), b.router_port(), r.router_port()]).await;

    // Every process shows the deployment; one that does not lead asks the leader, through
    // etcd, to make the changes asked of it.
    let http = common::http();
    let members: serde_json::Value = http
        .get(format!("http://{}/api/v1/members", r.admin_addr))
        .bearer_auth("test-token")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(members["mode"], "etcd", "{members}");
    assert_eq!(members["leader"]["id"], leader.id.as_str(), "{members}");
    assert_eq!(members["routers"].as_array().unwrap().len(), 3, "{members}");
    for m in members["routers"]
        .as_array()
        .unwrap()
        .iter()
        .chain(members["orchestrators"].as_array().unwrap())
    {
        // Keep-alives go every third of the 2 s lease.
        let seen = m["last_contact_s"].as_u64().expect("last_contact_s");
        assert!(seen <= 2, "{m}");
    }
    assert_eq!(members["this"]["role"], "router", "{members}");
    let standby = if leader.id == "a" { &b } else { env.app() };
    let before = env.app().topology.load().cluster("c1").unwrap().clone();
    let replica = before
        .nodes
        .iter()
        .find(|n| Some(&n.addr) != before.leader.as_ref())
        .unwrap()
        .addr
        .clone();
    let resp = http
        .put(format!(
            "http://{}/api/v1/clusters/c1/nodes/{replica}/flags",
            r.admin_addr
        ))
        .bearer_auth("test-token")
        .json(&serde_json::json!({ "preferred": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    for (name, app) in [("a", env.app()), ("b", &b), ("r", &r)] {
        eventually(
            Duration::from_secs(10),
            &format!("{name} to see the flag set through r"),
            || async {
                let t = app.topology.load();
                t.cluster("c1")?
                    .node(&replica)?
                    .flags
                    .preferred
                    .then_some(())
            },
        )
        .await;
    }
    let resp = common::ask_switchover(standby.admin_addr, "c1").await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let report: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        report["new_leader"],
        replica.as_str(),
        "the preferred replica: {report}"
    );
    assert_eq!(report["epoch"], before.epoch + 1, "{report}");
    writes_through_each(&[env.router_port(), b.router_port(), r.router_port()]).await;

    eventually(
        Duration::from_secs(10),
        "a to see the switchover",
        || async {
            let epoch = env.app().topology.load().cluster("c1")?.epoch;
            (epoch > before.epoch).then_some(())
        },
    )
    .await;
    assert_eq!(
        env.app().topology.load().cluster("c1").unwrap().epoch,
        before.epoch + 1,
        "{:#?}\n{:#?}",
        env.app().orchestrator.events("c1").unwrap(),
        b.orchestrator.events("c1").unwrap()
    );
    let old = env.app().topology.load().cluster("c1").unwrap().clone();
    let old_leader = old.leader.clone().unwrap();
    // Two writers through each router while the leader dies.
    use switchyard::scenario::writes::{ids_on, loopback, setup, Writers};
    let ports = [env.router_port(), b.router_port(), r.router_port()];
    setup(&loopback(ports[0], "app", "app")).await.unwrap();
    let writers: Vec<Writers> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| Writers::start_at(&loopback(*p, "app", "app"), 2, i as u64 * 100_000_000))
        .collect();
    for w in &writers {
        w.ledger
            .wait_for_more(20, Duration::from_secs(20))
            .await
            .unwrap();
    }
    env.local_mut().kill_node("c1", &old_leader).unwrap();
    let killed = tokio::time::Instant::now();

    for (name, app) in [("a", env.app()), ("b", &b), ("r", &r)] {
        eventually(
            Duration::from_secs(30),
            &format!("router {name} to see the new leader"),
            || async {
                let c = app.topology.load().cluster("c1")?.clone();
                (c.epoch > old.epoch && c.leader.as_deref() != Some(old_leader.as_str()))
                    .then_some(())
            },
        )
        .await;
    }
    writes_through_each(&ports).await;
    // Every router's writers go on, and no acknowledged write is lost: each is on the new
    // leader.
    for w in &writers {
        eventually(
            Duration::from_secs(20),
            "a write acknowledged after the kill",
            || async { w.ledger.first_ack_after(killed) },
        )
        .await;
    }
    let mut acked = std::collections::BTreeSet::new();
    for w in writers {
        acked.extend(w.stop(Duration::from_secs(30)).await.unwrap().acked_ids());
    }
    let new_leader = env
        .app()
        .topology
        .load()
        .cluster("c1")
        .unwrap()
        .leader
        .clone()
        .unwrap();
    let port = switchyard::scenario::writes::port_of(&new_leader);
    let on_leader = ids_on(&mut env.direct_conn(port, None).await)
        .await
        .unwrap();
    let lost: Vec<&u64> = acked.difference(&on_leader).collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost: {lost:?}",
        lost.len(),
        acked.len()
    );
    // Only the leader acted: the other orchestrator recorded no failover.
    let (acting, idle) = if leader.id == "a" {
        (env.app(), &b)
    } else {
        (&b, env.app())
    };
    let kinds = |app: &App| -> Vec<String> {
        app.orchestrator
            .events("c1")
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    };
    assert!(
        kinds(acting).iter().any(|k| k == "failover.done"),
        "{:?}",
        kinds(acting)
    );
    assert!(
        !kinds(idle)
            .iter()
            .any(|k| k.starts_with("failover.") || k.starts_with("switchover.")),
        "the standby orchestrator must not act: {:?}",
        kinds(idle)
    );
    assert!(
        kinds(acting).iter().any(|k| k == "switchover.done"),
        "the switchover asked of the standby was made by the leader: {:?}",
        kinds(acting)
    );
    let new = store.load_topology().await.unwrap().0["c1"].clone();
    assert_eq!(new.epoch, old.epoch + 1, "etcd holds the new epoch");
    r.shutdown().await;
    b.shutdown().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_cut_off_from_etcd_fences_writes_and_serves_reads() {
    let (etcd, _dir, env, _store) = deployment(1, 1, 1).await;
    let r = second_with(&env, &etcd, "r", ProcessRole::Router, |c| {
        c.router.hold_timeout_ms = 1500;
        c.failover.hold_max_ms = 1000;
    })
    .await;
    let port = r.router_port();
    let f = second_with(&env, &etcd, "f", ProcessRole::Router, |c| {
        if let Some(e) = c.etcd.as_mut() {
            e.failsafe = true;
        }
    })
    .await;
    writes_through_each(&[port, f.router_port()]).await;

    // etcd freezes: no reset, every request just waits.
    etcd.signal_member(0, libc::SIGSTOP);
    let frozen = tokio::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "the router to fence its writes",
        || async {
            r.router
                .writes_fenced
                .load(std::sync::atomic::Ordering::Relaxed)
                .then_some(())
        },
    )
    .await;
    assert!(
        frozen.elapsed() <= Duration::from_millis(2000 + 500),
        "fenced {:?} after etcd froze: later than the lease TTL",
        frozen.elapsed()
    );
    let opts = common::opts_for(port, "app", "app", Some("etcd_db"));
    let mut conn = mysql_async::Conn::new(opts)
        .await
        .expect("the router accepts clients");
    let n: Option<i64> = conn
        .query_first("SELECT COUNT(*) FROM etcd_t")
        .await
        .expect("reads go on while fenced");
    assert!(n.unwrap_or(0) >= 1);
    match conn.query_drop("INSERT INTO etcd_t (v) VALUES (2)").await {
        Err(mysql_async::Error::Server(e)) => {
            assert_eq!(e.code, 1205, "{e:?}");
            assert!(e.message.contains("topology store"), "{e:?}");
        }
        other => panic!("a fenced write must fail with a clear error, got {other:?}"),
    }
    drop(conn);
    // A router configured `failsafe` goes on writing to the leader it knows.
    write_through(f.router_port())
        .await
        .expect("a failsafe router writes while etcd is frozen");
    assert!(!f
        .router
        .writes_fenced
        .load(std::sync::atomic::Ordering::Relaxed));

    etcd.signal_member(0, libc::SIGCONT);
    eventually(
        Duration::from_secs(20),
        "writes to flow again once etcd answers",
        || async { write_through(port).await.ok() },
    )
    .await;
    f.shutdown().await;
    r.shutdown().await;
    env.stop().await;
}

/// A `switchyard serve` process "p" (role all, failpoint `failpoint`) that leads once the
/// in-process "a" (which must lead now) stops and resigns; its router port.
async fn serve_process(
    env: &TestEnv,
    etcd: &LocalEtcd,
    store: &EtcdStore,
    failpoint: Option<&str>,
) -> (common::process::Serve, u16, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("p.toml");
    let (port, admin) = (common::process::free_port(), common::process::free_port());
    let extra = format!(
        "[etcd]\nendpoints = [\"{}\"]\nprefix = \"/sy-test\"\nname = \"p\"\n\
         lease_ttl_ms = 2000\nrequest_timeout_ms = 500\n",
        etcd.endpoints()[0]
    );
    common::process::write_serve_config(
        env,
        &path,
        common::process::ServeConfig {
            port,
            admin,
            router_id: "p",
            dead: &[],
            extra: &extra,
        },
    );
    let p = common::process::Serve::start(&path, failpoint);
    eventually(Duration::from_secs(20), "p to stand by", || async {
        store
            .orchestrators()
            .await
            .ok()?
            .iter()
            .any(|m| m.id == "p")
            .then_some(())
    })
    .await;
    (p, port, tmp)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leading_orchestrator_is_replaced_and_touches_nothing_when_thawed() {
    let (etcd, _dir, mut env, store) = deployment(1, 1, 2).await;
    a_leads(&store).await;
    let router_a = env.router_port();
    eventually(
        Duration::from_secs(20),
        "a write through a's router",
        || async { write_through(router_a).await.ok() },
    )
    .await;

    // A `switchyard serve` process takes over when a stops (and resigns).
    let (mut p, port, _tmp) = serve_process(&env, &etcd, &store, None).await;
    let b = p_leads_b_stands_by(&mut env, &etcd, &store).await;

    // p freezes: no reset, its lease runs out, b takes the lead.
    p.signal(libc::SIGSTOP);
    let frozen = tokio::time::Instant::now();
    eventually(
        Duration::from_secs(10),
        "b to lead once p's lease expired",
        || async { (store.leader().await.ok()??.id == "b").then_some(()) },
    )
    .await;
    eprintln!("b leads {:?} after p froze", frozen.elapsed());
    assert!(
        frozen.elapsed() <= Duration::from_millis(2000 + 2000),
        "b led {:?} after p froze: later than the TTL plus 2 s",
        frozen.elapsed()
    );

    // b fails the cluster over while p is frozen.
    let before = store.load_topology().await.unwrap().0["c1"].clone();
    let old_leader = before.leader.clone().unwrap();
    env.local_mut().kill_node("c1", &old_leader).unwrap();
    let failed_over = || async {
        let c = store.load_topology().await.ok()?.0.get("c1")?.clone();
        (c.epoch > before.epoch && c.phase == shard_map::ClusterPhase::Serving).then_some(c)
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let after = loop {
        if let Some(c) = failed_over().await {
            break c;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "b did not fail c1 over within 30 s: {:#?}",
            b.orchestrator.events("c1").unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let new_leader = after.leader.clone().unwrap();
    assert_ne!(new_leader, old_leader);

    // p thaws: it finds its lease gone, stands by again and changes nothing.
    p.signal(libc::SIGCONT);
    eventually(Duration::from_secs(20), "p to campaign again", || async {
        store
            .orchestrators()
            .await
            .ok()?
            .iter()
            .any(|m| m.id == "p")
            .then_some(())
    })
    .await;
    assert_eq!(store.leader().await.unwrap().unwrap().id, "b");
    let now = store.load_topology().await.unwrap().0["c1"].clone();
    assert_eq!(
        (now.epoch, now.leader.clone()),
        (after.epoch, after.leader.clone())
    );
    let new_port = switchyard::scenario::writes::port_of(&new_leader);
    let mut direct = env.direct_conn(new_port, None).await;
    let read_only: i64 = common::query_one(&mut direct, "SELECT @@global.read_only").await;
    assert_eq!(read_only, 0, "the new leader stays writable");
    eventually(
        Duration::from_secs(20),
        "a write through p's router reaches the new leader",
        || async {
            let served = common::process::write_through(port, "etcd_db.etcd_t", 5).await?;
            (served == new_port as i64).then_some(())
        },
    )
    .await;
    drop(p);
    b.shutdown().await;
    env.stop().await;
}

/// Stops "a" (it resigns), waits for "p" to lead, and starts "b" standing by.
async fn p_leads_b_stands_by(env: &mut TestEnv, etcd: &LocalEtcd, store: &EtcdStore) -> App {
    env.app.take().unwrap().shutdown().await;
    eventually(
        Duration::from_secs(10),
        "p to lead once a resigned",
        || async { (store.leader().await.ok()??.id == "p").then_some(()) },
    )
    .await;
    second(env, etcd, "b", ProcessRole::All).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_left_unpublished_by_a_dead_orchestrator_is_completed_by_the_next() {
    let (etcd, _dir, mut env, store) = deployment(1, 1, 2).await;
    a_leads(&store).await;
    let (mut p, _port, _tmp) =
        serve_process(&env, &etcd, &store, Some("failover-after-promote")).await;
    let b = p_leads_b_stands_by(&mut env, &etcd, &store).await;
    let router_b = b.router_port();
    eventually(
        Duration::from_secs(20),
        "a write through b's router",
        || async { write_through(router_b).await.ok() },
    )
    .await;

    // p fails the cluster over and dies right after promoting, before publishing.
    let before = store.load_topology().await.unwrap().0["c1"].clone();
    let old_leader = before.leader.clone().unwrap();
    env.local_mut().kill_node("c1", &old_leader).unwrap();
    let status = p.exited(Duration::from_secs(30)).await;
    assert!(!status.success(), "p stops at its failpoint: {status:?}");
    let intent = store.intents().await.unwrap();
    assert_eq!(intent.len(), 1, "p recorded its change: {intent:?}");
    assert_eq!(
        (intent[0].by.as_str(), intent[0].epoch),
        ("p", before.epoch)
    );

    // b takes the lead and completes the change rather than electing another node.
    let after = eventually(
        Duration::from_secs(20),
        "b to publish p's promotion",
        || async {
            let c = store.load_topology().await.ok()?.0.get("c1")?.clone();
            (c.epoch > before.epoch).then_some(c)
        },
    )
    .await;
    assert_eq!(after.epoch, before.epoch + 1);
    assert_eq!(after.leader.as_deref(), Some(intent[0].new_leader.as_str()));
    assert!(
        store.intents().await.unwrap().is_empty(),
        "the intent is over"
    );
    let kinds: Vec<String> = b
        .orchestrator
        .events("c1")
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert!(kinds.iter().any(|k| k == "intent.completed"), "{kinds:?}");
    // Exactly one writable node: the published leader.
    let mut writable = Vec::new();
    for n in &env.local().cluster("c1").unwrap().nodes {
        if n.addr == old_leader {
            continue;
        }
        let mut c = env.direct_conn(n.port, None).await;
        let ro: i64 = common::query_one(&mut c, "SELECT @@global.read_only").await;
        if ro == 0 {
            writable.push(n.addr.clone());
        }
    }
    assert_eq!(writable, vec![intent[0].new_leader.clone()]);
    let new_port: i64 = intent[0]
        .new_leader
        .rsplit_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    eventually(
        Duration::from_secs(20),
        "a write through b's router on the new leader",
        || async {
            let served = common::process::write_through(router_b, "etcd_db.etcd_t", 7).await?;
            (served == new_port).then_some(())
        },
    )
    .await;
    b.shutdown().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_members_restarted_one_by_one_cause_no_failover_and_no_etcd_means_no_failover() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("switchyard=info,orchestrator=info")
        .with_test_writer()
        .try_init();
    let (mut etcd, _dir, mut env, store) = deployment(3, 1, 1).await;
    let b = second(&env, &etcd, "b", ProcessRole::All).await;
    let first = eventually(
        Duration::from_secs(15),
        "an orchestrator to lead",
        || async { store.leader().await.ok().flatten() },
    )
    .await;
    let before = store.load_topology().await.unwrap().0["c1"].clone();
    writes_through_each(&[env.router_port(), b.router_port()]).await;

    // Each member in turn stops and comes back: a quorum remains, nothing fails over.
    for member in 0..etcd.len() {
        etcd.stop_member(member).await;
        writes_through_each(&[env.router_port(), b.router_port()]).await;
        etcd.start_member(member)
            .await
            .expect("the member comes back");
    }
    let now = store.load_topology().await.unwrap().0["c1"].clone();
    assert_eq!(
        (now.epoch, now.leader.clone()),
        (before.epoch, before.leader.clone())
    );

    // No etcd at all: the leader dies and nothing fails over (the orchestrators cannot know
    // that no other one acts); once etcd is back, one of them fails over.
    for member in 0..etcd.len() {
        etcd.stop_member(member).await;
    }
    let old_leader = before.leader.clone().unwrap();
    env.local_mut().kill_node("c1", &old_leader).unwrap();
    // Absence can only be watched for a while: 6 s is four times what detection needs.
    let watched = tokio::time::Instant::now() + Duration::from_secs(6);
    while tokio::time::Instant::now() < watched {
        for app in [env.app(), &b] {
            let c = app.topology.load().cluster("c1").unwrap().clone();
            assert_eq!(c.epoch, before.epoch, "a failover without etcd: {c:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And they say so: the leader's events, and every process's metrics.
    let leader_app = if first.id == "a" { env.app() } else { &b };
    let deposed = leader_app
        .orchestrator
        .events("c1")
        .unwrap()
        .into_iter()
        .find(|e| e.kind == "orchestrator.deposed")
        .expect("an orchestrator.deposed event on the cluster");
    assert!(deposed.message.contains("lease"), "{deposed:?}");
    for app in [env.app(), &b] {
        let metrics = common::metrics_of(app.admin_addr).await;
        for line in ["switchyard_etcd_leading{", "switchyard_etcd_writes_fenced{"] {
            let sample = metrics
                .lines()
                .find(|l| l.starts_with(line))
                .unwrap_or_else(|| panic!("no {line} in {metrics}"));
            let expected = if line.contains("fenced") { " 1" } else { " 0" };
            assert!(sample.ends_with(expected), "{sample}");
        }
    }
    for member in 0..etcd.len() {
        etcd.spawn_member(member).expect("the member starts");
    }
    for member in 0..etcd.len() {
        etcd.start_member(member).await.expect("the member answers");
    }
    let store = EtcdStore::connect(&options(&etcd, "/sy-test"))
        .await
        .unwrap();
    let after = eventually(
        Duration::from_secs(40),
        "a failover once etcd is back",
        || async {
            let c = store.load_topology().await.ok()?.0.get("c1")?.clone();
            (c.epoch > before.epoch && c.phase == shard_map::ClusterPhase::Serving).then_some(c)
        },
    )
    .await;
    assert_ne!(after.leader.as_deref(), Some(old_leader.as_str()));
    writes_through_each(&[env.router_port(), b.router_port()]).await;
    b.shutdown().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shard_map_is_shared_through_etcd_and_a_stale_change_is_refused() {
    let (etcd, _dir, env, _store) = deployment(1, 2, 0).await;
    let b = second(&env, &etcd, "b", ProcessRole::Router).await;
    let http = common::http();
    let get = |admin: std::net::SocketAddr| {
        let r = http
            .get(format!("http://{admin}/api/v1/shard-map"))
            .bearer_auth("test-token")
            .send();
        async move { r.await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let read = get(env.app().admin_addr).await;
    assert_eq!(read["version"], 1, "{read}");
    assert_eq!(get(b.admin_addr).await["version"], 1);

    // A change through a, based on what it read: version 2, and b applies it.
    let mut change = read.clone();
    change["keyspaces"] = serde_json::json!([{"name": "ks2", "default_cluster": "c2"}]);
    let r = http
        .put(format!("http://{}/api/v1/shard-map", env.app().admin_addr))
        .bearer_auth("test-token")
        .json(&change)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    eventually(Duration::from_secs(10), "b to apply version 2", || async {
        (get(b.admin_addr).await["version"] == 2).then_some(())
    })
    .await;
    let c2_leader = env.leader_port("c2") as i64;
    let mut direct = env.direct_conn(c2_leader as u16, None).await;
    direct
        .query_drop("CREATE DATABASE IF NOT EXISTS ks2")
        .await
        .unwrap();
    drop(direct);
    let opts = common::opts_for(b.router_port(), "app", "app", None);
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    conn.query_drop("USE ks2").await.unwrap();
    let port: i64 = conn.query_first("SELECT @@port").await.unwrap().unwrap();
    assert_eq!(port, c2_leader, "b routes ks2 to c2 now");
    drop(conn);

    // The same change sent to b, based on version 1: someone changed it meanwhile.
    let r = http
        .put(format!("http://{}/api/v1/shard-map", b.admin_addr))
        .bearer_auth("test-token")
        .json(&change)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["version"], 2, "{e}");
    // Based on the version in force, b's change goes through and reaches a.
    let mut again = get(b.admin_addr).await;
    again["keyspaces"] = serde_json::json!([{"name": "ks2", "default_cluster": "c1"}]);
    let r = http
        .put(format!("http://{}/api/v1/shard-map", b.admin_addr))
        .bearer_auth("test-token")
        .json(&again)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    eventually(Duration::from_secs(10), "a to apply version 3", || async {
        (get(env.app().admin_addr).await["version"] == 3).then_some(())
    })
    .await;
    // Every version is kept in etcd: any process lists them, reads one back and diffs them.
    let read = |path: String| {
        let r = http.get(path).bearer_auth("test-token").send();
        async move {
            let r = r.await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let versions = read(format!("http://{}/api/v1/shard-map/versions", b.admin_addr)).await;
    assert_eq!(
        versions["versions"],
        serde_json::json!([1, 2, 3]),
        "{versions}"
    );
    let v2 = read(format!(
        "http://{}/api/v1/shard-map/versions/2",
        b.admin_addr
    ))
    .await;
    assert_eq!(v2["keyspaces"][0]["default_cluster"], "c2", "{v2}");
    let diff = read(format!(
        "http://{}/api/v1/shard-map/diff?from=2&to=3",
        env.app().admin_addr
    ))
    .await;
    assert!(
        diff["changes"].as_array().is_some_and(|c| !c.is_empty()),
        "{diff}"
    );
    b.shutdown().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orchestrator_without_router_leads_and_makes_the_changes_other_processes_are_asked() {
    let (etcd, _dir, mut env, store) = deployment(1, 1, 1).await;
    a_leads(&store).await;
    let o = second(&env, &etcd, "o", ProcessRole::Orchestrator).await;
    assert!(
        o.router_addr.is_none(),
        "role orchestrator has no MySQL listener"
    );
    eventually(Duration::from_secs(10), "o to stand by", || async {
        let ids: Vec<String> = store
            .orchestrators()
            .await
            .ok()?
            .into_iter()
            .map(|m| m.id)
            .collect();
        ids.contains(&"o".to_owned()).then_some(())
    })
    .await;

    // a goes (it resigns): o leads, and a router started now follows it.
    env.app.take().unwrap().shutdown().await;
    eventually(Duration::from_secs(10), "o to lead", || async {
        (store.leader().await.ok()??.id == "o").then_some(())
    })
    .await;
    let r = second(&env, &etcd, "r", ProcessRole::Router).await;
    writes_through_each(&[r.router_port()]).await;
    let routers: Vec<String> = store
        .routers()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(routers, ["r"], "o routes nothing, so it is no router");

    // A switchover asked of the router is made by o.
    let before = r.topology.load().cluster("c1").unwrap().clone();
    let resp = common::ask_switchover(r.admin_addr, "c1").await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let report: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(report["epoch"], before.epoch + 1, "{report}");
    assert_ne!(
        report["new_leader"],
        before.leader.clone().unwrap().as_str()
    );
    assert!(o
        .orchestrator
        .events("c1")
        .unwrap()
        .iter()
        .any(|e| e.kind == "switchover.done"));
    writes_through_each(&[r.router_port()]).await;
    let now = r.topology.load().cluster("c1").unwrap().clone();
    assert_eq!(
        now.epoch,
        before.epoch + 1,
        "{:#?}",
        o.orchestrator.events("c1").unwrap()
    );

    // No orchestrator at all: the request is withdrawn, the caller told nothing was done.
    o.shutdown().await;
    eventually(Duration::from_secs(10), "no leader", || async {
        store.leader().await.ok()?.is_none().then_some(())
    })
    .await;
    let asked = tokio::time::Instant::now();
    let resp = common::ask_switchover(r.admin_addr, "c1").await;
    assert_eq!(resp.status(), 503);
    let body = resp.text().await.unwrap();
    assert!(body.contains("nothing was done"), "{body}");
    // TTL 2 s + two request timeouts of 0.5 s, polled.
    assert!(
        asked.elapsed() < Duration::from_secs(6),
        "answered after {:?}",
        asked.elapsed()
    );
    assert!(
        store.pending_requests().await.unwrap().0.is_empty(),
        "the request was withdrawn"
    );
    let (stored, _) = store.load_topology().await.unwrap();
    assert_eq!(stored["c1"].epoch, now.epoch, "nothing changed");
    r.shutdown().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_away_during_a_switchover_and_a_compaction_writes_nothing_then_adopts_it() {
    // Three members: the router talks to member 0 only, everything else to members 1 and 2.
    let (etcd, _dir) = local_etcd(3).await;
    let endpoints = etcd.endpoints();
    let majority = endpoints[1..].to_vec();
    let cfg = EtcdConfig {
        endpoints: majority.clone(),
        ..etcd_config(&etcd, "a")
    };
    let env = TestEnv::start_with(1, 2, |c| c.etcd = Some(cfg)).await;
    let store = EtcdStore::connect(&EtcdOptions {
        endpoints: majority,
        ..options(&etcd, "/sy-test")
    })
    .await
    .unwrap();
    a_leads(&store).await;
    let r = second_with(&env, &etcd, "r", ProcessRole::Router, |c| {
        if let Some(e) = c.etcd.as_mut() {
            e.endpoints = vec![endpoints[0].clone()];
        }
        c.router.hold_timeout_ms = 500;
        c.failover.hold_max_ms = 500;
    })
    .await;
    let port = r.router_port();
    writes_through_each(&[port, env.router_port()]).await;

    // Member 0 freezes: the router loses etcd (its lease runs out, it fences its writes);
    // the majority goes on.
    etcd.signal_member(0, libc::SIGSTOP);
    eventually(Duration::from_secs(10), "r to fence its writes", || async {
        r.router
            .writes_fenced
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(())
    })
    .await;
    // Meanwhile a switches the cluster over (it waits for r's lease to expire), and the
    // history is compacted. The old leader stays up: r, away, still sees it as the leader.
    let before = store.load_topology().await.unwrap().0["c1"].clone();
    let resp = common::ask_switchover(env.app().admin_addr, "c1").await;
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    let after = store.load_topology().await.unwrap().0["c1"].clone();
    assert_eq!(after.epoch, before.epoch + 1);
    store.compact_all().await.expect("compaction");
    assert_eq!(
        r.topology.load().cluster("c1").unwrap().epoch,
        before.epoch,
        "r is away: it cannot know yet"
    );
    let mut conn = mysql_async::Conn::new(common::opts_for(port, "app", "app", None))
        .await
        .unwrap();
    let n: Option<i64> = conn
        .query_first("SELECT COUNT(*) FROM etcd_db.etcd_t")
        .await
        .expect("r serves reads while away");
    assert!(n.unwrap_or(0) >= 1);
    match conn
        .query_drop("INSERT INTO etcd_db.etcd_t (v) VALUES (3)")
        .await
    {
        Err(mysql_async::Error::Server(e)) => assert_eq!(e.code, 1205, "{e:?}"),
        other => panic!("r must refuse writes while away, got {other:?}"),
    }
    drop(conn);

    // Member 0 thaws: its watches start after a compacted revision, so r lists again, adopts
    // the new epoch and writes to the new leader.
    etcd.signal_member(0, libc::SIGCONT);
    eventually(
        Duration::from_secs(20),
        "r to adopt the new epoch",
        || async { (r.topology.load().cluster("c1")?.epoch >= after.epoch).then_some(()) },
    )
    .await;
    writes_through_each(&[port]).await;
    let opts = common::opts_for(port, "app", "app", Some("etcd_db"));
    let mut conn = mysql_async::Conn::new(opts).await.unwrap();
    let served_by: i64 = conn
        .query_first("SELECT @@port FROM etcd_t FOR UPDATE")
        .await
        .unwrap()
        .unwrap();
    let now = r.topology.load().cluster("c1").unwrap().clone();
    assert_ne!(now.leader, before.leader);
    let new_port = switchyard::scenario::writes::port_of(&now.leader.unwrap());
    assert_eq!(served_by, i64::from(new_port), "r writes to the new leader");
    drop(conn);
    r.shutdown().await;
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_etcd_member_cut_from_its_peers_fails_nothing_over_and_refuses_no_write() {
    // Member 0 runs as `nobody`, so that its own packets can be told from its peers'.
    const NOBODY: u32 = 65534;
    let dir = tempfile::Builder::new()
        .prefix("sy-etcd-")
        .tempdir()
        .expect("temp dir");
    let start = orchestrator::provision::LocalEtcdOptions {
        member0_uid: Some(NOBODY),
        ..Default::default()
    };
    let etcd = LocalEtcd::start_with(dir.path(), 3, start)
        .await
        .unwrap_or_else(|e| panic!("could not start etcd: {e}\nscripts/install-deps"));
    let cfg = etcd_config(&etcd, "a");
    let env = TestEnv::start_with(1, 1, |c| c.etcd = Some(cfg)).await;
    let store = EtcdStore::connect(&EtcdOptions {
        endpoints: etcd.endpoints()[1..].to_vec(),
        ..options(&etcd, "/sy-test")
    })
    .await
    .unwrap();
    a_leads(&store).await;
    let leading = store.leader().await.unwrap().unwrap();
    let r = second(&env, &etcd, "r", ProcessRole::Router).await;
    let ports = [env.router_port(), r.router_port()];
    writes_through_each(&ports).await;
    let epoch = store.load_topology().await.unwrap().0["c1"].epoch;

    // Member 0 is cut from its peers for three lease lifetimes; both processes still reach
    // it (and the others) as clients.
    let peers = [etcd.ports(1).1, etcd.ports(2).1];
    let cut = switchyard::bench::faults::cut_from_peers(NOBODY, etcd.ports(0).1, &peers)
        .expect("iptables rules (as root; scripts/install-deps installs iptables)");
    let alone = EtcdOptions {
        endpoints: etcd.endpoints()[..1].to_vec(),
        ..options(&etcd, "/sy-test")
    };
    eventually(
        Duration::from_secs(5),
        "member 0 to know it is cut off (no leader)",
        || async { EtcdStore::connect(&alone).await.is_err().then_some(()) },
    )
    .await;
    let until = tokio::time::Instant::now() + Duration::from_secs(6);
    let (mut writes, mut refused) = (0, Vec::new());
    while tokio::time::Instant::now() < until {
        for port in ports {
            writes += 1;
            if let Err(e) = write_once(port).await {
                refused.push(format!("{port}: {e}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Read before the cut heals: the member coming back may call an election.
    let leader_now = store.leader().await.unwrap();
    let epoch_now = store.load_topology().await.unwrap().0["c1"].epoch;
    cut.heal();
    assert!(
        refused.is_empty(),
        "{} of {writes} writes refused while one etcd member was cut off: {refused:?}",
        refused.len()
    );
    assert_eq!(leader_now, Some(leading), "the same orchestrator leads");
    assert_eq!(epoch_now, epoch, "no failover");
    r.shutdown().await;
    env.stop().await;
}

/// `etcdctl` (API v3) against member 0 of `etcd` with the client certificate of `pki`.
fn etcdctl(etcd: &LocalEtcd, pki: &common::pki::Pki, args: &[&str]) {
    let (cert, key) = pki.client();
    let out = std::process::Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints=https://{}", etcd.endpoints()[0]))
        .arg(format!("--cacert={}", pki.ca().display()))
        .arg(format!("--cert={}", cert.display()))
        .arg(format!("--key={}", key.display()))
        .args(args)
        .output()
        .expect("etcdctl (Debian package etcd-client; scripts/install-deps)");
    assert!(
        out.status.success(),
        "etcdctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_a_client_certificate_and_a_password() {
    let pki = common::pki::Pki::new();
    let dir = tempfile::Builder::new()
        .prefix("sy-etcd-")
        .tempdir()
        .expect("temp dir");
    let start = orchestrator::provision::LocalEtcdOptions {
        tls: Some(orchestrator::provision::EtcdTls {
            ca: pki.ca(),
            cert: pki.cert(),
            key: pki.key(),
        }),
        ..Default::default()
    };
    let etcd = LocalEtcd::start_with(dir.path(), 1, start)
        .await
        .unwrap_or_else(|e| panic!("could not start etcd: {e}\nscripts/install-deps"));
    // A user that may touch this deployment's keys and nothing else; then authentication on.
    etcdctl(&etcd, &pki, &["user", "add", "root:rootpw"]);
    etcdctl(&etcd, &pki, &["user", "add", "switchyard:sypw"]);
    etcdctl(&etcd, &pki, &["role", "add", "sy"]);
    etcdctl(
        &etcd,
        &pki,
        &[
            "role",
            "grant-permission",
            "sy",
            "--prefix=true",
            "readwrite",
            "/sy-test",
        ],
    );
    etcdctl(&etcd, &pki, &["user", "grant-role", "switchyard", "sy"]);
    etcdctl(&etcd, &pki, &["auth", "enable"]);

    let (cert, key) = pki.client();
    let cfg = EtcdConfig {
        tls_ca: Some(pki.ca()),
        tls_cert: Some(cert),
        tls_key: Some(key),
        user: Some("switchyard".into()),
        password: Some(router::config::Secret::new("sypw")),
        ..etcd_config(&etcd, "a")
    };
    let env = TestEnv::start_with(1, 1, {
        let cfg = cfg.clone();
        |c| c.etcd = Some(cfg)
    })
    .await;
    let store = EtcdStore::connect(&cfg.options())
        .await
        .expect("TLS, client certificate and password");
    a_leads(&store).await;
    let r = second_with(&env, &etcd, "r", ProcessRole::Router, |c| {
        c.etcd = Some(EtcdConfig {
            name: Some("r".into()),
            ..cfg.clone()
        })
    })
    .await;
    writes_through_each(&[env.router_port(), r.router_port()]).await;
    assert_eq!(store.routers().await.unwrap().len(), 2);

    // What etcd refuses, switchyard reports at start.
    for (what, wrong) in [
        (
            "a wrong password",
            EtcdConfig {
                password: Some(router::config::Secret::new("nope")),
                ..cfg.clone()
            },
        ),
        (
            "no client certificate",
            EtcdConfig {
                tls_cert: None,
                tls_key: None,
                ..cfg.clone()
            },
        ),
        (
            "plain text",
            EtcdConfig {
                tls_ca: None,
                tls_cert: None,
                tls_key: None,
                ..cfg.clone()
            },
        ),
    ] {
        let refused = EtcdStore::connect(&wrong.options()).await;
        assert!(refused.is_err(), "{what} must be refused");
    }
    r.shutdown().await;
    env.stop().await;
}
