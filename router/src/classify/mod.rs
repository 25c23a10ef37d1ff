//! The statement classifier: for each SQL text a client sends, where it may run
//! (replica, leader) and what session state it touches (pins, `USE`, `SET`). Pure:
//! no I/O. Results are cached by normalised text; the SQL sent on is never rewritten.
//!
//! Each text is classified from its normalised form ([`normalize`]) alone, so two
//! texts with the same cache key get the same classification by construction.
//! sqlparser (MySqlDialect) decides the kind when it can parse the statement; a
//! token scan decides otherwise and always contributes the flags (locking reads,
//! pins, session functions), which it finds wherever they are in the text.

mod ast;
mod cache;
mod kill;
mod lexer;
mod normalize;
mod scan;
mod set;
#[cfg(test)]
mod tests;
mod text;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use sqlparser::ast::Statement;
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::Parser;

pub use kill::{has_kill_statement, parse_kill, with_connection_id, Kill, KillTarget};
pub use normalize::{key_literals, normalize, KeyLiteral};
pub use set::{parse_set, SetItem, SetParseError, SetValue, TxScope};
pub use text::{
    database_ddl_target, identifiers, placeholder_offsets, with_database_ddl_target, words,
};

use cache::Cache;
use lexer::{split_statements, Lexer, Token};
use scan::ScanInfo;

/// Texts longer than this (bytes) are classified without the cache: they are rare
/// (bulk inserts, generated SQL) and would crowd out the hot statements.
pub const MAX_CACHED_LEN: usize = 4096;

/// What kind of statement a text is: decides where it may run.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum StatementKind {
    /// A read. `locking`: it must still run on the leader (`FOR UPDATE`, `LOCK IN
    /// SHARE MODE`, `FOR SHARE`, `INTO`, user locks, sequences, `@x :=`, or a
    /// multi-statement text).
    Select { locking: bool },
    /// `INSERT`, `UPDATE`, `DELETE`, `REPLACE`, `LOAD DATA`/`XML`, `CALL`, `TRUNCATE`.
    Write,
    /// `CREATE`/`ALTER`/`DROP`/`RENAME` of tables, indexes, views, databases, routines...
    Ddl,
    /// Any `SET` (the router calls [`parse_set`] on the raw text), except MariaDB's
    /// `SET STATEMENT ... FOR <stmt>`, which is classified as `<stmt>`.
    Set,
    /// `USE db`: the database name, unquoted.
    Use(String),
    /// `BEGIN [WORK]` / `START TRANSACTION ...`.
    Begin,
    /// `COMMIT ...`.
    Commit,
    /// `ROLLBACK [WORK] [AND [NO] CHAIN]` (`ROLLBACK TO SAVEPOINT` is `Other`).
    Rollback,
    /// `XA START|END|PREPARE|COMMIT|ROLLBACK|RECOVER`.
    Xa,
    /// `LOCK TABLE[S] ...`.
    LockTables,
    /// `UNLOCK TABLE[S]`.
    UnlockTables,
    /// `SHOW`, `DESCRIBE`/`DESC`, `EXPLAIN` (not `EXPLAIN ANALYZE`), `HELP`: reads.
    Show,
    /// Anything else (`SAVEPOINT`, `DO`, `KILL`, `FLUSH`, `GRANT`, account management,
    /// SQL-level `PREPARE`/`EXECUTE`, compound statements, empty text...).
    Other,
}

/// Why running a statement ties the session to the backend connection that ran it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PinReason {
    /// `CREATE TEMPORARY TABLE`.
    TemporaryTable,
    /// `LOCK TABLES`, or `FLUSH TABLES ... WITH READ LOCK | FOR EXPORT`.
    LockTables,
    /// `GET_LOCK(...)`.
    UserLock,
    /// `@x := ...`, `INTO @x`, `SET @x = <not a literal>`, user variables passed to
    /// `CALL` (OUT parameters) or `LOAD DATA`.
    UserVariableAssignment,
    /// SQL-level `PREPARE`.
    SqlPrepare,
    /// The text holds several statements (their effects are not tracked one by one).
    MultiStatement,
    /// `BACKUP STAGE ...` (until `BACKUP STAGE END`) or `BACKUP LOCK` (until `BACKUP
    /// UNLOCK`): held by the connection, like table locks.
    BackupLock,
    /// `XA START` / `XA BEGIN` (until `XA COMMIT` / `XA ROLLBACK`): the XA transaction is the
    /// connection's, also once prepared, when the server's status no longer says so.
    XaTransaction,
}

