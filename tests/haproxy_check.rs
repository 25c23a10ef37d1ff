//! HAProxy with switchyard as its resource manager: one backend per server, each checked with
//! `option httpchk` against `/api/v1/check/{cluster}/leader/{node}`. After a switchover a
//! client connecting through HAProxy writes to the new leader. Uses the real `haproxy`.

mod common;

use std::time::Duration;

use common::process::{free_port, haproxy, write_through};
use common::{eventually, TestEnv};
use mysql_async::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_follows_the_leader_through_the_check_endpoints() {
    let env = TestEnv::start(1, 1).await;
    let leader = env.leader_port("c1");
    let replica = env.replica_ports("c1")[0];
    let admin_port = env.app().admin_addr.port();
    let http = common::http();

    // The endpoints themselves.
    let check =
        |role: &str, port: u16| env.admin_url(&format!("/api/v1/check/c1/{role}/127.0.0.1:{port}"));
    assert_eq!(
        http.get(check("leader", leader))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let r = http.get(check("leader", replica)).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("is not the leader"));
    eventually(
        Duration::from_secs(15),
        "the replica checks healthy",
        || async {
            let r = http.get(check("replica", replica)).send().await.ok()?;
            (r.status() == 200).then_some(())
        },
    )
    .await;
    assert_eq!(
        http.get(check("replica", leader))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        http.get(env.admin_url("/api/v1/check/c9/leader/127.0.0.1:1"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );

    let mut direct = env.direct_conn(leader, None).await;
    direct
        .query_drop("CREATE DATABASE IF NOT EXISTS hc")
        .await
        .unwrap();
    direct
        .query_drop("CREATE TABLE IF NOT EXISTS hc.t (id INT AUTO_INCREMENT PRIMARY KEY, v INT)")
        .await
        .unwrap();
    drop(direct);

    let dir = tempfile::tempdir().unwrap();
    let front = free_port();
    let mut cfg = format!(
        "global\n  maxconn 200\n\
         defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  timeout check 1s\n\
         frontend writes\n  bind 127.0.0.1:{front}\n"
    );
    for port in [leader, replica] {
        cfg += &format!("  use_backend n{port} if {{ nbsrv(n{port}) ge 1 }}\n");
    }
    for port in [leader, replica] {
        cfg += &format!(
            "backend n{port}\n  option httpchk GET /api/v1/check/c1/leader/127.0.0.1:{port}\n  \
             http-check expect status 200\n  \
             server s{port} 127.0.0.1:{port} check port {admin_port} inter 100 fall 1 rise 1 \
             on-marked-down shutdown-sessions\n"
        );
    }
    let path = dir.path().join("haproxy.cfg");
    std::fs::write(&path, &cfg).unwrap();
    let _haproxy = haproxy(&path);

    let served = eventually(
        Duration::from_secs(15),
        "a write through HAProxy",
        || async { write_through(front, "hc.t", 1).await },
    )
    .await;
    assert_eq!(
        served,
        i64::from(leader),
        "HAProxy sent the write elsewhere"
    );

    let r = http
        .post(env.admin_url("/api/v1/clusters/c1/switchover"))
        .bearer_auth("test-token")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let served = eventually(
        Duration::from_secs(15),
        "a write through HAProxy on the new leader",
        || async {
            write_through(front, "hc.t", 2)
                .await
                .filter(|p| *p == i64::from(replica))
        },
    )
    .await;
    assert_eq!(served, i64::from(replica));
    // And it stays there: the old leader is a read-only replica now, never chosen.
    for i in 0..5 {
        assert_eq!(
            write_through(front, "hc.t", 10 + i).await,
            Some(i64::from(replica))
        );
    }
    env.stop().await;
}
