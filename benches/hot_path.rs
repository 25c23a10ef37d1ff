//! Micro-benchmarks of the router's hot path: classifying a statement (cache hit and miss),
//! normalising it, planning it on a shard map (the shard a key goes to), relaying a result set
//! of N rows from a backend socket to a client socket, and merging K shards' sorted results
//! (loopback TCP to fake backends, the same code path as production).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use router::backend::merge::merge_sorted;
use router::backend::{relay, BackendConn, ConnectOptions, RelayMode};
use router::classify::{normalize, Classifier};
use router::protocol::packet::frame;
use router::protocol::{PacketReader, PacketWriter};
use router::shard::plan::{parse_one, plan, plan_by_key, Plan, PlanInput};
use shard_map::{KeyValue, ShardMap};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const POINT_SELECT: &str = "SELECT c FROM sbtest1 WHERE id=4242";

fn classify(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    let warm = Classifier::new(10_000);
    warm.classify(POINT_SELECT);
    g.bench_function("cache_hit", |b| {
        let mut i = 0u64;
        b.iter(|| {
            i += 1;
            // Different literal each time: same normalised key.
            let sql = format!("SELECT c FROM sbtest1 WHERE id={i}");
            black_box(warm.classify(&sql));
        })
    });
    let cold = Classifier::new(0);
    g.bench_function("cache_miss_parse", |b| {
        b.iter(|| black_box(cold.classify(black_box(POINT_SELECT))))
    });
    g.bench_function("normalize", |b| {
        b.iter(|| black_box(normalize(black_box(POINT_SELECT))))
    });
    g.finish();
}

/// A fake backend: greets, accepts any login, then answers every command with `response`.
async fn fake_backend(listener: TcpListener, response: Vec<u8>) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let response = response.clone();
        tokio::spawn(async move {
            let scramble = [b'a'; 20];
            let caps = router::protocol::handshake::router_capabilities();
            let mut out = Vec::new();
            frame(
                0,
                &router::protocol::handshake::server_greeting(
                    1,
                    "10.11.0-MariaDB",
                    &scramble,
                    caps,
                    45,
                    2,
                ),
                &mut out,
            );
            s.write_all(&out).await.unwrap();
            let mut buf = vec![0u8; 1 << 16];
            let _ = s.read(&mut buf).await; // handshake response
            out.clear();
            frame(2, &[0, 0, 0, 2, 0, 0, 0], &mut out);
            s.write_all(&out).await.unwrap();
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => s.write_all(&response).await.unwrap(),
                }
            }
        });
    }
}

/// A connection to a new fake backend that answers every command with `response`.
async fn backend(response: Vec<u8>) -> BackendConn {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(fake_backend(listener, response));
    let opts = ConnectOptions {
        user: "u".into(),
        password: "p".into(),
        deprecate_eof: true,
        found_rows: false,
        connect_timeout: Duration::from_secs(2),
        tls: None,
        tcp: Default::default(),
    };
    BackendConn::connect(&addr, &opts).await.unwrap()
}

type ClientWriter = PacketWriter<tokio::net::tcp::OwnedWriteHalf>;

/// The "client": a socket pair whose far end is drained by a task (abort it when done).
async fn client() -> (ClientWriter, tokio::task::JoinHandle<()>) {
    let sink = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = sink.local_addr().unwrap();
    let client = TcpStream::connect(sink_addr).await.unwrap();
    let (mut far, _) = sink.accept().await.unwrap();
    let drain = tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = far.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    });
    let (_, w) = client.into_split();
    (PacketWriter::new(w), drain)
}

/// A text result set of one column (its definition `col`) and these rows, DEPRECATE_EOF
/// style.
fn one_column_result(col: &[u8], rows: impl Iterator<Item = Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = frame(1, &[1], &mut out);
    seq = frame(seq, col, &mut out);
    for row in rows {
        seq = frame(seq, &row, &mut out);
    }
    frame(seq, &[0xfe, 0, 0, 2, 0, 0, 0], &mut out);
    out
}