/// A table a statement references.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// The database, when the statement names it.
    pub schema: Option<String>,
    /// The table name, unquoted, as written.
    pub name: String,
}

/// What the router needs to know about one SQL text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Classification {
    /// The kind (of the first statement, for a multi-statement text).
    pub kind: StatementKind,
    /// sqlparser parsed every statement; when false the token scan decided the kind
    /// of the statements it could not parse, and `tables` lacks theirs.
    pub parsed: bool,
    /// The text holds more than one statement (`SELECT 1; SELECT 2`).
    pub multi: bool,
    /// Running this ties the session to its backend connection. When a statement has
    /// several reasons the longest-lasting one is reported (`MultiStatement`, then
    /// `TemporaryTable`, `SqlPrepare`, `UserVariableAssignment`, `UserLock`,
    /// `LockTables`), so an `unpin` never releases a pin that another reason holds.
    pub pin: Option<PinReason>,
    /// Running this ends that tie: `UNLOCK TABLES` ends `LockTables`,
    /// `RELEASE_ALL_LOCKS()` ends `UserLock`, `BACKUP STAGE END` and `BACKUP UNLOCK` end
    /// `BackupLock`, `XA COMMIT` and `XA ROLLBACK` end `XaTransaction`. Never set with the same `pin`.
    pub unpin: Option<PinReason>,
    /// `SQL_CALC_FOUND_ROWS`: the next `FOUND_ROWS()` must run on the same connection.
    pub calc_found_rows: bool,
    /// The result depends on the connection's earlier statements: `LAST_INSERT_ID()`,
    /// `FOUND_ROWS()`, `ROW_COUNT()`, `CONNECTION_ID()`, `LASTVAL()`, `PREVIOUS VALUE
    /// FOR`, `@@identity`, `@@last_insert_id`, `@@warning_count`, `@@error_count`,
    /// `SHOW WARNINGS|ERRORS|PROFILE[S]`, `GET DIAGNOSTICS`.
    pub uses_session_functions: bool,
    /// Tables referenced, schema when written; best effort (see `parsed`).
    pub tables: Vec<TableRef>,
    /// The normalised text parsed with its literals as placeholders, once per cache entry
    /// (see [`Classification::key_statement`]).
    pub key_statement: KeySlot,
}

/// A statement's cache key (its normalised text, each literal a `?`) parsed as a prepared
/// statement would be. Every text with this key has this syntax tree with its own literals
/// ([`key_literals`], in the order of the placeholders) in place of the `?`s.
#[derive(Debug)]
pub struct KeyStatement {
    /// The normalised text.
    pub key: String,
    /// `key` parsed (MySQL dialect): exactly one statement.
    pub stmt: Statement,
    /// The `?` placeholders in `key`.
    pub placeholders: usize,
}

/// Where a [`Classification`] keeps its [`KeyStatement`], parsed on first use. Only
/// classifications held by the cache have one (for any other, parsing the key would be a
/// second parse of a statement seen once). Compares equal to any other slot: it is derived
/// from the key, like everything else in a classification.
#[derive(Default)]
pub struct KeySlot {
    cell: OnceLock<Option<Box<KeyStatement>>>,
    enabled: bool,
}

impl Clone for KeySlot {
    fn clone(&self) -> Self {
        // A syntax tree is not worth copying: a clone parses again if it is asked.
        KeySlot {
            cell: OnceLock::new(),
            enabled: self.enabled,
        }
    }
}

impl PartialEq for KeySlot {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for KeySlot {}

impl std::fmt::Debug for KeySlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cell.get() {
            Some(Some(k)) => write!(f, "KeySlot({:?})", k.key),
            Some(None) => f.write_str("KeySlot(unparsable)"),
            None => f.write_str("KeySlot"),
        }
    }
}

impl Classification {
    /// The statement itself may run on a replica: a plain, single, non-locking read
    /// that neither pins the session nor reads connection-bound state. (The router
    /// still checks transactions, existing pins and replica lag.)
    pub fn is_replica_safe(&self) -> bool {
        matches!(self.kind, StatementKind::Select { locking: false })
            && !self.multi
            && self.pin.is_none()
            && !self.uses_session_functions
            && !self.calc_found_rows
    }

