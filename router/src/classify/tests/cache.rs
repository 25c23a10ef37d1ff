//! The cache: hits share one `Arc`, different statements never collide, it stays bounded.

use std::sync::Arc;

use crate::classify::{Classifier, StatementKind, MAX_CACHED_LEN};

#[test]
fn same_shape_hits_the_cache() {
    let c = Classifier::new(100);
    let a = c.classify("SELECT * FROM t WHERE id = 1");
    let b = c.classify("SELECT * FROM t WHERE id = 2");
    let d = c.classify("SELECT * FROM t WHERE id = 'three' /* comment */ ;");
    assert!(Arc::ptr_eq(&a, &b));
    assert!(Arc::ptr_eq(&a, &d));
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.unparsed, s.entries), (2, 1, 0, 1));
}

#[test]
fn different_statements_never_collide() {
    let pairs = [
        ("SELECT 1", "SELECT 1 FOR UPDATE"),
        ("SELECT 1", "SELECT 1 LOCK IN SHARE MODE"),
        ("USE a", "USE b"),
        ("USE a", "USE `a b`"),
        ("SELECT a FROM t", "SELECT a FROM u"),
        ("SELECT a FROM d1.t", "SELECT a FROM d2.t"),
        ("SELECT @x", "SELECT @x := 1"),
        ("SET @x = 1", "SET @x = NOW()"),
        ("SELECT 1", "SELECT 1; SELECT 2"),
        ("CREATE TABLE t (a INT)", "CREATE TEMPORARY TABLE t (a INT)"),
        ("SELECT 'GET_LOCK(1)'", "SELECT GET_LOCK(1)"),
        ("SELECT 1 -- ; DROP TABLE t", "SELECT 1 ; DROP TABLE t"),
        ("SELECT a FROM t", "select a from t"),
    ];
    let c = Classifier::new(100);
    for (x, y) in pairs {
        let (cx, cy) = (c.classify(x), c.classify(y));
        assert!(!Arc::ptr_eq(&cx, &cy), "{x:?} and {y:?} share an entry");
        assert_eq!(*cx, *Classifier::new(0).classify(x), "{x}");
        assert_eq!(*cy, *Classifier::new(0).classify(y), "{y}");
    }
    assert_eq!(c.classify("USE a").kind, StatementKind::Use("a".into()));
    assert_eq!(c.classify("USE b").kind, StatementKind::Use("b".into()));
}

#[test]
fn stays_bounded() {
    let c = Classifier::new(64);
    for i in 0..1000 {
        c.classify(&format!("SELECT c{i} FROM t"));
        assert!(c.stats().entries <= 64, "after {i}: {:?}", c.stats());
    }
    // A statement hit between sweeps survives them.
    let c = Classifier::new(64);
    let hot = c.classify("SELECT hot FROM t");
    for i in 0..1000 {
        c.classify(&format!("SELECT c{i} FROM t"));
        c.classify("SELECT hot FROM t");
    }
    assert!(Arc::ptr_eq(&hot, &c.classify("SELECT hot FROM t")));
}

#[test]
fn zero_capacity_disables_the_cache() {
    let c = Classifier::new(0);
    let a = c.classify("SELECT 1");
    let b = c.classify("SELECT 1");
    assert!(!Arc::ptr_eq(&a, &b));
    assert_eq!(a, b);
    assert_eq!(
        (c.stats().hits, c.stats().misses, c.stats().entries),
        (0, 2, 0)
    );
}

#[test]
fn long_statements_bypass_the_cache() {
    let c = Classifier::new(10);
    let values = vec!["(1, 'x')"; MAX_CACHED_LEN / 8].join(", ");
    let sql = format!("INSERT INTO t VALUES {values}");
    assert!(sql.len() > MAX_CACHED_LEN);
    assert_eq!(c.classify(&sql).kind, StatementKind::Write);
    assert_eq!(c.classify(&sql).kind, StatementKind::Write);
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.bypassed, s.entries), (0, 2, 2, 0));
}

#[test]
fn counts_unparsed() {
    let c = Classifier::new(10);
    c.classify("XA START 'x'");
    c.classify("XA START 'y'");
    c.classify("SELECT 1");
    let s = c.stats();
    assert_eq!((s.hits, s.misses, s.unparsed), (1, 2, 1));
}

#[test]
fn concurrent_use() {
    let c = Classifier::new(16);
    let sqls: Vec<String> = (0..64)
        .map(|i| format!("SELECT * FROM t{} WHERE id = {i}", i % 24))
        .collect();
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                for sql in &sqls {
                    let got = c.classify(sql);
                    assert_eq!(got.kind, StatementKind::Select { locking: false });
                    assert_eq!(got.tables.len(), 1);
                }
            });
        }
    });
    let s = c.stats();
    assert_eq!(s.hits + s.misses, 4 * 64);
    assert!(s.entries <= 16 + 4);
}
