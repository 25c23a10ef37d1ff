//! The `SET` parser.

use crate::classify::{parse_set, SetItem, SetParseError, SetValue, TxScope};

fn lit(v: &str) -> SetValue {
    SetValue::Literal(v.into())
}

fn expr(v: &str) -> SetValue {
    SetValue::Expression(v.into())
}

fn session(name: &str, value: SetValue) -> SetItem {
    SetItem::Session {
        name: name.into(),
        value,
    }
}

fn user(name: &str, value: SetValue) -> SetItem {
    SetItem::User {
        name: name.into(),
        value,
    }
}

fn global(name: &str) -> SetItem {
    SetItem::Global { name: name.into() }
}

fn names(charset: &str, collation: Option<&str>) -> SetItem {
    SetItem::Names {
        charset: charset.into(),
        collation: collation.map(Into::into),
    }
}

#[test]
fn set_statements() {
    let cases: Vec<(&str, Vec<SetItem>)> = vec![
        ("SET autocommit=0", vec![session("autocommit", lit("0"))]),
        ("set AUTOCOMMIT = 1;", vec![session("autocommit", lit("1"))]),
        (
            "SET SESSION sql_mode = 'STRICT_TRANS_TABLES,NO_ZERO_DATE'",
            vec![session(
                "sql_mode",
                lit("'STRICT_TRANS_TABLES,NO_ZERO_DATE'"),
            )],
        ),
        (
            "SET LOCAL wait_timeout = 60",
            vec![session("wait_timeout", lit("60"))],
        ),
        (
            "SET @@wait_timeout = 60",
            vec![session("wait_timeout", lit("60"))],
        ),
        (
            "SET @@SESSION.Wait_Timeout=60",
            vec![session("wait_timeout", lit("60"))],
        ),
        (
            "SET @@local.time_zone = '+00:00'",
            vec![session("time_zone", lit("'+00:00'"))],
        ),
        (
            "SET sql_mode = STRICT_TRANS_TABLES",
            vec![session("sql_mode", lit("STRICT_TRANS_TABLES"))],
        ),
        (
            "SET sql_mode = DEFAULT",
            vec![session("sql_mode", SetValue::Default)],
        ),
        (
            "SET sql_mode = 'DEFAULT'",
            vec![session("sql_mode", lit("'DEFAULT'"))],
        ),
        (
            "SET unique_checks = OFF, foreign_key_checks = ON",
            vec![
                session("unique_checks", lit("OFF")),
                session("foreign_key_checks", lit("ON")),
            ],
        ),
        (
            "SET sql_log_bin = TRUE",
            vec![session("sql_log_bin", lit("TRUE"))],
        ),
        (
            "SET character_set_results = NULL",
            vec![session("character_set_results", lit("NULL"))],
        ),
        (
            "SET max_join_size = -1",
            vec![session("max_join_size", lit("-1"))],
        ),
        (
            "SET long_query_time = +1.5e0",
            vec![session("long_query_time", lit("+1.5e0"))],
        ),
        ("SET `sql_mode` = ''", vec![session("sql_mode", lit("''"))]),
        (
            "SET sql_mode = CONCAT(@@sql_mode, ',NO_ZERO_DATE')",
            vec![session(
                "sql_mode",
                expr("CONCAT(@@sql_mode, ',NO_ZERO_DATE')"),
            )],
        ),
        (
            "SET keycache1.key_buffer_size = 1024",
            vec![session("keycache1.key_buffer_size", lit("1024"))],
        ),
        // User variables.
        ("SET @x = 1", vec![user("x", lit("1"))]),
        ("SET @x := 1", vec![user("x", lit("1"))]),
        (
            "SET @Mixed_Case = 'v'",
            vec![user("Mixed_Case", lit("'v'"))],
        ),
        (
            "SET @`a b` = 1, @'c' = 2, @\"d\" = 3",
            vec![
                user("a b", lit("1")),
                user("c", lit("2")),
                user("d", lit("3")),
            ],
        ),
        (
            "SET @x = _utf8mb4'caf\u{e9}' , @y = X'0A'",
            vec![
                user("x", lit("_utf8mb4'caf\u{e9}'")),
                user("y", lit("X'0A'")),
            ],
        ),
        ("SET @x = NOW()", vec![user("x", expr("NOW()"))]),
        (
            "SET @x = CURRENT_TIMESTAMP",
            vec![user("x", expr("CURRENT_TIMESTAMP"))],
        ),
        ("SET @x = @y", vec![user("x", expr("@y"))]),
        (
            "SET @x = (SELECT a, b FROM t LIMIT 1)",
            vec![user("x", expr("(SELECT a, b FROM t LIMIT 1)"))],
        ),
        ("SET @x = 1 /* why */ + 2", vec![user("x", expr("1 + 2"))]),
        ("SET @x = 'a' 'b'", vec![user("x", expr("'a' 'b'"))]),
        // Strings with commas and escaped quotes stay one value.
        (
            "SET a=1, @b='x,y', SESSION c=DEFAULT",
            vec![
                session("a", lit("1")),
                user("b", lit("'x,y'")),
                session("c", SetValue::Default),
            ],
        ),
        (
            "SET @s = 'it''s, \\'quoted\\''",
            vec![user("s", lit("'it''s, \\'quoted\\''"))],
        ),
        (
            "SET @s = \"a\\\",b\", @t = 2",
            vec![user("s", lit("\"a\\\",b\"")), user("t", lit("2"))],
        ),
        // Odd spacing, comments, case.
        (
            "  SET/*c*/@x=1,@@session.autocommit=0",
            vec![user("x", lit("1")), session("autocommit", lit("0"))],
        ),
        (
            "set\n\tsession\n\tsql_mode\n=\n'x'",
            vec![session("sql_mode", lit("'x'"))],
        ),
        ("-- why\nSET @x = 1 # trailing", vec![user("x", lit("1"))]),
        (
            "/*!40101 SET @OLD_CHARACTER_SET_CLIENT=@@CHARACTER_SET_CLIENT */",
            vec![user(
                "OLD_CHARACTER_SET_CLIENT",
                expr("@@CHARACTER_SET_CLIENT"),
            )],
        ),
        // Global scope carries over to later assignments until SESSION.
        (
            "SET GLOBAL max_connections = 10",
            vec![global("max_connections")],
        ),
        (
            "SET GLOBAL a = 1, b = 2, SESSION c = 3, d = 4",
            vec![
                global("a"),
                global("b"),
                session("c", lit("3")),
                session("d", lit("4")),
            ],
        ),
        (
            "SET @@global.read_only = 1, @@GLOBAL.Sync_Binlog = 0",
            vec![global("read_only"), global("sync_binlog")],
        ),
        (
            "SET PERSIST max_connections = 10",
            vec![global("max_connections")],
        ),
        // Character sets.
        ("SET NAMES utf8mb4", vec![names("utf8mb4", None)]),
        (
            "SET NAMES 'UTF8MB4' COLLATE 'utf8mb4_unicode_ci'",
            vec![names("utf8mb4", Some("utf8mb4_unicode_ci"))],
        ),
        (
            "SET NAMES utf8mb4 COLLATE utf8mb4_bin, @x = 1",
            vec![names("utf8mb4", Some("utf8mb4_bin")), user("x", lit("1"))],
        ),
        ("SET NAMES DEFAULT", vec![names("default", None)]),
        ("/*!40101 SET NAMES utf8 */;", vec![names("utf8", None)]),
        (
            "SET CHARACTER SET utf8",
            vec![SetItem::CharacterSet {
                charset: "utf8".into(),
            }],
        ),
        (
            "SET CHARSET 'latin1'",
            vec![SetItem::CharacterSet {
                charset: "latin1".into(),
            }],
        ),
        (
            "SET CHARACTER SET DEFAULT",
            vec![SetItem::CharacterSet {
                charset: "default".into(),
            }],
        ),
        // Transactions.
        (
            "SET TRANSACTION ISOLATION LEVEL READ COMMITTED",
            vec![SetItem::Transaction {
                scope: TxScope::Next,
            }],
        ),
        (
            "SET TRANSACTION READ ONLY",
            vec![SetItem::Transaction {
                scope: TxScope::Next,
            }],
        ),
        (
            "SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE",
            vec![SetItem::Transaction {
                scope: TxScope::Session,
            }],
        ),
        (
            "SET LOCAL TRANSACTION READ ONLY",
            vec![SetItem::Transaction {
                scope: TxScope::Session,
            }],
        ),
        (
            "SET GLOBAL TRANSACTION ISOLATION LEVEL REPEATABLE READ",
            vec![SetItem::Transaction {
                scope: TxScope::Global,
            }],
        ),
        (
            "SET transaction_isolation = 'READ-COMMITTED'",
            vec![session("transaction_isolation", lit("'READ-COMMITTED'"))],
        ),
        (
            "SET @@transaction_read_only = 1",
            vec![session("transaction_read_only", lit("1"))],
        ),
        // Other forms.
        ("SET PASSWORD = PASSWORD('x')", vec![SetItem::Password]),
        ("SET PASSWORD FOR 'u'@'h' = 'x'", vec![SetItem::Password]),
        ("SET ROLE r", vec![SetItem::Role]),
        ("SET DEFAULT ROLE r FOR u", vec![SetItem::Role]),
        (
            "SET STATEMENT max_statement_time=1 FOR SELECT 1",
            vec![SetItem::Statement],
        ),
        (
            "SET RESOURCE GROUP rg",
            vec![SetItem::Other("RESOURCE GROUP rg".into())],
        ),
        // Only the first statement is parsed.
        ("SET @x = 1; SET @y = 2", vec![user("x", lit("1"))]),
    ];
    for (sql, want) in cases {
        assert_eq!(parse_set(sql), Ok(want), "{sql}");
    }
}

#[test]
fn malformed_set_statements() {
    assert_eq!(parse_set("SELECT 1"), Err(SetParseError::NotSet));
    assert_eq!(parse_set(""), Err(SetParseError::NotSet));
    assert_eq!(parse_set("/* SET x = 1 */"), Err(SetParseError::NotSet));
    for sql in [
        "SET",
        "SET x",
        "SET x 1",
        "SET x =",
        "SET @x = 1,",
        "SET NAMES",
        "SET = 1",
        "SET @ = 1",
        "SET GLOBAL",
        "SET 'x' = 1",
    ] {
        let err = parse_set(sql);
        assert!(
            matches!(err, Err(SetParseError::Expected { .. })),
            "{sql}: {err:?}"
        );
    }
    assert_eq!(
        parse_set("SET x 1"),
        Err(SetParseError::Expected {
            expected: "`=` or `:=`",
            offset: 6
        })
    );
}