    /// The cache key of `sql` (a text this classification is for) parsed with its literals
    /// as placeholders: parsed by the first text to ask, then shared by every text with the
    /// same key. `None` when the key is not exactly one statement sqlparser reads, or this
    /// classification is not held by the cache.
    pub fn key_statement(&self, sql: &str) -> Option<&KeyStatement> {
        if !self.key_statement.enabled {
            return None;
        }
        self.key_statement
            .cell
            .get_or_init(|| {
                let key = normalize(sql);
                let stmt = parse_one(&key)?;
                let placeholders = placeholder_offsets(&key).len();
                Some(Box::new(KeyStatement {
                    stmt,
                    key,
                    placeholders,
                }))
            })
            .as_deref()
    }
}

/// Counters of a [`Classifier`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClassifierStats {
    /// Classifications served from the cache.
    pub hits: u64,
    /// Classifications computed (including `bypassed`).
    pub misses: u64,
    /// Computed classifications for which sqlparser failed (`parsed == false`).
    pub unparsed: u64,
    /// Texts longer than [`MAX_CACHED_LEN`], classified without the cache.
    pub bypassed: u64,
    /// Entries in the cache now.
    pub entries: usize,
}

/// Classifies statements, caching results by normalised text. Shared by all sessions.
pub struct Classifier {
    cache: Cache,
    hits: AtomicU64,
    misses: AtomicU64,
    unparsed: AtomicU64,
    bypassed: AtomicU64,
}

impl Classifier {
    /// A classifier whose cache holds about `capacity` entries (0 disables it). When
    /// full, a sweep drops the entries not hit since the previous sweep, or all of
    /// them if that would free less than a quarter.
    pub fn new(capacity: usize) -> Self {
        Classifier {
            cache: Cache::new(capacity),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            unparsed: AtomicU64::new(0),
            bypassed: AtomicU64::new(0),
        }
    }

    /// Classifies `sql`. A cache hit costs one normalisation and one map lookup (no
    /// sqlparser call). Never panics, whatever the input.
    pub fn classify(&self, sql: &str) -> Arc<Classification> {
        let key = normalize(sql);
        let cacheable = sql.len() <= MAX_CACHED_LEN;
        if cacheable {
            if let Some(hit) = self.cache.get(&key) {
                self.hits.fetch_add(1, Ordering::Relaxed);
                return hit;
            }
        } else {
            self.bypassed.fetch_add(1, Ordering::Relaxed);
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let mut c = classify_key(&key);
        c.key_statement.enabled = cacheable && self.cache.enabled();
        let c = Arc::new(c);
        if !c.parsed {
            self.unparsed.fetch_add(1, Ordering::Relaxed);
        }
        if cacheable {
            self.cache.insert(key, Arc::clone(&c));
        }
        c
    }

    /// The counters so far.
    pub fn stats(&self) -> ClassifierStats {
        ClassifierStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            unparsed: self.unparsed.load(Ordering::Relaxed),
            bypassed: self.bypassed.load(Ordering::Relaxed),
            entries: self.cache.len(),
        }
    }
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("stats", &self.stats())
            .finish()
    }
}

/// Parses `sql` as one statement (MySQL dialect); `None` when it is not exactly one the
/// parser reads. What the shard planner reads the syntax of, what a prepared statement on a
/// sharded table keeps from its prepare, and what a cache key is parsed into
/// ([`Classification::key_statement`]).
pub fn parse_one(sql: &str) -> Option<Statement> {
    match Parser::parse_sql(&MySqlDialect {}, sql) {
        Ok(mut v) if v.len() == 1 => v.pop(),
        _ => None,
    }
}

/// Pin reasons, longest-lasting first (see [`Classification::pin`]).
const PIN_PRIORITY: [PinReason; 7] = [
    PinReason::TemporaryTable,
    PinReason::XaTransaction,
    PinReason::SqlPrepare,
    PinReason::UserVariableAssignment,
    PinReason::UserLock,
    PinReason::LockTables,
    PinReason::BackupLock,
];

