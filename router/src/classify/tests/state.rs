//! Pins, session-bound functions, multi-statement texts and referenced tables.

use super::classify;
use crate::classify::{PinReason, StatementKind, TableRef};

use PinReason::*;

#[test]
fn pins_and_unpins() {
    let cases: &[(&str, Option<PinReason>, Option<PinReason>)] = &[
        ("SELECT 1", None, None),
        (
            "CREATE TEMPORARY TABLE t (a INT)",
            Some(TemporaryTable),
            None,
        ),
        (
            "create or replace temporary table t select * from u",
            Some(TemporaryTable),
            None,
        ),
        ("CREATE TABLE t (temporary INT)", None, None),
        ("DROP TEMPORARY TABLE t", None, None),
        ("LOCK TABLES t WRITE", Some(LockTables), None),
        ("LOCK TABLE t READ", Some(LockTables), None),
        ("UNLOCK TABLES", None, Some(LockTables)),
        ("LOCK TABLE t1 WRITE WAIT 31536001", Some(LockTables), None),
        ("BACKUP STAGE START", Some(BackupLock), None),
        ("backup stage block_commit", Some(BackupLock), None),
        ("BACKUP STAGE END", None, Some(BackupLock)),
        ("BACKUP LOCK t1", Some(BackupLock), None),
        ("BACKUP UNLOCK", None, Some(BackupLock)),
        ("XA START 'x'", Some(XaTransaction), None),
        ("xa begin 'x', 'b', 3", Some(XaTransaction), None),
        ("XA END 'x'", None, None),
        ("XA PREPARE 'x'", None, None),
        ("XA COMMIT 'x'", None, Some(XaTransaction)),
        ("XA ROLLBACK 'x'", None, Some(XaTransaction)),
        ("XA RECOVER", None, None),
        ("FLUSH TABLES WITH READ LOCK", Some(LockTables), None),
        ("FLUSH TABLES t1, t2 FOR EXPORT", Some(LockTables), None),
        ("FLUSH TABLES", None, None),
        ("SELECT GET_LOCK('a', 10)", Some(UserLock), None),
        ("DO GET_LOCK('a', 10)", Some(UserLock), None),
        ("SELECT get_lock ('a', 10)", Some(UserLock), None),
        ("SELECT RELEASE_LOCK('a')", None, None),
        ("SELECT RELEASE_ALL_LOCKS()", None, Some(UserLock)),
        (
            "SELECT RELEASE_ALL_LOCKS(), GET_LOCK('b', 1)",
            Some(UserLock),
            None,
        ),
        ("SELECT @x := 1", Some(UserVariableAssignment), None),
        (
            "UPDATE t SET a = (@old := a) + 1",
            Some(UserVariableAssignment),
            None,
        ),
        (
            "SELECT a INTO @x FROM t",
            Some(UserVariableAssignment),
            None,
        ),
        (
            "SELECT a FROM t INTO @x",
            Some(UserVariableAssignment),
            None,
        ),
        (
            "SELECT a FROM t INTO @`quoted var`",
            Some(UserVariableAssignment),
            None,
        ),
        ("SELECT * FROM t INTO OUTFILE '/tmp/x'", None, None),
        ("SELECT @x", None, None),
        ("SET @x = 1", None, None),
        ("SET @x := 'a'", None, None),
        ("SET @x = -1.5, @y = X'0A', @z = NULL", None, None),
        ("SET @x = NOW()", Some(UserVariableAssignment), None),
        ("SET @x = @y", Some(UserVariableAssignment), None),
        (
            "SET @x = CURRENT_TIMESTAMP",
            Some(UserVariableAssignment),
            None,
        ),
        (
            "SET @x = (SELECT MAX(id) FROM t)",
            Some(UserVariableAssignment),
            None,
        ),
        ("SET @x = 1 + 1", Some(UserVariableAssignment), None),
        (
            "SET sql_mode = CONCAT(@@sql_mode, ',STRICT_ALL_TABLES')",
            None,
            None,
        ),
        (
            "SET @x = LAST_INSERT_ID()",
            Some(UserVariableAssignment),
            None,
        ),
        (
            "SET @x = GET_LOCK('a', 1)",
            Some(UserVariableAssignment),
            None,
        ),
        ("SET @x = ", Some(UserVariableAssignment), None),
        ("CALL p(1, @out)", Some(UserVariableAssignment), None),
        ("CALL p(1)", None, None),
        (
            "LOAD DATA INFILE 'f' INTO TABLE t (a, @skip)",
            Some(UserVariableAssignment),
            None,
        ),
        ("PREPARE s FROM 'SELECT ?'", Some(SqlPrepare), None),
        ("EXECUTE s", None, None),
        ("SELECT 1; SELECT 2", Some(MultiStatement), None),
        ("UNLOCK TABLES; SELECT 1", Some(MultiStatement), None),
        (
            "CREATE TEMPORARY TABLE t (a INT); INSERT INTO t VALUES (1)",
            Some(MultiStatement),
            None,
        ),
        // Longest-lasting reason wins.
        (
            "SELECT GET_LOCK('a', 1) INTO @x",
            Some(UserVariableAssignment),
            None,
        ),
        (
            "CREATE TEMPORARY TABLE t SELECT @x := 1 AS a",
            Some(TemporaryTable),
            None,
        ),
    ];
    let mut failures = Vec::new();
    for (sql, pin, unpin) in cases {
        let c = classify(sql);
        if (c.pin, c.unpin) != (*pin, *unpin) {
            failures.push(format!(
                "{sql:?}: got {:?}/{:?}, want {pin:?}/{unpin:?}",
                c.pin, c.unpin
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn session_bound_flags() {
    // (sql, calc_found_rows, uses_session_functions)
    let cases: &[(&str, bool, bool)] = &[
        ("SELECT * FROM t", false, false),
        ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 10", true, false),
        ("SELECT FOUND_ROWS()", false, true),
        ("SELECT LAST_INSERT_ID()", false, true),
        ("select last_insert_id ()", false, true),
        ("INSERT INTO t2 VALUES (LAST_INSERT_ID())", false, true),
        ("SELECT ROW_COUNT()", false, true),
        ("SELECT CONNECTION_ID()", false, true),
        ("SELECT @@identity", false, true),
        ("SELECT @@IDENTITY, @@session.last_insert_id", false, true),
        ("SELECT @@warning_count", false, true),
        ("SELECT LASTVAL(s)", false, true),
        ("SELECT PREVIOUS VALUE FOR s", false, true),
        ("SELECT NEXT VALUE FOR s", false, false),
        ("SHOW WARNINGS", false, true),
        ("SHOW COUNT(*) ERRORS", false, true),
        ("SHOW PROFILE", false, true),
        ("GET DIAGNOSTICS CONDITION 1 @e = MESSAGE_TEXT", false, true),
        ("SELECT found_rows, row_count FROM stats", false, false),
        ("SELECT 'LAST_INSERT_ID()'", false, false),
        ("SELECT @@version, @@sql_mode", false, false),
        (
            "SELECT SQL_CALC_FOUND_ROWS * FROM t; SELECT FOUND_ROWS()",
            true,
            true,
        ),
    ];
    for (sql, calc, session) in cases {
        let c = classify(sql);
        assert_eq!(
            (c.calc_found_rows, c.uses_session_functions),
            (*calc, *session),
            "{sql}"
        );
    }
}

#[test]
fn multi_statement_texts() {
    // (sql, multi, kind)
    let cases: &[(&str, bool, StatementKind)] = &[
        ("SELECT 1", false, StatementKind::Select { locking: false }),
        ("SELECT 1;", false, StatementKind::Select { locking: false }),
        ("SELECT 1 ; ; ", false, StatementKind::Select { locking: false }),
        ("SELECT ';'", false, StatementKind::Select { locking: false }),
        ("SELECT 1 -- ; DELETE FROM t", false, StatementKind::Select { locking: false }),
        ("SELECT 1 /* ; DELETE FROM t */", false, StatementKind::Select { locking: false }),
        // `--` not followed by whitespace is two minus signs, not a comment.
        ("SELECT 1--/**/1; DELETE FROM t", true, StatementKind::Select { locking: true }),
        ("SELECT 1 --\t; DELETE FROM t", false, StatementKind::Select { locking: false }),
        // A multi-statement text that starts with a read is not a plain read.
        ("SELECT 1; SELECT 2", true, StatementKind::Select { locking: true }),
        ("SELECT 1; DELETE FROM t", true, StatementKind::Select { locking: true }),
        ("INSERT INTO t VALUES (1); SELECT LAST_INSERT_ID()", true, StatementKind::Write),
        ("SET NAMES utf8; SET autocommit = 0", true, StatementKind::Set),
        ("BEGIN; UPDATE t SET a = 1; COMMIT", true, StatementKind::Begin),
        ("/*!40101 SET NAMES utf8 */; SELECT 1", true, StatementKind::Set),
        ("CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END", false, StatementKind::Ddl),
        ("CREATE PROCEDURE p() BEGIN SELECT 1; END; CALL p()", true, StatementKind::Ddl),
        ("CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN IF NEW.a < 0 THEN SET NEW.a = 0; END IF; END", false, StatementKind::Ddl),
        ("BEGIN NOT ATOMIC DECLARE x INT; SET x = 1; SELECT x; END", false, StatementKind::Other),
    ];
    for (sql, multi, kind) in cases {
        let c = classify(sql);
        assert_eq!((c.multi, &c.kind), (*multi, kind), "{sql}");
        assert_eq!(c.pin == Some(PinReason::MultiStatement), *multi, "{sql}");
    }
}

fn t(spec: &str) -> TableRef {
    match spec.split_once('.') {
        Some((s, n)) => TableRef {
            schema: Some(s.into()),
            name: n.into(),
        },
        None => TableRef {
            schema: None,
            name: spec.into(),
        },
    }
}

#[test]
fn referenced_tables() {
    let cases: &[(&str, &[&str])] = &[
        ("SELECT 1", &[]),
        ("SELECT 1 FROM DUAL", &[]),
        ("SELECT * FROM t WHERE id = 1", &["t"]),
        ("SELECT * FROM `My DB`.`Orders` o", &["My DB.Orders"]),
        (
            "SELECT * FROM a.t1 JOIN b.t2 ON t1.id = t2.id LEFT JOIN t3 USING (id)",
            &["a.t1", "b.t2", "t3"],
        ),
        ("SELECT * FROM t1, t2 WHERE t1.a = t2.b", &["t1", "t2"]),
        (
            "SELECT * FROM t WHERE a IN (SELECT b FROM u WHERE EXISTS (SELECT 1 FROM v))",
            &["t", "u", "v"],
        ),
        ("SELECT (SELECT MAX(x) FROM u) AS m FROM t", &["u", "t"]),
        ("SELECT * FROM (SELECT * FROM t) AS d", &["t"]),
        (
            "WITH c AS (SELECT * FROM t) SELECT * FROM c JOIN u ON c.id = u.id",
            &["t", "u"],
        ),
        ("SELECT a FROM t UNION SELECT a FROM u", &["t", "u"]),
        (
            "SELECT * FROM t WHERE x = CASE WHEN a THEN (SELECT 1 FROM u) END",
            &["t", "u"],
        ),
        (
            "SELECT * FROM t WHERE COALESCE((SELECT 1 FROM u), 0) = 1",
            &["t", "u"],
        ),
        ("INSERT INTO d.t (a) VALUES (1)", &["d.t"]),
        ("INSERT INTO t SELECT * FROM u", &["t", "u"]),
        ("REPLACE INTO t VALUES (1)", &["t"]),
        (
            "UPDATE t1 JOIN t2 ON t1.id = t2.id SET t1.a = 1 WHERE t2.b IN (SELECT b FROM t3)",
            &["t1", "t2", "t3"],
        ),
        ("DELETE FROM t WHERE id IN (SELECT id FROM u)", &["t", "u"]),
        ("DELETE t1 FROM t1 JOIN t2 ON t1.id = t2.id", &["t1", "t2"]),
        ("CREATE TABLE t2 AS SELECT * FROM t1", &["t2", "t1"]),
        ("CREATE TABLE t2 LIKE t1", &["t2", "t1"]),
        ("CREATE INDEX i ON t (a)", &["t"]),
        ("ALTER TABLE d.t ADD COLUMN b INT", &["d.t"]),
        ("DROP TABLE IF EXISTS a.t, b", &["a.t", "b"]),
        ("TRUNCATE TABLE t", &["t"]),
        ("RENAME TABLE a TO b", &["a", "b"]),
        ("LOCK TABLES t WRITE, u READ", &["t", "u"]),
        ("DESCRIBE d.t", &["d.t"]),
        ("EXPLAIN SELECT * FROM t", &["t"]),
        ("SELECT * FROM t FOR UPDATE; SELECT * FROM u", &["t", "u"]),
        ("SELECT * FROM t AS a JOIN t AS b ON a.x = b.y", &["t"]),
    ];
    for (sql, want) in cases {
        let want: Vec<TableRef> = want.iter().map(|s| t(s)).collect();
        assert_eq!(classify(sql).tables, want, "{sql}");
    }
}

#[test]
fn replica_safety() {
    let cases: &[(&str, bool)] = &[
        ("SELECT * FROM t WHERE id = 1", true),
        ("SELECT * FROM t FOR UPDATE", false),
        ("SELECT LAST_INSERT_ID()", false),
        ("SELECT SQL_CALC_FOUND_ROWS * FROM t", false),
        ("SELECT GET_LOCK('a', 1)", false),
        ("SELECT 1; SELECT 2", false),
        ("SHOW TABLES", false),
        ("INSERT INTO t VALUES (1)", false),
        (
            "SET STATEMENT max_statement_time=1 FOR SELECT * FROM t",
            true,
        ),
    ];
    for (sql, safe) in cases {
        assert_eq!(classify(sql).is_replica_safe(), *safe, "{sql}");
    }
}
