//! A live router session fed arbitrary client packets: a router listens on loopback (its one
//! cluster's leader address refuses connections, so every statement that needs a backend
//! fails as it would during an outage); each input logs in (or, for odd first bytes, sends
//! the input itself as the handshake response) and then sends the input as a series of
//! commands. The router must answer or close, never panic: a panic caught in a session is
//! counted, and a count above zero fails the run.
#![no_main]

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use router::protocol::handshake::{backend_hello, parse_backend_greeting, scramble_native};
use router::protocol::packet::frame;
use router::protocol::CapabilityFlags;
use router::RouterContext;
use shard_map::topology::{ClusterStatus, NodeStatus, Role, Topology, TopologyHandle};
use shard_map::ShardMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

struct Router {
    runtime: tokio::runtime::Runtime,
    port: u16,
    ctx: Arc<RouterContext>,
}

fn router() -> &'static Router {
    static R: OnceLock<Router> = OnceLock::new();
    R.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let config: router::RouterConfig = toml::from_str(
            r#"
            listen = "127.0.0.1:0"
            users = [{ name = "app", password = "pw" }]
            max_connections = 64
            max_allowed_packet = 65536
            connect_timeout_ms = 50
            handshake_timeout_ms = 500
            hold_timeout_ms = 20
            pool_wait_ms = 20
            "#,
        )
        .expect("router config");
        let leader = "127.0.0.1:1".to_string();
        let mut topo = Topology::default();
        topo.clusters.insert(
            "c1".into(),
            ClusterStatus::new(
                "c1",
                Some(leader.clone()),
                vec![NodeStatus::new(leader, Role::Leader)],
            ),
        );
        let map = ShardMap::from_keyspaces(Some("c1".into()), Vec::new());
        let ctx = Arc::new(RouterContext::new(config, TopologyHandle::new(topo), map));
        let (port, serving) = runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = listener.local_addr().expect("addr").port();
            let serving = router::run(listener, ctx.clone(), std::future::pending());
            (port, serving)
        });
        runtime.spawn(serving);
        Router { runtime, port, ctx }
    })
}

async fn session(port: u16, data: &[u8]) -> std::io::Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let greeting = read_packet(&mut s).await?;
    let mut seq = 1u8;
    let mut out = Vec::new();
    let commands = if data.first().is_some_and(|b| b % 2 == 1) {
        frame(seq, &data[1..], &mut out);
        &[][..]
    } else {
        let g = parse_backend_greeting(&greeting).expect("the router's greeting parses");
        let caps = CapabilityFlags::CLIENT_PROTOCOL_41
            | CapabilityFlags::CLIENT_SECURE_CONNECTION
            | CapabilityFlags::CLIENT_PLUGIN_AUTH
            | CapabilityFlags::CLIENT_MULTI_STATEMENTS
            | CapabilityFlags::CLIENT_MULTI_RESULTS
            | CapabilityFlags::CLIENT_PS_MULTI_RESULTS
            | CapabilityFlags::CLIENT_DEPRECATE_EOF
            | CapabilityFlags::CLIENT_LOCAL_FILES
            | CapabilityFlags::CLIENT_CONNECT_WITH_DB;
        let token = scramble_native(&g.scramble, b"pw");
        frame(seq, &backend_hello(caps, 45, "app", &token, None), &mut out);
        data.get(1..).unwrap_or_default()
    };
    seq = seq.wrapping_add(1);
    let _ = seq;
    s.write_all(&out).await?;
    // The login reply.
    read_packet(&mut s).await?;
    // The input as commands: a length byte, then that many payload bytes, each its own
    // packet with sequence id 0.
    let mut rest = commands;
    let mut out = Vec::new();
    while let Some((&n, tail)) = rest.split_first() {
        let n = usize::from(n).min(tail.len());
        frame(0, &tail[..n], &mut out);
        rest = &tail[n..];
    }
    frame(0, &[0x01], &mut out); // COM_QUIT
    s.write_all(&out).await?;
    s.shutdown().await?;
    // Read whatever comes back until the router closes.
    let mut sink = vec![0u8; 65536];
    while s.read(&mut sink).await? > 0 {}
    Ok(())
}

async fn read_packet(s: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    s.read_exact(&mut header).await?;
    let len = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).await?;
    Ok(payload)
}

fuzz_target!(|data: &[u8]| {
    let r = router();
    let port = r.port;
    let owned = data.to_vec();
    let result = r.runtime.block_on(async move {
        tokio::time::timeout(Duration::from_secs(10), session(port, &owned)).await
    });
    assert!(result.is_ok(), "the router neither answered nor closed within 10 s");
    let panics = r.ctx.metrics.session_panics.load(Ordering::Relaxed);
    assert_eq!(panics, 0, "a session panicked (see the log above)");
});