/// The definition of column `name` of table `sbtest.<table>`.
fn column_def(table: &str, name: &str, charset: u8, length: u32, kind: u8, flags: u16) -> Vec<u8> {
    let mut col = Vec::new();
    for part in ["def", "sbtest", table, table, name, name] {
        col.push(part.len() as u8);
        col.extend_from_slice(part.as_bytes());
    }
    col.push(0x0c);
    col.extend_from_slice(&u16::from(charset).to_le_bytes());
    col.extend_from_slice(&length.to_le_bytes());
    col.push(kind);
    col.extend_from_slice(&flags.to_le_bytes());
    col.extend_from_slice(&[0, 0, 0]); // decimals, filler
    col
}

/// A text result set of `rows` rows of one 100-byte `utf8mb4` column.
fn result_set(rows: usize) -> Vec<u8> {
    let col = column_def("sbtest1", "c", 45, 120, 254, 0);
    let mut row = vec![100u8];
    row.extend(std::iter::repeat_n(b'x', 100));
    one_column_result(&col, std::iter::repeat_n(row, rows))
}

/// The runtime the socket benches drive their futures on.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn relay_rows(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("relay");
    g.measurement_time(Duration::from_secs(4));
    for rows in [1usize, 100, 10_000] {
        let response = result_set(rows);
        g.throughput(Throughput::Bytes(response.len() as u64));
        let (mut conn, (mut client_w, drain)) =
            rt.block_on(async { (backend(response.clone()).await, client().await) });
        g.bench_with_input(BenchmarkId::from_parameter(rows), &rows, |b, _| {
            b.iter(|| {
                rt.block_on(async {
                    conn.send_command(b"\x03SELECT c FROM sbtest1")
                        .await
                        .unwrap();
                    let out = relay::<_, tokio::net::tcp::OwnedReadHalf>(
                        &mut conn,
                        RelayMode::ResultSet { cursor: false },
                        &mut client_w,
                        None::<&mut PacketReader<tokio::net::tcp::OwnedReadHalf>>,
                        false,
                    )
                    .await
                    .unwrap();
                    black_box(out);
                })
            })
        });
        drain.abort();
    }
    g.finish();
}

/// A text result set of one `INT NOT NULL` column `id` holding `values` in their order.
fn int_result_set(values: impl Iterator<Item = u64>) -> Vec<u8> {
    // binary charset, length 11, LONG, NOT NULL
    let col = column_def("t", "id", 63, 11, 3, 1);
    one_column_result(
        &col,
        values.map(|v| {
            let text = v.to_string();
            let mut row = vec![text.len() as u8];
            row.extend_from_slice(text.as_bytes());
            row
        }),
    )
}

/// K shards' sorted results (1,000 rows each, interleaved values) merged into one stream.
fn merge_streams(c: &mut Criterion) {
    const ROWS: u64 = 1_000;
    let rt = runtime();
    let mut g = c.benchmark_group("merge_sorted");
    g.measurement_time(Duration::from_secs(4));
    let order = [("id".to_string(), false)];
    for k in [2u64, 4, 8] {
        g.throughput(Throughput::Elements(k * ROWS));
        let (mut conns, (mut client_w, drain)) = rt.block_on(async {
            let mut conns = Vec::new();
            for shard in 0..k {
                let values = (0..ROWS).map(move |i| i * k + shard);
                conns.push(backend(int_result_set(values)).await);
            }
            (conns, client().await)
        });
        g.bench_with_input(BenchmarkId::from_parameter(k), &k, |b, _| {
            b.iter(|| {
                rt.block_on(async {
                    for conn in conns.iter_mut() {
                        conn.send_command(b"\x03SELECT id FROM t ORDER BY id")
                            .await
                            .unwrap();
                    }
                    let mut shards: Vec<&mut BackendConn> = conns.iter_mut().collect();
                    let rows = merge_sorted(&mut shards, &mut client_w, true, None, &order, false)
                        .await
                        .unwrap();
                    assert_eq!(rows, k * ROWS);
                })
            })
        });
        drain.abort();
    }
    g.finish();
}

