//! What an idle client connection costs, part by part: the session task's future, the
//! `Session` it holds, and the futures of the commands it runs. Printed by
//! `cargo test -p router --lib footprint -- --nocapture`.

use std::mem::size_of_val;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::config::RouterConfig;

fn context() -> Arc<RouterContext> {
    let config = RouterConfig::with_users(Vec::new());
    let map = shard_map::ShardMap::from_json(
        r#"{"keyspaces": [{"name": "app", "default_cluster": "c1", "shards": [], "tables": []}]}"#,
    )
    .unwrap();
    Arc::new(RouterContext::new(
        config,
        shard_map::TopologyHandle::new(Default::default()),
        map,
    ))
}

async fn session(ctx: Arc<RouterContext>) -> (Session, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let (r, w) = crate::tls::split_plain(server);
    let user = Arc::new(User {
        name: "app".into(),
        password: "".into(),
        hash: [0; 20],
        generation: 0,
    });
    let listed = ctx.sessions.register(1, user.name.clone(), "127.0.0.1:1");
    let session = Session {
        id: 1,
        peer: "127.0.0.1".into(),
        input: PacketReader::with_chunk(r, 2048),
        output: PacketWriter::with_capacity(w, 2048),
        user,
        caps: CapabilityFlags::empty(),
        scramble: [0; 20],
        state: SessionState::for_handshake(45, None),
        pinned: None,
        pinned_route: None,
        pending_begin: None,
        xa: None,
        pins: Pins::default(),
        multi_statements: false,
        stmts: HashMap::default(),
        next_stmt_id: 1,
        last_prepared: 0,
        class: StatementClass::Other,
        command_map: None,
        checked_out: std::sync::atomic::AtomicBool::new(false),
        listed,
        ctx,
    };
    (session, client)
}

/// The part every idle connection pays for is the task's future; the command futures, several
/// KiB each, live in a box only while their command runs.
#[tokio::test]
async fn the_idle_part_of_a_session_is_small() {
    let ctx = context();
    let (mut s, _client) = session(ctx.clone()).await;
    let payload = b"\x03SELECT 1".to_vec();
    let mut sizes: Vec<(&str, usize)> = vec![
        ("Session", size_of_val(&s)),
        ("serve (the task)", crate::server::connection_task_size()),
    ];
    sizes.push(("  input", size_of_val(&s.input)));
    sizes.push(("  output", size_of_val(&s.output)));
    sizes.push(("  state", size_of_val(&s.state)));
    sizes.push(("  pinned", size_of_val(&s.pinned)));
    sizes.push(("  pinned_route", size_of_val(&s.pinned_route)));
    sizes.push(("  xa", size_of_val(&s.xa)));
    sizes.push(("  stmts", size_of_val(&s.stmts)));
    sizes.push(("  listed", size_of_val(&s.listed)));
    sizes.push(("  pending_begin", size_of_val(&s.pending_begin)));
    sizes.push(("command_loop", size_of_val(&s.command_loop())));
    sizes.push(("dispatch", size_of_val(&s.dispatch(3, &payload, 1))));
    sizes.push(("query", size_of_val(&s.query(&payload, 1))));
    sizes.push(("stmt_prepare", size_of_val(&s.stmt_prepare(&payload, 1))));
    sizes.push(("stmt_execute", size_of_val(&s.stmt_execute(&payload, 1))));
    sizes.push(("stmt_fetch", size_of_val(&s.stmt_fetch(&payload, 1))));
    sizes.push(("stmt_reset", size_of_val(&s.stmt_reset(&payload, 1))));
    sizes.push(("select_db", size_of_val(&s.select_db("app", 1, true))));
    sizes.push(("change_user", size_of_val(&s.change_user(&payload, 1))));
    sizes.push((
        "simple",
        size_of_val(&s.simple(&payload, RelayMode::Single)),
    ));
    sizes.push((
        "reply_error",
        size_of_val(&s.reply_error(1, RouterError::Malformed("x"))),
    ));
    sizes.push(("read_message", size_of_val(&s.input.read_message(1))));
    // The parts of a statement's future (`run` is in every statement's).
    let exec = Exec {
        mode: RelayMode::Single,
        retry_reads: false,
        with_insert_id: false,
    };
    let deadline = tokio::time::Instant::now();
    let addr: Arc<str> = "127.0.0.1:1".into();
    sizes.push((
        "run",
        size_of_val(&s.run(Target::Leader, Cmd::Raw(&payload), exec)),
    ));
    sizes.push((
        "route_and_checkout",
        size_of_val(&s.route_and_checkout(Target::Leader, deadline)),
    ));
    sizes.push(("checkout_addr", size_of_val(&s.checkout_addr(&addr))));
    for (what, n) in &sizes {
        println!("{what:>20}: {n} bytes");
    }
    // Before the command futures were boxed out of it, the task was 7.5 KiB.
    let task = crate::server::connection_task_size();
    assert!(
        task < 2 * 1024,
        "the session task's future grew to {task} bytes: box the new large part"
    );
    // A statement's future is allocated per command (5.5 KiB before its rare paths were
    // boxed in turn).
    let statement = size_of_val(&s.dispatch(3, &payload, 1));
    assert!(
        statement < 3 * 1024,
        "a statement's future grew to {statement} bytes: box the new rare part"
    );
}
