//! The dashboard end to end in headless Chromium, driven through chromedriver's W3C WebDriver
//! protocol (plain JSON over HTTP, spoken here with reqwest): the topology table shows the
//! leader, the switchover button moves it, and a screenshot is saved.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use common::{eventually, TestEnv};
use serde_json::{json, Value};

/// A chromedriver process, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("can't run chromedriver ({e}); run scripts/install-deps (chromium-driver)")
            });
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        eventually(Duration::from_secs(20), "chromedriver ready", || async {
            let r = reqwest::get(&status).await.ok()?;
            let v: Value = r.json().await.ok()?;
            (v["value"]["ready"] == true).then_some(())
        })
        .await;
        driver
    }
}

/// One browser session.
struct Browser {
    http: reqwest::Client,
    base: String,
}

impl Browser {
    async fn open(driver: &Driver) -> Browser {
        let http = common::http();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1280,860"]
            }
        }}});
        let r: Value = http
            .post(format!("{}/session", driver.url))
            .json(&caps)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = r["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {r}"));
        Browser {
            http,
            base: format!("{}/session/{id}", driver.url),
        }
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let v: Value = req.send().await.unwrap().json().await.unwrap();
        v["value"].clone()
    }

    async fn goto(&self, url: &str) {
        self.call(reqwest::Method::POST, "/url", Some(json!({ "url": url })))
            .await;
    }

    /// The element's id, or `None` when nothing matches.
    async fn find(&self, css: &str) -> Option<String> {
        let v = self
            .call(
                reqwest::Method::POST,
                "/element",
                Some(json!({"using": "css selector", "value": css})),
            )
            .await;
        v.as_object()?
            .values()
            .next()
            .and_then(|id| id.as_str().map(str::to_owned))
    }

    async fn text(&self, css: &str) -> Option<String> {
        let id = self.find(css).await?;
        let v = self
            .call(reqwest::Method::GET, &format!("/element/{id}/text"), None)
            .await;
        v.as_str().map(str::to_owned)
    }

    async fn click(&self, css: &str) {
        let id = self.find(css).await.unwrap_or_else(|| panic!("no {css}"));
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/click"),
            Some(json!({})),
        )
        .await;
    }

    async fn type_into(&self, css: &str, text: &str) {
        let id = self.find(css).await.unwrap_or_else(|| panic!("no {css}"));
        self.call(
            reqwest::Method::POST,
            &format!("/element/{id}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    async fn screenshot(&self) -> Vec<u8> {
        let v = self.call(reqwest::Method::GET, "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().expect("base64 PNG"))
            .unwrap()
    }

    async fn close(self) {
        self.http.delete(&self.base).send().await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_topology_and_switches_over() {
    let env = TestEnv::start_sharded_replicated(2, 1, 4).await;
    let leader = format!("127.0.0.1:{}", env.leader_port("c1"));
    let replica = format!("127.0.0.1:{}", env.replica_ports("c1")[0]);
    let driver = Driver::start().await;
    let browser = Browser::open(&driver).await;

    // Without a token the page says what is wrong; with it, the topology appears.
    browser.goto(&env.admin_url("/")).await;
    let msg = eventually(Duration::from_secs(10), "the 401 shown", || async {
        browser.text("#message").await.filter(|t| t.contains("401"))
    })
    .await;
    assert!(msg.contains("401"), "{msg}");
    browser.type_into("#token", "test-token").await;
    browser.click("#save-token").await;
    let leader_row =
        format!("table.topology[data-cluster=c1] tr.leader[data-node='{leader}'] td.role");
    eventually(
        Duration::from_secs(10),
        "c1's leader in the table",
        || async { browser.text(&leader_row).await.filter(|t| t == "leader") },
    )
    .await;
    let replica_role = format!("table.topology[data-cluster=c1] tr[data-node='{replica}'] td.role");
    assert_eq!(
        browser.text(&replica_role).await.as_deref(),
        Some("replica")
    );
    // The shard map as ranges to clusters.
    let shards = eventually(Duration::from_secs(10), "the shard table", || async {
        browser
            .text("#shards tbody")
            .await
            .filter(|t| t.contains("-40"))
    })
    .await;
    assert!(shards.contains("app -40 c1"), "{shards}");
    assert!(shards.contains("c0- c2"), "{shards}");

    // Switchover from the page: the leader changes in the table, the events show it.
    eventually(Duration::from_secs(15), "the replica caught up", || async {
        let t = env.app().topology.load();
        let n = t.cluster("c1")?.node(&replica)?.clone();
        (n.io_running == Some(true) && n.lag_seconds == Some(0)).then_some(())
    })
    .await;
    // The page re-renders the table on every refresh: a click that lands on a row just
    // replaced does nothing, so it is repeated until the page says the switchover started.
    eventually(
        Duration::from_secs(20),
        "the switchover started",
        || async {
            browser.click("button.switchover[data-cluster=c1]").await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while tokio::time::Instant::now() < deadline {
                let msg = browser.text("#message").await.unwrap_or_default();
                if msg.contains("switchover of c1") || msg.contains(" -> ") {
                    return Some(());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        },
    )
    .await;
    let new_leader_row =
        format!("table.topology[data-cluster=c1] tr.leader[data-node='{replica}'] td.role");
    eventually(
        Duration::from_secs(30),
        "the new leader in the table",
        || async {
            let msg = browser.text("#message").await.unwrap_or_default();
            assert!(!msg.contains("failed"), "the page says: {msg}");
            browser
                .text(&new_leader_row)
                .await
                .filter(|t| t == "leader")
        },
    )
    .await;
    let msg = browser.text("#message").await.unwrap_or_default();
    assert!(msg.contains(&format!("{leader} -> {replica}")), "{msg}");
    eventually(
        Duration::from_secs(10),
        "switchover events listed",
        || async {
            browser
                .text("#events")
                .await
                .filter(|t| t.contains("switchover.done"))
        },
    )
    .await;
    assert_eq!(
        env.app()
            .topology
            .load()
            .cluster("c1")
            .unwrap()
            .leader
            .as_deref(),
        Some(replica.as_str())
    );

    // Maintenance from the page, clicked again (like the switchover) until the page says
    // it was set: a click on a button the refresh just replaced does nothing.
    eventually(
        Duration::from_secs(20),
        "the page says maintenance is on",
        || async {
            browser
                .click("table.topology[data-cluster=c2] button.maintenance")
                .await;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
            while tokio::time::Instant::now() < deadline {
                let msg = browser.text("#message").await.unwrap_or_default();
                if msg.contains("maintenance on") {
                    return Some(());
                }
                assert!(!msg.contains("maintenance off"), "the page says: {msg}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            None
        },
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "a c2 node under maintenance",
        || async {
            let t = env.app().topology.load();
            t.cluster("c2")?
                .nodes
                .iter()
                .any(|n| n.flags.maintenance)
                .then_some(())
        },
    )
    .await;
    eventually(Duration::from_secs(10), "the flag in the table", || async {
        browser
            .text("table.topology[data-cluster=c2]")
            .await
            .filter(|t| t.contains("maintenance") && t.contains("end maintenance"))
    })
    .await;

    let png = browser.screenshot().await;
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("dashboard.png"), &png).unwrap();
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    std::fs::create_dir_all(&docs).unwrap();
    std::fs::write(docs.join("dashboard.png"), &png).unwrap();
    browser.close().await;
    drop(driver);
    env.stop().await;
}
