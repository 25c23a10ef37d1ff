//! Values and metadata through the router against the same statements run directly on the
//! leader, with mysql_async: every common column type in the text and binary protocols, values
//! across the 16 MB packet boundary, OK packets, warnings, multiple result sets, and the
//! prepared-statement life cycle (re-execution, omitted parameter types, long data, reset,
//! close, USE). A small raw-protocol client covers what mysql_async never sends.

mod common;

use std::time::Duration;

use common::{eventually, query_one, TestEnv};
use mysql_async::prelude::*;
use mysql_async::{Column, Conn, Params, Row, Value};

/// One column of every common type; `id` orders the rows.
const TYPES_DDL: &str = "CREATE TABLE types (
    id INT NOT NULL PRIMARY KEY,
    ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
    mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
    bi BIGINT, biu BIGINT UNSIGNED, de DECIMAL(20,6), f FLOAT, d DOUBLE, b BIT(12),
    dt DATE, tm TIME(6), dtm DATETIME(6), ts TIMESTAMP(6) NULL, y YEAR,
    c CHAR(10), vc VARCHAR(100), bn BINARY(8), vb VARBINARY(100),
    tt TINYTEXT, tx TEXT, mt MEDIUMTEXT, lt LONGTEXT,
    tb TINYBLOB, bl BLOB, mb MEDIUMBLOB, lb LONGBLOB,
    e ENUM('red','green','blue'), s SET('a','b','c'), j JSON
) DEFAULT CHARSET = utf8mb4";
const TYPES_COLUMNS: usize = 35;

/// Large enough for a 17 MB value, also hex-encoded in a text-protocol INSERT.
const BIG_PACKET: u64 = 64 << 20;

/// A result set: its columns and rows.
#[derive(Debug)]
struct ResultSet {
    columns: Vec<Column>,
    rows: Vec<Vec<Value>>,
}

/// Every result set of a text-protocol query.
async fn text_sets(conn: &mut Conn, sql: &str) -> Vec<ResultSet> {
    let mut result = conn
        .query_iter(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut sets = Vec::new();
    while !result.is_empty() {
        let columns = result.columns().map(|c| c.to_vec()).unwrap_or_default();
        let rows: Vec<Row> = result
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        sets.push(ResultSet {
            columns,
            rows: rows.into_iter().map(Row::unwrap).collect(),
        });
    }
    sets
}

/// Every result set of a binary-protocol (prepared) execution.
async fn binary_sets(
    conn: &mut Conn,
    sql: &str,
    params: impl Into<Params> + Send,
) -> Vec<ResultSet> {
    let mut result = conn
        .exec_iter(sql, params)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut sets = Vec::new();
    while !result.is_empty() {
        let columns = result.columns().map(|c| c.to_vec()).unwrap_or_default();
        let rows: Vec<Row> = result
            .collect()
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        sets.push(ResultSet {
            columns,
            rows: rows.into_iter().map(Row::unwrap).collect(),
        });
    }
    sets
}

/// Everything a client sees of a column, in a form that diffs well.
fn column_meta(c: &Column) -> String {
    format!(
        "{} table={} org_table={} org_name={} schema={} type={:?} flags={:?} charset={} \
         decimals={} length={}",
        c.name_str(),
        c.table_str(),
        c.org_table_str(),
        c.org_name_str(),
        c.schema_str(),
        c.column_type(),
        c.flags(),
        c.character_set(),
        c.decimals(),
        c.column_length()
    )
}

/// A value's debug form, cut short: some are 17 MB.
fn short(v: &Value) -> String {
    let s = format!("{v:?}");
    if s.chars().count() > 100 {
        format!(
            "{}... ({} chars)",
            s.chars().take(100).collect::<String>(),
            s.len()
        )
    } else {
        s
    }
}

/// The router's result sets equal the leader's: column metadata and every value.
fn assert_same_sets(what: &str, router: &[ResultSet], direct: &[ResultSet]) {
    assert_eq!(router.len(), direct.len(), "{what}: number of result sets");
    for (n, (r, d)) in router.iter().zip(direct).enumerate() {
        let rm: Vec<String> = r.columns.iter().map(column_meta).collect();
        let dm: Vec<String> = d.columns.iter().map(column_meta).collect();
        assert_eq!(rm, dm, "{what}: column metadata of result set {n}");
        assert_eq!(
            r.columns, d.columns,
            "{what}: column definitions of result set {n}"
        );
        assert_eq!(r.rows.len(), d.rows.len(), "{what}: rows in result set {n}");
        for (i, (rr, dr)) in r.rows.iter().zip(&d.rows).enumerate() {
            assert_eq!(rr.len(), dr.len(), "{what}: row {i} width");
            for (c, (rv, dv)) in rr.iter().zip(dr).enumerate() {
                assert!(
                    rv == dv,
                    "{what}: result set {n} row {i} column {}: router {} but directly {}",
                    rm.get(c).map(String::as_str).unwrap_or("?"),
                    short(rv),
                    short(dv)
                );
            }
        }
    }
}

/// A row equals the expected one, value by value.
fn assert_same_row(what: &str, got: &[Value], want: &[Value]) {
    assert_eq!(got.len(), want.len(), "{what}: width");
    for (c, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            g == w,
            "{what}: column {c}: {} but expected {}",
            short(g),
            short(w)
        );
    }
}

fn bytes(s: impl AsRef<[u8]>) -> Value {
    Value::Bytes(s.as_ref().to_vec())
}

/// Deterministic binary data of `len` bytes, every byte value included.
fn blob(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

fn hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len() * 2);
    for b in data {
        s.push_str(&format!("{b:02X}"));
    }
    s
}