/// Classifies a normalised text. Everything here derives from `key` only.
fn classify_key(key: &str) -> Classification {
    let toks: Vec<Token<'_>> = Lexer::new(key).collect();
    let stmts = split_statements(&toks);
    let mut c = Classification {
        kind: StatementKind::Other,
        parsed: !stmts.is_empty(),
        multi: stmts.len() > 1,
        pin: None,
        unpin: None,
        calc_found_rows: false,
        uses_session_functions: false,
        tables: Vec::new(),
        key_statement: KeySlot::default(),
    };
    let mut pins = Vec::new();
    for (n, stmt) in stmts.iter().enumerate() {
        let effective = scan::effective(stmt);
        let info = scan::scan(effective);
        let ast = parse(effective);
        if let Some(ast) = &ast {
            ast.iter()
                .for_each(|s| ast::collect_tables(s, &mut c.tables));
        } else {
            c.parsed = false;
        }
        c.calc_found_rows |= info.calc_found_rows;
        c.uses_session_functions |= info.session_functions;
        pins.extend_from_slice(&info.pins);
        if n == 0 {
            c.kind = merge_kind(ast.as_ref().and_then(|a| a.first()), &info);
            c.unpin = info.unpin;
        }
    }
    if c.multi {
        c.pin = Some(PinReason::MultiStatement);
        c.unpin = None;
        // Later statements may write: the text as a whole is not a plain read.
        if let StatementKind::Select { locking } = &mut c.kind {
            *locking = true;
        }
    } else {
        c.pin = PIN_PRIORITY.into_iter().find(|p| pins.contains(p));
        if c.unpin.is_some_and(|u| pins.contains(&u)) {
            c.unpin = None;
        }
    }
    c
}

/// The AST's kind where it has one, but never a read where the token scan saw
/// something else, and with the scan's locking flags added (the scan sees
/// `LOCK IN SHARE MODE`, `GET_LOCK(`, `@x :=` ... anywhere in the text).
fn merge_kind(ast: Option<&Statement>, info: &ScanInfo) -> StatementKind {
    let scanned = info.kind.clone().unwrap_or(StatementKind::Other);
    match ast.and_then(ast::kind) {
        None => scanned,
        Some(StatementKind::Select { locking }) => match scanned {
            StatementKind::Select { .. } => StatementKind::Select {
                locking: locking || info.locking,
            },
            other => other,
        },
        Some(StatementKind::Show) => scanned,
        Some(kind) => kind,
    }
}

/// Parses one statement with sqlparser; `None` if it fails.
fn parse(toks: &[Token<'_>]) -> Option<Vec<Statement>> {
    // sqlparser recurses once (through several large frames) per level of parentheses, and
    // not every level counts against its recursion limit (nested joins don't): nineteen
    // nested joins overflow a 2 MiB task stack in a debug build, aborting the whole router.
    // Deep statements are parsed on a thread of their own with room for them, and past
    // MAX_PARSE_DEPTH not at all (the fallback lexer classifies them).
    let depth = paren_depth(toks);
    if depth > MAX_PARSE_DEPTH {
        return None;
    }
    let text = normalize::parse_text(toks);
    let run = || {
        // sqlparser is a large third-party parser fed untrusted text: a bug in it must
        // degrade to the fallback lexer, not take the session down.
        let result = std::panic::catch_unwind(|| Parser::parse_sql(&MySqlDialect {}, &text));
        match result {
            Ok(Ok(stmts)) if !stmts.is_empty() => Some(stmts),
            _ => None,
        }
    };
    if depth <= INLINE_PARSE_DEPTH {
        return run();
    }
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("deep-parse".into())
            .stack_size(DEEP_PARSE_STACK)
            .spawn_scoped(s, run)
            .ok()?
            .join()
            .ok()
            .flatten()
    })
}

/// Statements nested at most this deep are parsed on the caller's stack.
const INLINE_PARSE_DEPTH: usize = 8;
/// Deeper ones are not parsed at all (about 100 KiB of stack per level in a debug build).
const MAX_PARSE_DEPTH: usize = 100;
/// The stack of the thread that parses deep statements.
const DEEP_PARSE_STACK: usize = 32 << 20;

/// How deeply the statement's parentheses nest.
fn paren_depth(toks: &[Token<'_>]) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    for t in toks {
        match t.text {
            "(" => {
                depth += 1;
                max = max.max(depth);
            }
            ")" => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}
