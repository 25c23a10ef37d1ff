//! Micro-benchmarks of the router's hot path: classifying a statement (cache hit and miss),
//! normalising it, and relaying a result set of N rows from a backend socket to a client
//! socket (loopback TCP, the same code path as production).

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use router::backend::{relay, BackendConn, ConnectOptions, RelayMode};
use router::classify::{normalize, Classifier};
use router::protocol::packet::frame;
use router::protocol::{PacketReader, PacketWriter};
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

/// A text result set of `rows` rows of one 100-byte column, DEPRECATE_EOF style.
fn result_set(rows: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut seq = frame(1, &[1], &mut out);
    let mut col = Vec::new();
    for part in ["def", "sbtest", "sbtest1", "sbtest1", "c", "c"] {
        col.push(part.len() as u8);
        col.extend_from_slice(part.as_bytes());
    }
    col.extend_from_slice(&[0x0c, 45, 0, 120, 0, 0, 0, 254, 0, 0, 0, 0, 0]);
    seq = frame(seq, &col, &mut out);
    let mut row = vec![100u8];
    row.extend(std::iter::repeat_n(b'x', 100));
    for _ in 0..rows {
        seq = frame(seq, &row, &mut out);
    }
    frame(seq, &[0xfe, 0, 0, 2, 0, 0, 0], &mut out);
    out
}

fn relay_rows(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut g = c.benchmark_group("relay");
    g.measurement_time(Duration::from_secs(4));
    for rows in [1usize, 100, 10_000] {
        let response = result_set(rows);
        g.throughput(Throughput::Bytes(response.len() as u64));
        let (mut conn, mut client_w, drain) = rt.block_on(async {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap().to_string();
            tokio::spawn(fake_backend(listener, response.clone()));
            let opts = ConnectOptions {
                user: "u".into(),
                password: "p".into(),
                deprecate_eof: true,
                found_rows: false,
                connect_timeout: Duration::from_secs(2),
                tls: None,
            };
            let conn = BackendConn::connect(&addr, &opts).await.unwrap();
            // The "client": a socket pair whose far end is drained by a task.
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
            (conn, PacketWriter::new(w), drain)
        });
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

criterion_group!(benches, classify, relay_rows);
criterion_main!(benches);