/// Typical values, each bound as the parameter type a program would use for the column.
fn typical_row() -> Vec<Value> {
    vec![
        Value::Int(1),
        Value::Int(-5),
        Value::UInt(200),
        Value::Int(-30000),
        Value::UInt(60000),
        Value::Int(-8_000_000),
        Value::UInt(16_000_000),
        Value::Int(-2_000_000_000),
        Value::UInt(4_000_000_000),
        Value::Int(-9_000_000_000_000_000_000),
        Value::UInt(u64::MAX),
        bytes("12345678901234.123456"),
        Value::Float(1.5),
        Value::Double(-6.02214076e23),
        Value::Int(0xabc),
        Value::Date(2024, 2, 29, 0, 0, 0, 0),
        Value::Time(false, 0, 12, 34, 56, 789_012),
        Value::Date(2023, 12, 31, 23, 59, 58, 123_456),
        Value::Date(2021, 6, 1, 12, 0, 0, 500_000),
        Value::Int(2155),
        bytes("ÄÖÜ✓"),
        bytes("héllo wörld — 日本語 🎉🦀"),
        Value::Bytes(vec![0, 1, 0xfe, 0xff]),
        Value::Bytes(vec![0, b'b', b'i', b'n', 0xff]),
        bytes("tiny ✓"),
        bytes("text 🌍 with a 'quote' and a \\ backslash"),
        bytes("medium ".repeat(1000)),
        bytes("long 🦀 ".repeat(5000)),
        Value::Bytes(vec![0, 1, 2, 255]),
        Value::Bytes(blob(1000, 1)),
        Value::Bytes(blob(70_000, 2)),
        Value::Bytes(blob(100_000, 3)),
        bytes("green"),
        bytes("a,c"),
        bytes(r#"{"a": [1, 2.5, "ü"], "emoji": "🚀", "nested": {"null": null}}"#),
    ]
}

/// Extreme values, bound as other parameter types than the column's (the server converts).
fn extreme_row() -> Vec<Value> {
    vec![
        Value::Int(2),
        bytes("-128"),
        Value::Int(0),
        Value::Int(-32768),
        bytes("65535"),
        Value::Int(-8_388_608),
        Value::UInt(16_777_215),
        Value::Int(i64::from(i32::MIN)),
        Value::UInt(u64::from(u32::MAX)),
        Value::Int(i64::MIN),
        Value::UInt(0),
        Value::Double(-0.000001),
        Value::Int(-7),
        Value::Float(3.25),
        bytes([0x0f, 0xff]),
        bytes("1000-01-01"),
        Value::Time(true, 34, 22, 59, 59, 0),
        bytes("9999-12-31 23:59:59.999999"),
        Value::Date(1970, 1, 2, 0, 0, 0, 1),
        Value::Int(1901),
        bytes(""),
        bytes("x"),
        bytes(""),
        bytes(""),
        bytes(""),
        bytes(""),
        bytes(""),
        bytes(""),
        Value::Bytes(Vec::new()),
        Value::Bytes(Vec::new()),
        Value::Bytes(vec![0]),
        Value::Bytes(vec![0xff; 3]),
        Value::Int(3),
        bytes("a,b,c"),
        bytes("[]"),
    ]
}

/// Only the id set, every other column NULL.
fn null_row(id: i64) -> Vec<Value> {
    let mut row = vec![Value::NULL; TYPES_COLUMNS];
    row[0] = Value::Int(id);
    row
}

fn insert_sql() -> String {
    let marks = vec!["?"; TYPES_COLUMNS].join(", ");
    format!("INSERT INTO types VALUES ({marks})")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_column_type_round_trips_in_text_and_binary_protocols() {
    let env = TestEnv::start(1, 0).await;
    let leader = env.leader_port("c1");
    // Before anything connects: a session keeps the max_allowed_packet it started with.
    let mut admin = env.admin_conn(leader).await;
    admin
        .query_drop(format!("SET GLOBAL max_allowed_packet = {BIG_PACKET}"))
        .await
        .unwrap();
    let mut direct = env.direct_conn(leader, None).await;
    direct.query_drop("CREATE DATABASE typedb").await.unwrap();
    direct.query_drop("USE typedb").await.unwrap();
    direct.query_drop(TYPES_DDL).await.unwrap();
    let mut router = env.router_conn(Some("typedb")).await;
    let packet: u64 = query_one(&mut router, "SELECT @@max_allowed_packet").await;
    assert_eq!(
        packet, BIG_PACKET,
        "the router's new backend connections have the raised max_allowed_packet"
    );

    // Rows written through the router, in the binary protocol (prepared, with parameters)...
    let insert = insert_sql();
    let mut big = typical_row();
    big[0] = Value::Int(6);
    let medium = blob(1 << 20, 7);
    let huge = blob((17 << 20) + 12_345, 9);
    big[30] = Value::Bytes(medium.clone());
    big[31] = Value::Bytes(huge.clone());
    big[27] = bytes("ü".repeat(600_000));
    for row in [typical_row(), extreme_row(), null_row(3), big] {
        router
            .exec_drop(&insert, row)
            .await
            .unwrap_or_else(|e| panic!("prepared INSERT through the router: {e}"));
        assert_eq!(router.affected_rows(), 1);
    }
    // ...and in the text protocol, literals of every type, NULLs, and again a 17 MB value
    // (as a 34 MB statement: several packets from the client).
    let text_rows = [
        "INSERT INTO types VALUES (4, 127, 255, 32767, 65535, 8388607, 16777215, 2147483647, \
         4294967295, 9223372036854775807, 18446744073709551615, -99999999999999.999999, \
         -3.25e10, 1.7976931348623157e308, b'111111111111', '9999-12-31', '-00:00:00.000001', \
         '1000-01-01 00:00:00.000000', '2001-02-03 04:05:06.070809', 0, 'ñ', \
         'Grüße, 你好, שלום, 🏳️‍🌈', 0x00FF, X'DEADBEEF', 'a', 'b', 'c', 'd', X'00', X'01', \
         X'02', X'03', 'blue', '', '{\"k\": \"🦀\"}')"
            .to_string(),
        "INSERT INTO types (id) VALUES (5)".to_string(),
        format!(
            "INSERT INTO types (id, lb, tx) VALUES (7, X'{}', 'big')",
            hex(&huge)
        ),
    ];
    for sql in &text_rows {
        router
            .query_drop(sql)
            .await
            .unwrap_or_else(|e| panic!("text INSERT through the router: {e}"));
        assert_eq!(router.affected_rows(), 1);
    }

    // Read back in both protocols, both ways: identical values and column metadata.
    let select = "SELECT * FROM types ORDER BY id";
    let router_text = text_sets(&mut router, select).await;
    let direct_text = text_sets(&mut direct, select).await;
    assert_same_sets("text protocol", &router_text, &direct_text);
    let select_ps = "SELECT * FROM types WHERE id > ? ORDER BY id";
    let router_bin = binary_sets(&mut router, select_ps, (0,)).await;
    let direct_bin = binary_sets(&mut direct, select_ps, (0,)).await;
    assert_same_sets("binary protocol", &router_bin, &direct_bin);

    // And they are the values written, not merely the same wrong ones.
    let rows = &router_bin[0].rows;
    assert_eq!(rows.len(), 7);
    assert_eq!(router_bin[0].columns.len(), TYPES_COLUMNS);
    // The binary protocol gives small unsigned integers as Int and pads BINARY.
    let mut want = typical_row();
    for (col, v) in [(2, 200), (4, 60_000), (6, 16_000_000), (8, 4_000_000_000)] {
        want[col] = Value::Int(v);
    }
    want[14] = Value::Bytes(vec![0x0a, 0xbc]);
    want[22] = Value::Bytes(vec![0, 1, 0xfe, 0xff, 0, 0, 0, 0]);
    assert_same_row("row 1 as written", &rows[0], &want);
    assert_eq!(rows[1][1], Value::Int(-128));
    assert_eq!(rows[1][16], Value::Time(true, 34, 22, 59, 59, 0));
    assert!(
        rows[2][1..].iter().all(|v| *v == Value::NULL),
        "row 3 is NULLs"
    );
    assert!(
        rows[4][1..].iter().all(|v| *v == Value::NULL),
        "row 5 is NULLs"
    );
    assert_eq!(rows[3][21], bytes("Grüße, 你好, שלום, 🏳️‍🌈"));
    assert_eq!(rows[3][10], Value::UInt(u64::MAX));
    assert!(rows[5][30] == Value::Bytes(medium.clone()), "1 MB value");
    assert!(
        rows[5][31] == Value::Bytes(huge.clone()),
        "17 MB value (prepared)"
    );
    assert!(rows[5][27] == bytes("ü".repeat(600_000)), "1.2 MB text");
    assert!(
        rows[6][31] == Value::Bytes(huge.clone()),
        "17 MB value (text)"
    );
    let text = &router_text[0].rows;
    assert_eq!(text[0][1], bytes("-5"));
    assert_eq!(text[0][15], bytes("2024-02-29"));
    assert!(
        text[6][31] == Value::Bytes(huge),
        "17 MB value in a text result"
    );

    drop((router, direct, admin));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ok_packets_warnings_and_multiple_result_sets_match_the_leader() {
    let env = TestEnv::start(1, 0).await;
    let leader = env.leader_port("c1");
    let mut direct = env.direct_conn(leader, None).await;
    direct
        .query_drop(
            "CREATE DATABASE okdb; USE okdb; \
             CREATE TABLE ai_router (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT, c CHAR(3)); \
             CREATE TABLE ai_direct (id BIGINT AUTO_INCREMENT PRIMARY KEY, v INT, c CHAR(3)); \
             CREATE PROCEDURE two_sets(IN n INT) BEGIN \
               SELECT n AS n, 'first' AS which; \
               SELECT id, v, c FROM ai_direct ORDER BY id LIMIT n; \
             END",
        )
        .await
        .unwrap();
    let mut router = env.router_conn(Some("okdb")).await;

    // The same statements on two identical tables: the same OK packets.
    #[derive(Debug, PartialEq)]
    struct OkInfo {
        affected: u64,
        last_insert_id: Option<u64>,
        warnings: u16,
        info: String,
    }
    async fn ok_of(conn: &mut Conn, sql: &str, params: Option<Vec<Value>>) -> OkInfo {
        match params {
            None => conn.query_drop(sql).await,
            Some(p) => conn.exec_drop(sql, p).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
        OkInfo {
            affected: conn.affected_rows(),
            last_insert_id: conn.last_insert_id(),
            warnings: conn.get_warnings(),
            info: conn.info().into_owned(),
        }
    }
    let steps: Vec<(&str, Option<Vec<Value>>, OkInfo)> = vec![
        (
            "INSERT INTO {t} (v, c) VALUES (1, 'a'), (2, 'b'), (3, 'c')",
            None,
            OkInfo {
                affected: 3,
                last_insert_id: Some(1),
                warnings: 0,
                info: "Records: 3  Duplicates: 0  Warnings: 0".into(),
            },
        ),
        (
            "INSERT INTO {t} (v, c) VALUES (?, ?)",
            Some(vec![Value::Int(4), bytes("d")]),
            OkInfo {
                affected: 1,
                last_insert_id: Some(4),
                warnings: 0,
                info: String::new(),
            },
        ),
        (
            "UPDATE {t} SET v = v + 10 WHERE v >= 2",
            None,
            OkInfo {
                affected: 3,
                last_insert_id: None,
                warnings: 0,
                info: "Rows matched: 3  Changed: 3  Warnings: 0".into(),
            },
        ),
        (
            "UPDATE {t} SET v = ? WHERE id = ?",
            Some(vec![Value::Int(1), Value::Int(1)]),
            OkInfo {
                affected: 0,
                last_insert_id: None,
                warnings: 0,
                info: "Rows matched: 1  Changed: 0  Warnings: 0".into(),
            },
        ),
        (
            "SET SESSION sql_mode = ''",
            None,
            OkInfo {
                affected: 0,
                last_insert_id: None,
                warnings: 0,
                info: String::new(),
            },
        ),
        // Truncated in non-strict mode: warnings, not errors.
        (
            "INSERT INTO {t} (v, c) VALUES (5, 'toolong'), ('x', 'e')",
            None,
            OkInfo {
                affected: 2,
                last_insert_id: Some(5),
                warnings: 2,
                info: "Records: 2  Duplicates: 0  Warnings: 2".into(),
            },
        ),
        (
            "INSERT INTO {t} (v, c) VALUES (?, ?)",
            Some(vec![bytes("7x"), bytes("abcdef")]),
            OkInfo {
                affected: 1,
                last_insert_id: Some(7),
                warnings: 2,
                info: String::new(),
            },
        ),
        (
            "DELETE FROM {t} WHERE id > 5",
            None,
            OkInfo {
                affected: 2,
                last_insert_id: None,
                warnings: 0,
                info: String::new(),
            },
        ),
    ];
    for (sql, params, want) in steps {
        let via_router = ok_of(
            &mut router,
            &sql.replace("{t}", "ai_router"),
            params.clone(),
        )
        .await;
        let via_leader = ok_of(&mut direct, &sql.replace("{t}", "ai_direct"), params).await;
        assert_eq!(via_router, via_leader, "{sql}: router vs directly");
        assert_eq!(via_router, want, "{sql}");
    }
    let id: u64 = query_one(&mut router, "SELECT LAST_INSERT_ID()").await;
    assert_eq!(id, 7);
    let rows: Vec<(u64, i32, String)> = router
        .query("SELECT id, v, c FROM ai_router ORDER BY id")
        .await
        .unwrap();
    let want: Vec<(u64, i32, String)> = direct
        .query("SELECT id, v, c FROM ai_direct ORDER BY id")
        .await
        .unwrap();
    assert_eq!(rows, want);
    assert_eq!(rows[4], (5, 5, "too".to_string()));

    // A procedure returning two result sets, called in both protocols.
    let call = "CALL two_sets(3)";
    let via_router = text_sets(&mut router, call).await;
    let via_leader = text_sets(&mut direct, call).await;
    assert_same_sets("CALL, text protocol", &via_router, &via_leader);
    let with_rows: Vec<&ResultSet> = via_router
        .iter()
        .filter(|s| !s.columns.is_empty())
        .collect();
    assert_eq!(with_rows.len(), 2, "two result sets: {via_router:?}");
    assert_eq!(with_rows[0].rows, vec![vec![bytes("3"), bytes("first")]]);
    assert_eq!(with_rows[1].rows.len(), 3);
    let via_router = binary_sets(&mut router, "CALL two_sets(?)", (2,)).await;
    let via_leader = binary_sets(&mut direct, "CALL two_sets(?)", (2,)).await;
    assert_same_sets("CALL, binary protocol", &via_router, &via_leader);
    let with_rows: Vec<&ResultSet> = via_router
        .iter()
        .filter(|s| !s.columns.is_empty())
        .collect();
    assert_eq!(with_rows.len(), 2, "two result sets: {via_router:?}");
    assert_eq!(with_rows[1].rows.len(), 2);
    // The session goes on normally after the multi-result response.
    let one: i64 = query_one(&mut router, "SELECT 1").await;
    assert_eq!(one, 1);

    // NULL parameters, in the select list and in a comparison.
    let sql =
        "SELECT ? IS NULL, ?, COALESCE(?, 'default'), (SELECT COUNT(*) FROM ai_router WHERE c = ?)";
    let params = vec![Value::NULL, Value::NULL, Value::NULL, Value::NULL];
    let via_router = binary_sets(&mut router, sql, params.clone()).await;
    let via_leader = binary_sets(&mut direct, sql, params).await;
    assert_same_sets("NULL parameters", &via_router, &via_leader);
    assert_eq!(
        via_router[0].rows,
        vec![vec![
            Value::Int(1),
            Value::NULL,
            bytes("default"),
            Value::Int(0)
        ]]
    );
    drop((router, direct));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_warnings_reports_the_sessions_own_last_statement() {
    // Two backend connections: without care, `b` would run on the connection `a` just
    // used (the pool hands out the most recently returned one first) and clear its warnings.
    // The router keeps `a` on its connection until `a`'s next statement instead.
    let env = TestEnv::start_with(1, 0, |c| c.router.pool_size = 2).await;
    let leader = env.leader_port("c1");
    let mut setup = env.direct_conn(leader, None).await;
    setup
        .query_drop("CREATE DATABASE wdb; CREATE TABLE wdb.t (c CHAR(3))")
        .await
        .unwrap();

    // Session `a` gets a warning; session `b` then reads a table (which clears a server
    // connection's warnings); `a` asks for its warnings.
    async fn scenario(a: &mut Conn, b: &mut Conn) -> (u16, Vec<(String, u32, String)>, u64) {
        a.query_drop("SET SESSION sql_mode = ''").await.unwrap();
        a.query_drop("INSERT INTO t VALUES ('toolong')")
            .await
            .unwrap();
        let count = a.get_warnings();
        let n: i64 = query_one(b, "SELECT COUNT(*) FROM t").await;
        assert!(n >= 1);
        let warnings = a.query("SHOW WARNINGS").await.unwrap();
        let warning_count: u64 = query_one(a, "SELECT @@warning_count").await;
        (count, warnings, warning_count)
    }
    let mut a = env.direct_conn(leader, Some("wdb")).await;
    let mut b = env.direct_conn(leader, Some("wdb")).await;
    let via_leader = scenario(&mut a, &mut b).await;
    let want = (
        1,
        vec![(
            "Warning".to_string(),
            1265,
            "Data truncated for column 'c' at row 1".to_string(),
        )],
        1,
    );
    assert_eq!(via_leader, want, "the server's behaviour");
    let mut a = env.router_conn(Some("wdb")).await;
    let mut b = env.router_conn(Some("wdb")).await;
    let via_router = scenario(&mut a, &mut b).await;
    assert_eq!(
        via_router, via_leader,
        "(warning count, SHOW WARNINGS, @@warning_count) through the router vs directly"
    );
    drop((a, b, setup));
    env.stop().await;
}

/// A router session that can hold a backend connection in a transaction.
enum PinSession {
    Async(Conn),
    Raw(raw::RawConn),
}

impl PinSession {
    async fn run(&mut self, sql: &str) {
        match self {
            PinSession::Async(c) => c.query_drop(sql).await.unwrap(),
            PinSession::Raw(c) => {
                c.query(sql).await.unwrap();
            }
        }
    }
}

/// Router sessions that hold every idle backend connection in a transaction, so that the next
/// statement of any other session runs on a backend connection that is new to it. The
/// sessions must be clients of the same kind as the other session (mysql_async or the raw
/// client): the router pools backend connections per client capabilities.
struct Pinner<'a> {
    env: &'a TestEnv,
    raw_db: Option<&'static str>,
    sessions: Vec<PinSession>,
    pinned: usize,
}

impl<'a> Pinner<'a> {
    /// Pins with mysql_async sessions.
    fn new(env: &'a TestEnv) -> Self {
        Pinner {
            env,
            raw_db: None,
            sessions: Vec::new(),
            pinned: 0,
        }
    }

    /// Pins with raw-client sessions in `db`.
    fn raw(env: &'a TestEnv, db: &'static str) -> Self {
        Pinner {
            raw_db: Some(db),
            ..Pinner::new(env)
        }
    }

    /// (idle, busy) backend connections of the router.
    fn pool(&self) -> (usize, usize) {
        let stats = self.env.app().router.pools.stats();
        (
            stats.iter().map(|p| p.idle).sum(),
            stats.iter().map(|p| p.busy).sum(),
        )
    }

    async fn pin_all(&mut self) {
        loop {
            // A session's connection goes back to the pool just after its reply is sent:
            // wait until only the pinned ones are out.
            let pinned = self.pinned;
            eventually(
                Duration::from_secs(10),
                "backend connections return to the pool",
                || async { (self.pool().1 == pinned).then_some(()) },
            )
            .await;
            if self.pool().0 == 0 {
                return;
            }
            if self.pinned == self.sessions.len() {
                let port = self.env.router_port();
                self.sessions.push(match self.raw_db {
                    Some(db) => {
                        PinSession::Raw(raw::RawConn::connect(port, "app", "app", db).await)
                    }
                    None => PinSession::Async(self.env.router_conn(None).await),
                });
                continue;
            }
            self.sessions[self.pinned].run("BEGIN").await;
            self.pinned += 1;
            assert!(self.pinned < 100, "can't pin the idle backend connections");
        }
    }

    async fn release(&mut self) {
        for s in &mut self.sessions[..self.pinned] {
            s.run("COMMIT").await;
        }
        self.pinned = 0;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_reexecute_with_new_parameters_on_any_backend_connection() {
    let env = TestEnv::start(1, 0).await;
    let leader = env.leader_port("c1");
    let mut setup = env.direct_conn(leader, None).await;
    setup
        .query_drop(
            "CREATE DATABASE psdb; CREATE TABLE psdb.t (id INT PRIMARY KEY, name VARCHAR(20)); \
             INSERT INTO psdb.t VALUES (1, 'one'), (2, 'two'), (3, 'three'), (4, 'vier 🦀')",
        )
        .await
        .unwrap();

    // mysql_async: one statement, executed many times with values of changing types; every
    // other execution runs on a backend connection that has never seen the statement.
    let mut a = env.router_conn(Some("psdb")).await;
    let mut pinner = Pinner::new(&env);
    let stmt = a
        .prep("SELECT ?, CONCAT('n', ?), (SELECT name FROM t WHERE id = ?), @@pseudo_thread_id")
        .await
        .unwrap();
    let mut backends = std::collections::BTreeSet::new();
    let runs = 24i64;
    for i in 0..runs {
        let fresh = i % 2 == 1;
        if fresh {
            pinner.pin_all().await;
        }
        let (p1, want1) = match i % 4 {
            0 => (Value::Int(i), Value::Int(i)),
            1 => (bytes(format!("s{i}")), bytes(format!("s{i}"))),
            2 => (Value::NULL, Value::NULL),
            _ => (Value::Double(i as f64 + 0.5), Value::Double(i as f64 + 0.5)),
        };
        let id = i % 5;
        let row: Row = a
            .exec_first(&stmt, (p1, i, id))
            .await
            .unwrap_or_else(|e| panic!("execution {i}: {e}"))
            .expect("a row");
        let mut row = row.unwrap();
        backends.insert(format!("{:?}", row.pop().unwrap()));
        let name = match id {
            1 => bytes("one"),
            2 => bytes("two"),
            3 => bytes("three"),
            4 => bytes("vier 🦀"),
            _ => Value::NULL,
        };
        assert_eq!(
            row,
            vec![want1, bytes(format!("n{i}")), name],
            "execution {i}"
        );
        if fresh {
            pinner.release().await;
        }
    }
    assert!(
        backends.len() as i64 > runs / 2,
        "every other execution should have run on a new backend connection: {backends:?}"
    );
    a.close(stmt).await.unwrap();

    drop((a, pinner, setup));
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_prepared_statement_commands_get_the_leaders_answers() {
    let env = TestEnv::start(1, 0).await;
    let leader = env.leader_port("c1");
    let mut setup = env.direct_conn(leader, None).await;
    setup.query_drop("CREATE DATABASE psdb").await.unwrap();
    let mut pinner = Pinner::raw(&env, "psdb");

    // Clients that send parameter types only with the first execution (libmariadb does),
    // long data, COM_STMT_RESET and COM_STMT_CLOSE: the router's answers equal the leader's.
    let via_router = raw_lifecycle(env.router_port(), Some(&mut pinner)).await;
    let via_leader = raw_lifecycle(leader, None).await;
    assert_eq!(via_router.steps, via_leader.steps);
    let ids: std::collections::BTreeSet<&str> =
        via_router.backends.iter().map(String::as_str).collect();
    assert!(
        ids.len() >= 4,
        "executions 1, 3 and 5 should have run on new backend connections: {:?}",
        via_router.backends
    );
    let s = |v: &str| Some(v.to_string());
    let mut expected: Vec<(String, Result<raw::Rows, u16>)> = (0..6)
        .map(|i| {
            let what = if i == 0 {
                "execute 0 with types".to_string()
            } else {
                format!("execute {i} without types")
            };
            (
                what,
                Ok(vec![vec![s(&format!("v{i}")), s(&(2 * i).to_string())]]),
            )
        })
        .collect();
    expected.extend([
        ("NULL without types".into(), Ok(vec![vec![None, s("10")]])),
        ("long data".into(), Ok(vec![vec![s("hello wörld"), s("2")]])),
        ("reset".into(), Ok(vec![])),
        (
            "execute after reset".into(),
            Ok(vec![vec![s("fresh"), s("4")]]),
        ),
        ("reset of an unknown statement".into(), Err(1243)),
        ("execute after close".into(), Err(1243)),
        ("prepare again".into(), Ok(vec![])),
        (
            "execute the new statement".into(),
            Ok(vec![vec![s("again")]]),
        ),
        (
            "re-execute the new statement".into(),
            Ok(vec![vec![s("and again")]]),
        ),
    ]);
    assert_eq!(via_router.steps, expected);
    drop((pinner, setup));
    env.stop().await;
}

/// What `raw_lifecycle` saw: each step's result (rows, or an error code), and the backend
/// connection ids the executions ran on.
struct Lifecycle {
    steps: Vec<(String, Result<raw::Rows, u16>)>,
    backends: Vec<String>,
}

/// The prepared-statement life cycle in raw protocol, against `port` (router or leader).
/// With a pinner (router only), executions 1, 3 and 5 run on backend connections new to the
/// statement.
async fn raw_lifecycle(port: u16, mut pinner: Option<&mut Pinner<'_>>) -> Lifecycle {
    use raw::Param::{Int, LongData, Null, Str};
    let mut c = raw::RawConn::connect(port, "app", "app", "psdb").await;
    let mut steps = Vec::new();
    let mut backends = Vec::new();
    let (id, params) = c
        .prepare("SELECT CAST(? AS CHAR) AS a, CAST(? * 2 AS CHAR) AS b, @@pseudo_thread_id")
        .await
        .expect("prepare");
    assert_eq!(params, 2);
    let mut record = |what: String, r: Result<raw::Rows, raw::ServerError>| {
        let r = r.map(|mut rows| {
            // The last column is the backend connection's id: not comparable.
            for row in &mut rows {
                if row.len() == 3 {
                    backends.push(row.pop().flatten().unwrap_or_default());
                }
            }
            rows
        });
        steps.push((what, r.map_err(|e| e.code)));
    };
    for i in 0..6i64 {
        let fresh = i % 2 == 1;
        if let Some(p) = pinner.as_deref_mut().filter(|_| fresh) {
            p.pin_all().await;
        }
        let what = if i == 0 {
            "execute 0 with types".to_string()
        } else {
            format!("execute {i} without types")
        };
        let r = c
            .execute(id, &[Str(format!("v{i}").into_bytes()), Int(i)], i == 0)
            .await;
        record(what, r);
        if let Some(p) = pinner.as_deref_mut().filter(|_| fresh) {
            p.release().await;
        }
    }
    let r = c.execute(id, &[Null, Int(5)], false).await;
    record("NULL without types".into(), r);
    c.send_long_data(id, 0, "hello ".as_bytes()).await;
    c.send_long_data(id, 0, "wörld".as_bytes()).await;
    let r = c.execute(id, &[LongData, Int(1)], false).await;
    record("long data".into(), r);
    // Long data sent and then reset is forgotten: the value comes with the execution.
    c.send_long_data(id, 0, b"stale").await;
    let r = c.reset(id).await.map(|()| Vec::new());
    record("reset".into(), r);
    let r = c
        .execute(id, &[Str(b"fresh".to_vec()), Int(2)], false)
        .await;
    record("execute after reset".into(), r);
    let r = c.reset(id + 1000).await.map(|()| Vec::new());
    record("reset of an unknown statement".into(), r);
    c.close(id).await;
    let r = c
        .execute(id, &[Str(b"closed".to_vec()), Int(3)], true)
        .await;
    record("execute after close".into(), r);
    let r = c.prepare("SELECT CAST(? AS CHAR)").await;
    let new_id = r.as_ref().map(|(id, _)| *id).unwrap_or(0);
    record("prepare again".into(), r.map(|_| Vec::new()));
    let r = c.execute(new_id, &[Str(b"again".to_vec())], true).await;
    record("execute the new statement".into(), r);
    let r = c
        .execute(new_id, &[Str(b"and again".to_vec())], false)
        .await;
    record("re-execute the new statement".into(), r);
    // The connection still answers plain queries.
    let rows = c.query("SELECT 'still here'").await.expect("query");
    assert_eq!(rows, vec![vec![Some("still here".to_string())]]);
    Lifecycle { steps, backends }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_statement_keeps_its_database_after_the_session_runs_use() {
    let env = TestEnv::start(1, 0).await;
    let leader = env.leader_port("c1");
    let mut setup = env.direct_conn(leader, None).await;
    setup
        .query_drop(
            "CREATE DATABASE db1; CREATE DATABASE otherdb; \
             CREATE TABLE db1.t (v INT); INSERT INTO db1.t VALUES (1), (2); \
             CREATE TABLE otherdb.t (v INT); INSERT INTO otherdb.t VALUES (9)",
        )
        .await
        .unwrap();

    // What a server does: the statement reads the table of the database it was prepared in.
    // Through the router (with a pinner), the last execution of it runs on a backend
    // connection that has not seen it.
    async fn scenario(env: &TestEnv, port: u16, mut pinner: Option<Pinner<'_>>) -> Vec<Vec<i32>> {
        let mut a = Conn::new(env.direct_opts(port, Some("db1"))).await.unwrap();
        let stmt = a.prep("SELECT v FROM t ORDER BY v").await.unwrap();
        let mut seen = Vec::new();
        seen.push(a.exec(&stmt, ()).await.unwrap());
        a.query_drop("USE otherdb").await.unwrap();
        seen.push(a.exec(&stmt, ()).await.unwrap());
        if let Some(p) = pinner.as_mut() {
            p.pin_all().await;
        }
        seen.push(a.exec(&stmt, ()).await.unwrap());
        if let Some(p) = pinner.as_mut() {
            p.release().await;
        }
        // A statement prepared now reads the new database (another text: mysql_async caches
        // statements by text).
        seen.push(a.exec("SELECT v FROM t ORDER BY v DESC", ()).await.unwrap());
        let db: String = query_one(&mut a, "SELECT DATABASE()").await;
        assert_eq!(db, "otherdb");
        seen
    }
    let via_leader = scenario(&env, leader, None).await;
    assert_eq!(
        via_leader,
        vec![vec![1, 2], vec![1, 2], vec![1, 2], vec![9]],
        "the server's behaviour"
    );
    let via_router = scenario(&env, env.router_port(), Some(Pinner::new(&env))).await;
    assert_eq!(via_router, via_leader, "through the router vs directly");
    drop(setup);
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_preparing_the_same_text_in_different_databases_read_their_own_tables() {
    let env = TestEnv::start_with(1, 0, |c| c.router.pool_size = 1).await;
    let mut setup = env.direct_conn(env.leader_port("c1"), None).await;
    setup
        .query_drop(
            "CREATE DATABASE db_a; CREATE DATABASE db_b; \
             CREATE TABLE db_a.t (v VARCHAR(10)); INSERT INTO db_a.t VALUES ('a'); \
             CREATE TABLE db_b.t (v VARCHAR(10)); INSERT INTO db_b.t VALUES ('b')",
        )
        .await
        .unwrap();
    // One backend connection: both sessions' statements run on it in turn.
    let mut a = env.router_conn(Some("db_a")).await;
    let mut b = env.router_conn(Some("db_b")).await;
    let sql = "SELECT v FROM t";
    let sa = a.prep(sql).await.unwrap();
    let sb = b.prep(sql).await.unwrap();
    for round in 0..3 {
        let va: Vec<String> = a.exec(&sa, ()).await.unwrap();
        let vb: Vec<String> = b.exec(&sb, ()).await.unwrap();
        assert_eq!(
            (va, vb),
            (vec!["a".to_string()], vec!["b".to_string()]),
            "round {round}: each session reads its own database's table"
        );
    }
    drop((a, b, setup));
    env.stop().await;
}

/// SHA-1, for mysql_native_password in the raw client (no crate of ours exposes one).
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [
        0x6745_2301,
        0xEFCD_AB89,
        0x98BA_DCFE,
        0x1032_5476,
        0xC3D2_E1F0,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64) * 8).to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (hi, v) in h.iter_mut().zip([a, b, c, d, e]) {
            *hi = hi.wrapping_add(v);
        }
    }
    let mut out = [0u8; 20];
    for (o, v) in out.chunks_mut(4).zip(h) {
        o.copy_from_slice(&v.to_be_bytes());
    }
    out
}

/// A minimal MySQL client speaking the protocol directly, for what mysql_async never sends:
/// executions without parameter types, COM_STMT_RESET, long data in small pieces.
mod raw {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    pub type Rows = Vec<Vec<Option<String>>>;

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ServerError {
        pub code: u16,
        pub message: String,
    }

    /// A statement parameter.
    pub enum Param {
        Null,
        Int(i64),
        Str(Vec<u8>),
        /// A string sent before with COM_STMT_SEND_LONG_DATA.
        LongData,
    }

    pub struct RawConn {
        stream: TcpStream,
        seq: u8,
    }

    fn lenenc_int(p: &[u8], pos: &mut usize) -> u64 {
        let first = p[*pos];
        *pos += 1;
        let n = match first {
            0xfc => 2,
            0xfd => 3,
            0xfe => 8,
            b => return u64::from(b),
        };
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&p[*pos..*pos + n]);
        *pos += n;
        u64::from_le_bytes(v)
    }

    fn lenenc_str(p: &[u8], pos: &mut usize) -> String {
        let n = lenenc_int(p, pos) as usize;
        let s = String::from_utf8_lossy(&p[*pos..*pos + n]).into_owned();
        *pos += n;
        s
    }

    fn put_lenenc(out: &mut Vec<u8>, n: usize) {
        match n {
            0..=250 => out.push(n as u8),
            251..=0xffff => {
                out.push(0xfc);
                out.extend_from_slice(&(n as u16).to_le_bytes());
            }
            _ => {
                out.push(0xfd);
                out.extend_from_slice(&(n as u32).to_le_bytes()[..3]);
            }
        }
    }

    fn server_error(p: &[u8]) -> ServerError {
        let code = u16::from_le_bytes([p[1], p[2]]);
        let start = if p.get(3) == Some(&b'#') { 9 } else { 3 };
        ServerError {
            code,
            message: String::from_utf8_lossy(&p[start.min(p.len())..]).into_owned(),
        }
    }

    fn is_eof(p: &[u8]) -> bool {
        p.first() == Some(&0xfe) && p.len() < 9
    }

    fn native_token(scramble: &[u8], password: &str) -> Vec<u8> {
        if password.is_empty() {
            return Vec::new();
        }
        let s1 = super::sha1(password.as_bytes());
        let s2 = super::sha1(&s1);
        let s3 = super::sha1(&[scramble, &s2[..]].concat());
        s1.iter().zip(s3).map(|(a, b)| a ^ b).collect()
    }

    impl RawConn {
        /// Logs in with mysql_native_password (no EOF deprecation: the classic framing).
        pub async fn connect(port: u16, user: &str, password: &str, db: &str) -> RawConn {
            let stream = TcpStream::connect(("127.0.0.1", port))
                .await
                .expect("raw connect");
            let mut c = RawConn { stream, seq: 0 };
            let hello = c.read().await;
            assert_eq!(hello[0], 10, "protocol 10 greeting");
            let mut pos = 1 + hello[1..].iter().position(|&b| b == 0).expect("version") + 1;
            pos += 4; // connection id
            let mut scramble = hello[pos..pos + 8].to_vec();
            pos += 8 + 1 + 2 + 1 + 2 + 2; // filler, caps, collation, status, caps
            let auth_len = usize::from(hello[pos]);
            pos += 1 + 10;
            let part2 = auth_len.saturating_sub(8).max(13);
            scramble.extend_from_slice(&hello[pos..pos + part2 - 1]);

            // LONG_PASSWORD, CONNECT_WITH_DB, PROTOCOL_41, TRANSACTIONS, SECURE_CONNECTION,
            // MULTI_RESULTS, PLUGIN_AUTH.
            let caps: u32 = 0x1 | 0x8 | 0x200 | 0x2000 | 0x8000 | 0x2_0000 | 0x8_0000;
            let mut p = caps.to_le_bytes().to_vec();
            p.extend_from_slice(&(16u32 << 20).to_le_bytes());
            p.push(45); // utf8mb4_general_ci
            p.extend_from_slice(&[0; 23]);
            p.extend_from_slice(user.as_bytes());
            p.push(0);
            let token = native_token(&scramble, password);
            p.push(token.len() as u8);
            p.extend_from_slice(&token);
            p.extend_from_slice(db.as_bytes());
            p.push(0);
            p.extend_from_slice(b"mysql_native_password\0");
            c.write(&p).await;
            let mut reply = c.read().await;
            if reply[0] == 0xfe {
                // Auth switch: plugin name, then the new scramble (NUL-terminated).
                let end = 1 + reply[1..].iter().position(|&b| b == 0).expect("plugin");
                assert_eq!(&reply[1..end], b"mysql_native_password");
                let data = &reply[end + 1..];
                let data = data.strip_suffix(&[0]).unwrap_or(data);
                let token = native_token(data, password);
                c.write(&token).await;
                reply = c.read().await;
            }
            assert_eq!(reply[0], 0x00, "login: {:?}", server_error(&reply));
            c
        }

        async fn read(&mut self) -> Vec<u8> {
            let mut out = Vec::new();
            loop {
                let mut h = [0u8; 4];
                self.stream
                    .read_exact(&mut h)
                    .await
                    .expect("read packet header");
                let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
                self.seq = h[3].wrapping_add(1);
                let start = out.len();
                out.resize(start + len, 0);
                self.stream
                    .read_exact(&mut out[start..])
                    .await
                    .expect("read packet");
                if len < 0xff_ffff {
                    return out;
                }
            }
        }

        async fn write(&mut self, payload: &[u8]) {
            assert!(payload.len() < 0xff_ffff, "small packets only");
            let mut p = Vec::with_capacity(payload.len() + 4);
            p.extend_from_slice(&(payload.len() as u32).to_le_bytes()[..3]);
            p.push(self.seq);
            p.extend_from_slice(payload);
            self.stream.write_all(&p).await.expect("write packet");
            self.seq = self.seq.wrapping_add(1);
        }

        async fn command(&mut self, payload: &[u8]) {
            self.seq = 0;
            self.write(payload).await;
        }

        /// A text-protocol query; an OK gives no rows.
        pub async fn query(&mut self, sql: &str) -> Result<Rows, ServerError> {
            self.command(&[&[0x03], sql.as_bytes()].concat()).await;
            self.read_result(false).await
        }

        /// COM_STMT_PREPARE: the statement id and its number of parameters.
        pub async fn prepare(&mut self, sql: &str) -> Result<(u32, u16), ServerError> {
            self.command(&[&[0x16], sql.as_bytes()].concat()).await;
            let first = self.read().await;
            if first[0] == 0xff {
                return Err(server_error(&first));
            }
            assert_eq!(first[0], 0x00, "prepare OK");
            let id = u32::from_le_bytes([first[1], first[2], first[3], first[4]]);
            let columns = u16::from_le_bytes([first[5], first[6]]);
            let params = u16::from_le_bytes([first[7], first[8]]);
            for n in [params, columns] {
                for _ in 0..n {
                    self.read().await;
                }
                if n > 0 {
                    assert!(is_eof(&self.read().await), "EOF after definitions");
                }
            }
            Ok((id, params))
        }

        /// COM_STMT_EXECUTE; `send_types` false omits the parameter types, as clients do
        /// after the first execution.
        pub async fn execute(
            &mut self,
            id: u32,
            params: &[Param],
            send_types: bool,
        ) -> Result<Rows, ServerError> {
            let mut p = vec![0x17];
            p.extend_from_slice(&id.to_le_bytes());
            p.push(0); // no cursor
            p.extend_from_slice(&1u32.to_le_bytes());
            if !params.is_empty() {
                let mut bitmap = vec![0u8; params.len().div_ceil(8)];
                for (i, v) in params.iter().enumerate() {
                    if matches!(v, Param::Null) {
                        bitmap[i / 8] |= 1 << (i % 8);
                    }
                }
                p.extend_from_slice(&bitmap);
                p.push(u8::from(send_types));
                if send_types {
                    for v in params {
                        p.extend_from_slice(match v {
                            Param::Null => &[0x06, 0],
                            Param::Int(_) => &[0x08, 0],
                            Param::Str(_) | Param::LongData => &[0xfd, 0],
                        });
                    }
                }
                for v in params {
                    match v {
                        Param::Int(i) => p.extend_from_slice(&i.to_le_bytes()),
                        Param::Str(s) => {
                            put_lenenc(&mut p, s.len());
                            p.extend_from_slice(s);
                        }
                        Param::Null | Param::LongData => {}
                    }
                }
            }
            self.command(&p).await;
            self.read_result(true).await
        }

        /// COM_STMT_SEND_LONG_DATA: no reply.
        pub async fn send_long_data(&mut self, id: u32, param: u16, data: &[u8]) {
            let mut p = vec![0x18];
            p.extend_from_slice(&id.to_le_bytes());
            p.extend_from_slice(&param.to_le_bytes());
            p.extend_from_slice(data);
            self.command(&p).await;
        }

        /// COM_STMT_RESET.
        pub async fn reset(&mut self, id: u32) -> Result<(), ServerError> {
            let mut p = vec![0x1a];
            p.extend_from_slice(&id.to_le_bytes());
            self.command(&p).await;
            let reply = self.read().await;
            match reply[0] {
                0x00 => Ok(()),
                0xff => Err(server_error(&reply)),
                other => panic!("unexpected reply to COM_STMT_RESET: {other:#x}"),
            }
        }

        /// COM_STMT_CLOSE: no reply.
        pub async fn close(&mut self, id: u32) {
            let mut p = vec![0x19];
            p.extend_from_slice(&id.to_le_bytes());
            self.command(&p).await;
        }

        /// An OK, an error, or one result set (text or binary rows) ending in EOF.
        async fn read_result(&mut self, binary: bool) -> Result<Rows, ServerError> {
            let first = self.read().await;
            match first[0] {
                0x00 => return Ok(Vec::new()),
                0xff => return Err(server_error(&first)),
                _ => {}
            }
            let n = lenenc_int(&first, &mut 0) as usize;
            let mut types = Vec::with_capacity(n);
            for _ in 0..n {
                let def = self.read().await;
                let mut pos = 0;
                for _ in 0..6 {
                    lenenc_str(&def, &mut pos);
                }
                pos += 1 + 2 + 4; // length of the fixed fields, collation, column length
                types.push(def[pos]);
            }
            assert!(is_eof(&self.read().await), "EOF after column definitions");
            let mut rows = Vec::new();
            loop {
                let p = self.read().await;
                if is_eof(&p) {
                    let status = u16::from_le_bytes([p[3], p[4]]);
                    assert_eq!(status & 0x08, 0, "no further result sets expected");
                    return Ok(rows);
                }
                if p[0] == 0xff {
                    return Err(server_error(&p));
                }
                rows.push(if binary {
                    binary_row(&p, &types)
                } else {
                    text_row(&p, n)
                });
            }
        }
    }

    fn text_row(p: &[u8], n: usize) -> Vec<Option<String>> {
        let mut pos = 0;
        (0..n)
            .map(|_| {
                if p[pos] == 0xfb {
                    pos += 1;
                    None
                } else {
                    Some(lenenc_str(p, &mut pos))
                }
            })
            .collect()
    }

    fn binary_row(p: &[u8], types: &[u8]) -> Vec<Option<String>> {
        assert_eq!(p[0], 0x00, "binary row header");
        let bitmap_len = (types.len() + 7 + 2) / 8;
        let bitmap = &p[1..1 + bitmap_len];
        let mut pos = 1 + bitmap_len;
        types
            .iter()
            .enumerate()
            .map(|(i, &t)| {
                let bit = i + 2;
                if bitmap[bit / 8] & (1 << (bit % 8)) != 0 {
                    return None;
                }
                Some(match t {
                    0x08 => {
                        let v = i64::from_le_bytes(p[pos..pos + 8].try_into().unwrap());
                        pos += 8;
                        v.to_string()
                    }
                    0x03 => {
                        let v = i32::from_le_bytes(p[pos..pos + 4].try_into().unwrap());
                        pos += 4;
                        v.to_string()
                    }
                    0x0f | 0xf6 | 0xfc | 0xfd | 0xfe => lenenc_str(p, &mut pos),
                    other => panic!("the raw client does not decode column type {other:#x}"),
                })
            })
            .collect()
    }
}
