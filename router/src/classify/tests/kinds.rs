//! Statement kinds, and where sqlparser 0.64 gives up.

use super::classify;
use crate::classify::lexer::{split_statements, Lexer};
use crate::classify::scan;
use crate::classify::{normalize, StatementKind};

const READ: StatementKind = StatementKind::Select { locking: false };
const LOCKING: StatementKind = StatementKind::Select { locking: true };
const WRITE: StatementKind = StatementKind::Write;
const DDL: StatementKind = StatementKind::Ddl;
const SET: StatementKind = StatementKind::Set;
const SHOW: StatementKind = StatementKind::Show;
const OTHER: StatementKind = StatementKind::Other;

/// Every kind, with the forms applications and tools actually send.
const KINDS: &[(&str, StatementKind)] = &[
    // Reads.
    ("SELECT 1", READ),
    ("select * from t where id = 1", READ),
    ("SELECT a FROM d.t AS x JOIN e.u y ON x.id = y.id", READ),
    ("(SELECT 1) UNION (SELECT 2)", READ),
    ("WITH c AS (SELECT 1) SELECT * FROM c", READ),
    (
        "WITH RECURSIVE c (n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c) SELECT * FROM c",
        READ,
    ),
    ("VALUES (1), (2)", READ),
    ("TABLE t", READ),
    ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", READ),
    ("SELECT FOUND_ROWS()", READ),
    ("SELECT LAST_INSERT_ID()", READ),
    ("SELECT /*+ MAX_EXECUTION_TIME(1000) */ * FROM t", READ),
    ("SELECT /*!40001 SQL_NO_CACHE */ * FROM t", READ),
    ("SELECT * FROM t WHERE note = 'FOR UPDATE'", READ),
    ("SELECT `for`, `update` FROM t", READ),
    ("SELECT * FROM t WHERE a IN (SELECT b FROM u)", READ),
    ("SELECT @x", READ),
    ("SELECT @x = 1", READ),
    // Reads that must go to the leader.
    ("SELECT * FROM t WHERE id = 1 FOR UPDATE", LOCKING),
    ("SELECT * FROM t FOR UPDATE SKIP LOCKED", LOCKING),
    ("SELECT * FROM t FOR UPDATE NOWAIT", LOCKING),
    ("SELECT * FROM t FOR UPDATE WAIT 5", LOCKING),
    ("SELECT * FROM t FOR SHARE", LOCKING),
    ("SELECT * FROM t LOCK IN SHARE MODE", LOCKING),
    ("select * from t lock in share mode", LOCKING),
    ("SELECT 1 UNION ALL SELECT 2 FOR UPDATE", LOCKING),
    (
        "SELECT * FROM t WHERE a IN (SELECT b FROM u FOR UPDATE)",
        LOCKING,
    ),
    ("SELECT a INTO @x FROM t", LOCKING),
    ("SELECT a FROM t INTO @x", LOCKING),
    ("SELECT * FROM t INTO OUTFILE '/tmp/x'", LOCKING),
    ("SELECT * FROM t INTO DUMPFILE '/tmp/x'", LOCKING),
    ("SELECT @x := 1", LOCKING),
    ("SELECT @rn := @rn + 1 AS rn, a FROM t", LOCKING),
    ("SELECT GET_LOCK('a', 10)", LOCKING),
    ("SELECT RELEASE_LOCK('a')", LOCKING),
    ("SELECT RELEASE_ALL_LOCKS()", LOCKING),
    ("SELECT IS_FREE_LOCK('a'), IS_USED_LOCK('b')", LOCKING),
    ("SELECT NEXTVAL(s)", LOCKING),
    ("SELECT SETVAL(s, 10)", LOCKING),
    ("SELECT LASTVAL(s)", LOCKING),
    ("SELECT NEXT VALUE FOR s", LOCKING),
    ("SELECT PREVIOUS VALUE FOR s", LOCKING),
    ("SELECT /*!50000 1 FOR UPDATE */", LOCKING),
    ("WITH c AS (SELECT 1) SELECT * FROM c FOR UPDATE", LOCKING),
    // Writes.
    ("INSERT INTO t VALUES (1, 'a')", WRITE),
    ("INSERT INTO t SET a = 1", WRITE),
    ("INSERT IGNORE INTO t VALUES (1)", WRITE),
    ("INSERT INTO t SELECT * FROM u", WRITE),
    (
        "INSERT INTO t VALUES (1) ON DUPLICATE KEY UPDATE a = VALUES(a)",
        WRITE,
    ),
    ("REPLACE INTO t VALUES (1)", WRITE),
    ("UPDATE t SET a = 1 WHERE id = 2", WRITE),
    ("UPDATE t1 JOIN t2 ON t1.id = t2.id SET t1.a = 1", WRITE),
    ("DELETE FROM t WHERE id = 1", WRITE),
    ("DELETE t1 FROM t1 JOIN t2 ON t1.id = t2.id", WRITE),
    (
        "WITH c AS (SELECT 1) DELETE FROM t WHERE id IN (SELECT * FROM c)",
        WRITE,
    ),
    ("WITH c AS (SELECT 1) UPDATE t SET a = 1", WRITE),
    ("LOAD DATA INFILE 'x' INTO TABLE t", WRITE),
    (
        "LOAD DATA LOCAL INFILE 'x' INTO TABLE t (a, @b) SET c = @b",
        WRITE,
    ),
    ("LOAD XML INFILE 'x' INTO TABLE t", WRITE),
    ("CALL p(1)", WRITE),
    ("TRUNCATE TABLE t", WRITE),
    ("TRUNCATE t", WRITE),
    // DDL.
    (
        "CREATE TABLE t (a INT, b VARCHAR(255) COMMENT 'x') ENGINE=InnoDB",
        DDL,
    ),
    ("CREATE TEMPORARY TABLE t (a INT)", DDL),
    ("CREATE OR REPLACE TEMPORARY TABLE t (a INT)", DDL),
    ("CREATE TABLE t2 AS SELECT * FROM t1", DDL),
    ("CREATE TABLE t2 LIKE t1", DDL),
    ("CREATE UNIQUE INDEX i ON t (a)", DDL),
    (
        "CREATE OR REPLACE ALGORITHM=MERGE DEFINER=`u`@`%` SQL SECURITY INVOKER VIEW v AS SELECT 1",
        DDL,
    ),
    ("CREATE DATABASE d", DDL),
    ("CREATE SCHEMA IF NOT EXISTS d", DDL),
    ("CREATE SEQUENCE s", DDL),
    ("CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END", DDL),
    (
        "CREATE DEFINER=CURRENT_USER FUNCTION f() RETURNS INT RETURN 1",
        DDL,
    ),
    (
        "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.a = 1",
        DDL,
    ),
    (
        "CREATE EVENT e ON SCHEDULE EVERY 1 DAY DO DELETE FROM t",
        DDL,
    ),
    ("ALTER TABLE t ADD COLUMN b INT", DDL),
    ("ALTER TABLE t ENGINE=InnoDB", DDL),
    ("ALTER ONLINE TABLE t ADD INDEX (a)", DDL),
    ("DROP TABLE IF EXISTS a.t, b", DDL),
    ("DROP TEMPORARY TABLE t", DDL),
    ("DROP INDEX i ON t", DDL),
    ("DROP VIEW v", DDL),
    ("DROP DATABASE d", DDL),
    ("DROP PROCEDURE p", DDL),
    ("RENAME TABLE a TO b, c TO d", DDL),
    // SET (the router parses the raw text itself).
    ("SET autocommit = 0", SET),
    ("SET NAMES utf8mb4", SET),
    ("SET @x = 1", SET),
    ("SET @x := NOW()", SET),
    (
        "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
        SET,
    ),
    ("SET GLOBAL max_connections = 10", SET),
    ("SET PASSWORD = 'x'", SET),
    ("SET CHARACTER SET utf8", SET),
    ("SET STATEMENT max_statement_time = 1", SET),
    // MariaDB's per-statement SET is classified as the statement it wraps.
    (
        "SET STATEMENT max_statement_time = 1 FOR SELECT * FROM t",
        READ,
    ),
    (
        "SET STATEMENT max_statement_time = 1, sql_mode = '' FOR UPDATE t SET a = 1",
        WRITE,
    ),
    (
        "SET STATEMENT lock_wait_timeout = 1 FOR SELECT 1 FOR UPDATE",
        LOCKING,
    ),
    // Transactions.
    ("BEGIN", StatementKind::Begin),
    ("begin work", StatementKind::Begin),
    ("START TRANSACTION", StatementKind::Begin),
    ("START TRANSACTION READ ONLY", StatementKind::Begin),
    (
        "START TRANSACTION WITH CONSISTENT SNAPSHOT",
        StatementKind::Begin,
    ),
    ("COMMIT", StatementKind::Commit),
    ("COMMIT WORK AND NO CHAIN", StatementKind::Commit),
    ("ROLLBACK", StatementKind::Rollback),
    ("ROLLBACK WORK", StatementKind::Rollback),
    ("ROLLBACK TO SAVEPOINT s", OTHER),
    ("ROLLBACK WORK TO s", OTHER),
    ("SAVEPOINT s", OTHER),
    ("RELEASE SAVEPOINT s", OTHER),
    ("XA START 'x'", StatementKind::Xa),
    ("XA END 'x'", StatementKind::Xa),
    ("XA PREPARE 'x'", StatementKind::Xa),
    ("XA COMMIT 'x'", StatementKind::Xa),
    ("XA ROLLBACK 'x'", StatementKind::Xa),
    ("XA RECOVER", StatementKind::Xa),
    // Locks.
    ("LOCK TABLES t READ", StatementKind::LockTables),
    (
        "LOCK TABLES t WRITE, u READ LOCAL",
        StatementKind::LockTables,
    ),
    ("LOCK TABLE t WRITE", StatementKind::LockTables),
    ("UNLOCK TABLES", StatementKind::UnlockTables),
    ("UNLOCK TABLE", StatementKind::UnlockTables),
    // Metadata reads.
    ("SHOW TABLES", SHOW),
    ("SHOW FULL TABLES FROM d", SHOW),
    ("SHOW VARIABLES LIKE 'x'", SHOW),
    ("SHOW CREATE TABLE t", SHOW),
    ("SHOW WARNINGS", SHOW),
    ("SHOW SLAVE STATUS", SHOW),
    ("SHOW INDEX FROM t", SHOW),
    ("DESCRIBE t", SHOW),
    ("DESC t", SHOW),
    ("EXPLAIN SELECT 1", SHOW),
    ("EXPLAIN FORMAT=JSON SELECT 1", SHOW),
    ("EXPLAIN UPDATE t SET a = 1", SHOW),
    ("HELP 'contents'", SHOW),
    ("EXPLAIN ANALYZE SELECT 1", OTHER),
    ("EXPLAIN FOR CONNECTION 12", OTHER),
    // Everything else goes to the leader.
    ("DO 1", OTHER),
    ("DO GET_LOCK('a', 1)", OTHER),
    ("KILL 1", OTHER),
    ("KILL QUERY 1", OTHER),
    ("FLUSH TABLES", OTHER),
    ("FLUSH TABLES WITH READ LOCK", OTHER),
    ("GRANT SELECT ON d.* TO u", OTHER),
    ("REVOKE SELECT ON d.* FROM u", OTHER),
    ("CREATE USER 'u'@'h' IDENTIFIED BY 'p'", OTHER),
    ("CREATE OR REPLACE USER u", OTHER),
    ("ALTER USER u IDENTIFIED BY 'x'", OTHER),
    ("DROP USER u", OTHER),
    ("CREATE ROLE r", OTHER),
    ("DROP ROLE r", OTHER),
    ("RENAME USER a TO b", OTHER),
    ("PREPARE s FROM 'SELECT 1'", OTHER),
    ("EXECUTE s USING @a", OTHER),
    ("DEALLOCATE PREPARE s", OTHER),
    ("DROP PREPARE s", OTHER),
    ("ANALYZE TABLE t", OTHER),
    ("OPTIMIZE TABLE t", OTHER),
    ("CHECK TABLE t", OTHER),
    ("REPAIR TABLE t", OTHER),
    ("CHECKSUM TABLE t", OTHER),
    ("HANDLER t OPEN", OTHER),
    ("BEGIN NOT ATOMIC SELECT 1; END", OTHER),
    ("GET DIAGNOSTICS @a = NUMBER", OTHER),
    ("SIGNAL SQLSTATE '45000'", OTHER),
    ("INSTALL PLUGIN x SONAME 'y'", OTHER),
    ("CHANGE MASTER TO MASTER_HOST='x'", OTHER),
    ("START SLAVE", OTHER),
    ("STOP SLAVE", OTHER),
    ("RESET MASTER", OTHER),
    ("PURGE BINARY LOGS TO 'x'", OTHER),
    ("BACKUP STAGE START", OTHER),
    ("LOAD INDEX INTO CACHE t", OTHER),
    ("LOCK INSTANCE FOR BACKUP", OTHER),
    ("", OTHER),
    ("/* only a comment */", OTHER),
    (";", OTHER),
    ("garbage words here", OTHER),
];

