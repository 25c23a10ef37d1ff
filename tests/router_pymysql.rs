//! PyMySQL through the router against PyMySQL directly on the leader: the comparison itself
//! is `tests/py/types_roundtrip.py`; this test sets up the database it reads and runs it.

mod common;

use common::{run_program, TestEnv};
use mysql_async::prelude::*;
use mysql_async::Value;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/types_roundtrip.py");

/// Large enough for the 17 MB value.
const BIG_PACKET: u64 = 64 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pymysql_sees_the_same_through_the_router_as_directly() {
    let (code, _, err) = run_program("python3", &["-c", "import pymysql"], None);
    assert_eq!(
        code, 0,
        "PyMySQL is missing: python3 -m pip install PyMySQL (or run scripts/install-deps)\n{err}"
    );

    let env = TestEnv::start(1, 0).await;
    let leader = env.leader_port("c1");
    // Before anything connects: a session keeps the max_allowed_packet it started with.
    let mut admin = env.admin_conn(leader).await;
    admin
        .query_drop(format!("SET GLOBAL max_allowed_packet = {BIG_PACKET}"))
        .await
        .unwrap();
    let mut direct = env.direct_conn(leader, None).await;
    direct
        .query_drop(
            "CREATE DATABASE pydb; CREATE DATABASE pyother; USE pydb;
             CREATE TABLE types (
               id INT NOT NULL PRIMARY KEY,
               ti TINYINT, tiu TINYINT UNSIGNED, si SMALLINT, siu SMALLINT UNSIGNED,
               mi MEDIUMINT, miu MEDIUMINT UNSIGNED, i INT, iu INT UNSIGNED,
               bi BIGINT, biu BIGINT UNSIGNED, de DECIMAL(20,6), f FLOAT, d DOUBLE, b BIT(12),
               dt DATE, tm TIME(6), dtm DATETIME(6), ts TIMESTAMP(6) NULL, y YEAR,
               c CHAR(10), vc VARCHAR(100), bn BINARY(8), vb VARBINARY(100),
               tt TINYTEXT, tx TEXT, mt MEDIUMTEXT, lt LONGTEXT,
               tb TINYBLOB, bl BLOB, mb MEDIUMBLOB, lb LONGBLOB,
               e ENUM('red','green','blue'), s SET('a','b','c'), j JSON
             ) DEFAULT CHARSET = utf8mb4;
             CREATE TABLE many_router (id INT AUTO_INCREMENT PRIMARY KEY, name VARCHAR(50),
               amount DECIMAL(10,2), at DATETIME);
             CREATE TABLE many_direct LIKE many_router;
             CREATE TABLE tx (id INT AUTO_INCREMENT PRIMARY KEY, via VARCHAR(10), v INT);
             CREATE PROCEDURE two_sets(IN n INT) BEGIN
               SELECT n AS n, 'first' AS which;
               SELECT id, vc FROM types ORDER BY id LIMIT n;
             END;
             CREATE TABLE pyother.marker (x INT); INSERT INTO pyother.marker VALUES (1);",
        )
        .await
        .unwrap();
    let typical = "INSERT INTO types VALUES (1, -5, 200, -30000, 60000, -8000000, 16000000, \
        -2000000000, 4000000000, -9000000000000000000, 18446744073709551615, \
        12345678901234.123456, 1.5, -2.718281828459045, b'101010111100', '2024-02-29', \
        '12:34:56.789012', '2023-12-31 23:59:58.123456', '2021-06-01 12:00:00.5', 2155, \
        'ÄÖÜ✓', 'héllo wörld — 日本語 🎉🦀', X'0001FEFF', X'0062696EFF', 'tiny ✓', \
        'text 🌍 ''quoted'' \\\\ backslash', REPEAT('medium ', 1000), REPEAT('long 🦀 ', 5000), \
        X'000102FF', REPEAT(X'00FF', 500), REPEAT(X'01', 70000), REPEAT(X'AB', 100000), \
        'green', 'a,c', '{\"a\": [1, 2.5, \"ü\"], \"emoji\": \"🚀\"}')";
    let extremes = "INSERT INTO types VALUES (2, -128, 0, -32768, 65535, -8388608, 16777215, \
        -2147483648, 4294967295, -9223372036854775808, 0, -99999999999999.999999, -3.25e10, \
        1.7976931348623157e308, b'111111111111', '1000-01-01', '-838:59:59', \
        '9999-12-31 23:59:59.999999', '1970-01-02 00:00:00.000001', 1901, '', 'x', '', '', \
        '', '', '', '', '', '', X'00', X'FFFFFF', 'blue', 'a,b,c', '[]')";
    direct.query_drop(typical).await.unwrap();
    direct.query_drop(extremes).await.unwrap();
    direct
        .query_drop("INSERT INTO types (id) VALUES (3)")
        .await
        .unwrap();
    let medium: Vec<u8> = (0..1 << 20).map(|i| (i % 253) as u8).collect();
    let huge: Vec<u8> = (0..(17 << 20) + 5).map(|i| i as u8).collect();
    direct
        .exec_drop(
            "INSERT INTO types (id, mb, lb, lt) VALUES (4, ?, ?, REPEAT('ü', 600000))",
            (Value::Bytes(medium), Value::Bytes(huge)),
        )
        .await
        .unwrap();
    direct
        .query_drop(
            "INSERT INTO types (id, vc, c, e, s, j, y, dt) \
             VALUES (5, 'Grüße, 你好, שלום', 'ñ', 'red', '', NULL, 0, '2000-01-01')",
        )
        .await
        .unwrap();

    let router = env.router_port().to_string();
    let leader_arg = leader.to_string();
    let (code, out, err) = tokio::task::spawn_blocking(move || {
        run_program("python3", &[SCRIPT, &router, &leader_arg, "pydb"], None)
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "the script found differences:\n{out}\n{err}");
    let last = out.lines().last().unwrap_or_default();
    let passed: usize = last
        .strip_prefix("pymysql: ")
        .and_then(|rest| rest.strip_suffix(" checks passed"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `pymysql: N checks passed` line:\n{out}\n{err}"));
    assert!(passed >= 50, "only {passed} checks ran:\n{out}");
    drop((direct, admin));
    env.stop().await;
}