/// The shard a point select goes to, on a `hash` vindex over four shards: a prepared
/// statement's parameter (its syntax tree parsed at prepare, and parsed again as before),
/// a literal in a text statement (its text parsed each time, and the router's way: its key parsed
/// once); and a read that must go everywhere.
fn shard_target(c: &mut Criterion) {
    let map = ShardMap::from_json(
        r#"{"keyspaces": [{
          "name": "app", "default_cluster": "c1",
          "shards": [{"name": "-40", "cluster": "c1"}, {"name": "40-80", "cluster": "c2"},
                     {"name": "80-c0", "cluster": "c1"}, {"name": "c0-", "cluster": "c2"}],
          "tables": [{"name": "customers", "kind": "sharded", "column": "id", "vindex": "hash"}]
        }]}"#,
    )
    .unwrap()
    .validated(&["c1", "c2"])
    .unwrap();
    let classifier = Classifier::new(64);
    let mut g = c.benchmark_group("shard_target");
    let param = Some(vec![Some(KeyValue::Int(4242))]);
    let point = "SELECT name FROM customers WHERE id = ?";
    // A prepared statement's execute: its syntax tree was parsed once, at prepare.
    let prepared = parse_one(point);
    let cases = [
        (
            "point_select_prepared",
            point,
            param.clone(),
            prepared.as_ref(),
        ),
        ("point_select_param_unparsed", point, param, None),
        (
            "point_select_literal",
            "SELECT name FROM customers WHERE id = 4242",
            None,
            None,
        ),
        (
            "scatter",
            "SELECT name FROM customers WHERE name = 'x'",
            None,
            None,
        ),
    ];
    for (name, sql, params, parsed) in cases {
        let class = classifier.classify(sql);
        let input = PlanInput {
            sql,
            class: &class,
            db: Some("app"),
            params: params.as_deref(),
            key_position: None,
            parsed,
        };
        let planned = plan(&map, input);
        assert!(
            matches!(
                (name, &planned),
                ("scatter", Plan::Scatter { .. }) | (_, Plan::Single(_))
            ),
            "{name}: {planned:?}"
        );
        g.bench_function(name, |b| b.iter(|| black_box(plan(&map, black_box(input)))));
    }
    // A text statement as the router plans it: its key's syntax tree (parsed at the first
    // text with that key) and the text's literals as parameters.
    let literal = "SELECT name FROM customers WHERE id = 4242";
    let class = classifier.classify(literal);
    assert!(plan_by_key(&map, literal, &class, Some("app")).is_some());
    g.bench_function("point_select_literal_by_key", |b| {
        b.iter(|| black_box(plan_by_key(&map, black_box(literal), &class, Some("app"))))
    });
    g.finish();
}

/// What a statement pays so that `KILL` can find it: the session records the backend
/// connection it runs on before sending and clears it after the reply (alternating between
/// two backends, as reads on a replica and writes on the leader do).
fn kill_tracking(c: &mut Criterion) {
    let reg = std::sync::Arc::new(router::sessions::SessionRegistry::default());
    let mut entry = reg.register(router::sessions::SESSION_ID_BASE, "app".into(), "peer");
    let leader: std::sync::Arc<str> = "127.0.0.1:3306".into();
    let replica: std::sync::Arc<str> = "127.0.0.1:3307".into();
    let mut i = 0u32;
    c.bench_function("sessions/statement_on_and_done", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            let addr = if i % 2 == 0 { &leader } else { &replica };
            entry.statement_on(black_box(addr), black_box(i));
            black_box(entry.statement_done())
        })
    });
}

criterion_group!(
    benches,
    classify,
    shard_target,
    relay_rows,
    merge_streams,
    kill_tracking
);
criterion_main!(benches);