#[test]
fn kinds() {
    let mut failures = Vec::new();
    for (sql, want) in KINDS {
        let got = classify(sql).kind;
        if got != *want {
            failures.push(format!("{sql:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn use_names_are_unquoted() {
    let cases = [
        ("USE db", "db"),
        ("use `my db`", "my db"),
        ("USE `a``b`;", "a`b"),
        ("/* c */ USE Db1 -- x", "Db1"),
        ("USE db2", "db2"),
    ];
    for (sql, db) in cases {
        assert_eq!(classify(sql).kind, StatementKind::Use(db.into()), "{sql}");
    }
    assert_eq!(classify("USE").kind, OTHER);
}

/// Valid MariaDB/MySQL that sqlparser 0.64 (MySqlDialect) rejects: the fallback lexer
/// must still get the kind right.
#[test]
fn unparsed_statements_use_the_fallback() {
    let cases: &[(&str, StatementKind)] = &[
        ("SELECT * FROM t LOCK IN SHARE MODE", LOCKING),
        ("SELECT a FROM t INTO @x", LOCKING),
        ("SELECT * FROM t INTO OUTFILE '/tmp/x'", LOCKING),
        ("SELECT NEXT VALUE FOR s", LOCKING),
        ("SELECT 1 UNION ALL SELECT 2 FOR UPDATE", LOCKING),
        ("SELECT * FROM t FOR UPDATE WAIT 5", LOCKING),
        ("SELECT * FROM t1 LEFT JOIN (t2, t3) ON 1", READ),
        ("TABLE t", READ),
        ("LOAD DATA INFILE 'x' INTO TABLE t", WRITE),
        ("LOAD XML INFILE 'x' INTO TABLE t", WRITE),
        ("XA START 'x'", StatementKind::Xa),
        ("XA RECOVER", StatementKind::Xa),
        ("DO 1", OTHER),
        ("HELP 'x'", SHOW),
        ("LOCK TABLE t WRITE", StatementKind::LockTables),
        ("UNLOCK TABLE", StatementKind::UnlockTables),
        (
            "START TRANSACTION WITH CONSISTENT SNAPSHOT",
            StatementKind::Begin,
        ),
        ("ALTER TABLE t ENGINE=InnoDB", DDL),
        ("CREATE PROCEDURE p() BEGIN SELECT 1; END", DDL),
        ("CREATE FUNCTION f() RETURNS INT RETURN 1", DDL),
        ("CREATE USER 'u'@'h' IDENTIFIED BY 'p'", OTHER),
        ("DROP PREPARE s", OTHER),
        ("PREPARE s FROM 'SELECT 1'", OTHER),
        ("SET @x := 1", SET),
        ("SET CHARACTER SET utf8", SET),
        ("SET @`a b` = 1", SET),
        ("BEGIN NOT ATOMIC SELECT 1; END", OTHER),
        ("OPTIMIZE TABLE t", OTHER),
        ("HANDLER t OPEN", OTHER),
    ];
    for (sql, want) in cases {
        let c = classify(sql);
        assert!(!c.parsed, "sqlparser now parses {sql:?}: move it to KINDS");
        assert_eq!(c.kind, *want, "{sql}");
        assert!(c.tables.is_empty(), "{sql}");
    }
}

#[test]
fn parsed_statements_are_marked_parsed() {
    for sql in [
        "SELECT * FROM t WHERE id = 1",
        "SELECT CAST(a AS CHAR(10)) FROM t WHERE d > DATE '2024-01-01'",
        "SELECT a AS 'alias', GROUP_CONCAT(b SEPARATOR ',') FROM t GROUP BY a",
        "INSERT INTO t (a, b) VALUES (1, 'x'), (2, 'y')",
        "CREATE TABLE t (a DECIMAL(10,2) DEFAULT 0 COMMENT 'money') COMMENT='t'",
        "UPDATE t SET a = a + 1 WHERE id = 3 LIMIT 1",
        "SELECT 'a' 'b'",
        "SHOW VARIABLES LIKE 'wait%'",
        "SET NAMES 'utf8mb4' COLLATE 'utf8mb4_bin'",
    ] {
        assert!(classify(sql).parsed, "{sql}");
    }
}

/// When sqlparser parses a statement, the fallback scan must agree with it: the
/// fallback decides alone for the statements sqlparser rejects.
#[test]
fn fallback_agrees_with_sqlparser() {
    let mut failures = Vec::new();
    for (sql, _) in KINDS {
        let c = classify(sql);
        if !c.parsed {
            continue;
        }
        let key = normalize(sql);
        let toks: Vec<_> = Lexer::new(&key).collect();
        let Some(first) = split_statements(&toks).first().copied() else {
            continue;
        };
        let scanned = scan::scan(scan::effective(first)).kind;
        if scanned.as_ref() != Some(&c.kind) {
            failures.push(format!("{sql:?}: sqlparser {:?}, scan {scanned:?}", c.kind));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn comments_whitespace_and_semicolons_do_not_change_the_result() {
    let wrappers: &[(&str, &str)] = &[
        ("", ""),
        ("  \n\t", " \n"),
        ("/* leading */ ", ";"),
        ("-- line comment\n", " ; "),
        ("# hash comment\n", ";;"),
        ("/* a */ /* b */\n", " -- trailing"),
        ("/*+ not a hint here */ ", " /* trailing */ ;"),
    ];
    for (sql, _) in KINDS {
        if sql.is_empty() || sql.trim_end().ends_with(';') {
            continue;
        }
        let base = classify(sql);
        for (pre, post) in wrappers {
            let wrapped = format!("{pre}{sql}{post}");
            assert_eq!(classify(&wrapped), base, "{wrapped:?}");
        }
    }
}
