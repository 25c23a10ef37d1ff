//! Arbitrary input never panics, and normalising is idempotent.

use crate::classify::{normalize, parse_set, Classifier};

/// xorshift64*: deterministic, no extra crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const FRAGMENTS: &[&str] = &[
    "SELECT",
    "select",
    "INSERT INTO",
    "UPDATE",
    "DELETE",
    "SET",
    "SET @x",
    "SET NAMES",
    "SET GLOBAL",
    "SET STATEMENT",
    "FOR",
    "UPDATE",
    "USE",
    "BEGIN",
    "NOT ATOMIC",
    "END",
    "CASE",
    "IF",
    "CREATE",
    "TEMPORARY",
    "TABLE",
    "PROCEDURE",
    "DEFINER",
    "=",
    ":=",
    "LOCK",
    "IN SHARE MODE",
    "TABLES",
    "UNLOCK",
    "XA",
    "WITH",
    "AS",
    "(",
    ")",
    ",",
    ";",
    ".",
    "*",
    "-",
    "--",
    "-- ",
    "#",
    "/*",
    "*/",
    "/*!",
    "/*!40101",
    "/*M!100100",
    "/*+",
    "'",
    "\"",
    "`",
    "\\",
    "'a''b'",
    "'x\\'y'",
    "\"q\"",
    "`id`",
    "@",
    "@@",
    "@x",
    "@'v",
    "@`w`",
    "@@session.",
    "@@global.x",
    "?",
    "0x1F",
    "0b",
    "1e",
    "1.5e-3",
    ".5",
    "42",
    "-1",
    "_utf8mb4'z'",
    "X'0A'",
    "N'n'",
    "GET_LOCK(",
    "LAST_INSERT_ID()",
    "SQL_CALC_FOUND_ROWS",
    "INTO",
    "INTO @v",
    "OUTFILE",
    "NEXT VALUE FOR",
    "DATE",
    "CHAR(",
    "VALUES",
    "DEFAULT",
    "COLLATE",
    "TRANSACTION",
    "ISOLATION LEVEL",
    "READ",
    "\n",
    "\t",
    " ",
    "\u{0}",
    "\u{e9}",
    "\u{1F600}",
    "\u{feff}",
    "t",
    "d.t",
    "LOAD DATA",
    "CALL p(",
    "EXPLAIN",
    "ANALYZE",
    "SHOW",
    "WARNINGS",
    "ROLLBACK TO",
    "PREPARE s FROM",
    "FLUSH TABLES WITH READ LOCK",
];

fn check(classifier: &Classifier, sql: &str) {
    let _ = classifier.classify(sql);
    let _ = parse_set(sql);
    let key = normalize(sql);
    assert_eq!(
        normalize(&key),
        key,
        "normalize is not idempotent on {sql:?}"
    );
}

#[test]
fn arbitrary_input_never_panics() {
    let classifier = Classifier::new(256);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..4000 {
        let mut sql = String::new();
        for _ in 0..rng.below(14) {
            sql.push_str(FRAGMENTS[rng.below(FRAGMENTS.len())]);
            if rng.below(3) > 0 {
                sql.push(' ');
            }
        }
        check(&classifier, &sql);
    }
    for _ in 0..1000 {
        let bytes: Vec<u8> = (0..rng.below(48)).map(|_| rng.next() as u8).collect();
        check(&classifier, &String::from_utf8_lossy(&bytes));
    }
    for sql in [
        "",
        " ",
        ";",
        ";;;",
        "'",
        "\"",
        "`",
        "/*",
        "/*!",
        "/*+",
        "--",
        "#",
        "@",
        "@@",
        "@'",
        "?",
        "SET",
        "SET @",
        "USE",
        "USE `",
        "BEGIN NOT",
        "CREATE PROCEDURE p() BEGIN",
        "END END END",
        "((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((",
        "SELECT 'unterminated",
        "SELECT /* unterminated",
        "SELECT /*!40101 unterminated",
        "SELECT `unterminated",
        "SELECT \"a\\",
        "SET @x = '\\",
        "X'",
        "_utf8'",
    ] {
        check(&classifier, sql);
    }
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    check(&classifier, &deep);
}

/// `CREATE VIEW ... AS SELECT` over `depth` nested joins, as main.join_outer_innodb has.
fn nested_joins(depth: usize) -> String {
    let mut sql = format!("CREATE VIEW v AS SELECT t1.a FROM {}t1", "(".repeat(depth));
    for i in 0..depth {
        sql.push_str(&format!(" LEFT JOIN t{n} ON t1.a = t{n}.b)", n = i + 2));
    }
    sql + " WHERE t1.a = 1"
}

#[test]
fn deeply_nested_statements_are_classified_on_a_small_stack() {
    // Nineteen nested joins once overflowed a 2 MiB task stack (debug build) inside
    // sqlparser and aborted the router; 1 MiB leaves the caller's own frames no more room.
    for depth in [19, 60, 5000] {
        let sql = nested_joins(depth);
        let parsed = std::thread::Builder::new()
            .stack_size(1 << 20)
            .spawn(move || Classifier::new(16).classify(&sql).parsed)
            .unwrap()
            .join()
            .expect("classified without overflowing the stack");
        // Parsed when sqlparser's own recursion limit allows; past it the fallback lexer
        // classifies.
        assert!(parsed || depth > 19, "depth {depth}");
    }
}
