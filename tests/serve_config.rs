//! `switchyard serve --config FILE` over existing servers: the file describes clusters the
//! process did not start, and the router, monitor and admin API work over them.

mod common;

use std::time::Duration;

use common::{eventually, mariadb_cli};
use orchestrator::provision::{LocalClusters, ProvisionSpec};
use switchyard::{App, Config};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_from_a_config_file_over_existing_clusters() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = ProvisionSpec::new(dir.path().join("data"));
    spec.clusters = 2;
    spec.replicas = 0;
    let local = LocalClusters::start(spec)
        .await
        .expect("MariaDB must be installed: apt-get install -y mariadb-server mariadb-client");
    let c1 = &local.clusters()[0];
    let c2 = &local.clusters()[1];
    // No leader given for c2: the monitor finds the writable node that replicates from nobody.
    let text = format!(
        r#"
        default_cluster = "c1"
        [router]
        listen = "127.0.0.1:0"
        users = [{{ name = "app", password = "app" }}]
        [admin]
        listen = "127.0.0.1:0"
        token = "file-token"
        [orchestrator]
        user = "switchyard"
        password = "switchyard"
        tick_ms = 200
        [[clusters]]
        name = "c1"
        nodes = ["{l1}"]
        leader = "{l1}"
        [[clusters]]
        name = "c2"
        nodes = ["{l2}"]
        [[keyspaces]]
        name = "orders"
        default_cluster = "c2"
        "#,
        l1 = c1.leader,
        l2 = c2.leader
    );
    let path = dir.path().join("switchyard.toml");
    std::fs::write(&path, text).unwrap();
    let config = Config::load(&path).expect("valid config");
    let app = App::start(config).await.expect("starts");
    assert!(
        app.wait_ready(Duration::from_secs(20)).await,
        "both clusters get a leader"
    );
    let port = app.router_port();

    // The `orders` keyspace lives on c2: a table created there through the router exists
    // on c2's server and not on c1's.
    let c2_port = c2.leader_node().unwrap().port;
    let c1_port = c1.leader_node().unwrap().port;
    let (code, _, err) = mariadb_cli(c2_port, "app", "app", "CREATE DATABASE orders");
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = mariadb_cli(
        port,
        "app",
        "app",
        "USE orders; CREATE TABLE o (id INT PRIMARY KEY); INSERT INTO o VALUES (7)",
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = mariadb_cli(c2_port, "app", "app", "SELECT id FROM orders.o");
    assert_eq!(out, "id\n7\n");
    let (code, _, _) = mariadb_cli(c1_port, "app", "app", "SELECT id FROM orders.o");
    assert_ne!(code, 0, "c1 has no orders database");

    let http = common::http();
    let url = format!("http://{}/api/v1/clusters", app.admin_addr);
    let expected = c2.leader.clone();
    eventually(
        Duration::from_secs(10),
        "c2's leader discovered",
        || async {
            let body: serde_json::Value = http
                .get(&url)
                .bearer_auth("file-token")
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let c2 = body["clusters"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == "c2")?
                .clone();
            (c2["leader"] == expected.as_str()).then_some(())
        },
    )
    .await;
    app.shutdown().await;
    local.stop().await.unwrap();
}
