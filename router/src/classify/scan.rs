//! Token-level analysis of one statement: its kind from the leading keywords (the
//! fallback when sqlparser fails) and the flags no AST walk is needed for (locking
//! reads, pins, session-dependent functions), found by scanning every token.

use super::lexer::{ddl_object, TokKind, Token};
use super::set::{parse_set_tokens, SetItem, SetValue};
use super::{PinReason, StatementKind};

/// What the token scan learnt about one statement.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScanInfo {
    /// The kind from leading keywords.
    pub kind: Option<StatementKind>,
    /// A read that must go to the leader (locking clause, INTO, side effects).
    pub locking: bool,
    /// Every pin reason found (in no particular order).
    pub pins: Vec<PinReason>,
    pub unpin: Option<PinReason>,
    pub calc_found_rows: bool,
    pub session_functions: bool,
}

impl ScanInfo {
    fn pin(&mut self, reason: PinReason) {
        if !self.pins.contains(&reason) {
            self.pins.push(reason);
        }
    }
}

/// Analyses one statement. `SET STATEMENT ... FOR <stmt>` is analysed as `<stmt>`
/// (see [`effective`]), so callers pass the tokens `effective` returns.
pub(crate) fn scan(toks: &[Token<'_>]) -> ScanInfo {
    let mut info = ScanInfo::default();
    scan_flags(toks, &mut info);
    let kind = leading_kind(toks, &mut info);
    if matches!(kind, StatementKind::Set) {
        // In SET, `@x := 1` is a plain assignment: whether it pins depends on the value.
        info.pins
            .retain(|p| *p != PinReason::UserVariableAssignment);
        set_pins(toks, &mut info);
    }
    info.kind = Some(kind);
    info
}

/// The tokens that decide routing: for MariaDB's `SET STATEMENT var=v[, ...] FOR
/// <stmt>` that is `<stmt>` (the values only last for that statement), otherwise all.
pub(crate) fn effective<'t, 'a>(toks: &'t [Token<'a>]) -> &'t [Token<'a>] {
    let is_set_statement = toks.first().is_some_and(|t| t.is_kw("SET"))
        && toks.get(1).is_some_and(|t| t.is_kw("STATEMENT"));
    if !is_set_statement {
        return toks;
    }
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate() {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth = depth.saturating_sub(1);
        } else if depth == 0 && t.is_kw("FOR") {
            return &toks[i + 1..];
        }
    }
    toks
}

/// Functions whose result depends on the lock or sequence state of the leader: a
/// SELECT calling them is not a plain replica read.
const LEADER_FUNCTIONS: [&str; 8] = [
    "GET_LOCK",
    "RELEASE_LOCK",
    "RELEASE_ALL_LOCKS",
    "IS_FREE_LOCK",
    "IS_USED_LOCK",
    "NEXTVAL",
    "SETVAL",
    "LASTVAL",
];

/// Functions whose result depends on the connection that runs them.
const SESSION_FUNCTIONS: [&str; 5] = [
    "LAST_INSERT_ID",
    "FOUND_ROWS",
    "ROW_COUNT",
    "CONNECTION_ID",
    "LASTVAL",
];

/// System variables whose value depends on the connection's previous statements.
const SESSION_VARIABLES: [&str; 4] = ["identity", "last_insert_id", "warning_count", "error_count"];

fn scan_flags(toks: &[Token<'_>], info: &mut ScanInfo) {
    let kw = |i: usize, k: &str| toks.get(i).is_some_and(|t| t.is_kw(k));
    for (i, t) in toks.iter().enumerate() {
        match t.kind {
            TokKind::Word => {
                let call = toks.get(i + 1).is_some_and(|n| n.is_punct("("));
                if t.is_kw("SQL_CALC_FOUND_ROWS") {
                    info.calc_found_rows = true;
                } else if call && t.is_any_kw(&LEADER_FUNCTIONS) {
                    info.locking = true;
                    if t.is_kw("GET_LOCK") {
                        info.pin(PinReason::UserLock);
                    } else if t.is_kw("RELEASE_ALL_LOCKS") {
                        info.unpin = Some(PinReason::UserLock);
                    }
                } else if (t.is_kw("NEXT") || t.is_kw("PREVIOUS"))
                    && kw(i + 1, "VALUE")
                    && kw(i + 2, "FOR")
                {
                    // MariaDB sequences: NEXT VALUE FOR s / PREVIOUS VALUE FOR s.
                    info.locking = true;
                    info.session_functions |= t.is_kw("PREVIOUS");
                } else if (t.is_kw("FOR") && (kw(i + 1, "UPDATE") || kw(i + 1, "SHARE")))
                    || (t.is_kw("LOCK") && kw(i + 1, "IN") && kw(i + 2, "SHARE"))
                {
                    info.locking = true;
                } else if t.is_kw("INTO") {
                    // Only meaningful for SELECT ... INTO (INSERT INTO is a write anyway).
                    info.locking = true;
                    if toks.get(i + 1).is_some_and(is_user_var) {
                        info.pin(PinReason::UserVariableAssignment);
                    }
                }
                if call && t.is_any_kw(&SESSION_FUNCTIONS) {
                    info.session_functions = true;
                }
            }
            TokKind::Var => {
                if is_user_var(t) && toks.get(i + 1).is_some_and(|n| n.is_punct(":=")) {
                    info.locking = true;
                    info.pin(PinReason::UserVariableAssignment);
                }
                if let Some(sys) = t.text.strip_prefix("@@") {
                    let name = sys.rsplit('.').next().unwrap_or(sys);
                    if SESSION_VARIABLES
                        .iter()
                        .any(|v| v.eq_ignore_ascii_case(name))
                    {
                        info.session_functions = true;
                    }
                }
            }
            _ => {}
        }
    }
}

fn is_user_var(t: &Token<'_>) -> bool {
    t.kind == TokKind::Var && !t.text.starts_with("@@")
}

/// The kind from the leading keywords, with the pins those keywords imply.
fn leading_kind(toks: &[Token<'_>], info: &mut ScanInfo) -> StatementKind {
    // `(SELECT 1) UNION (SELECT 2)`.
    let start = toks
        .iter()
        .position(|t| !t.is_punct("("))
        .unwrap_or(toks.len());
    let Some(first) = toks.get(start) else {
        return StatementKind::Other;
    };
    let next = |k: usize| toks.get(start + k);
    let next_is = |k: usize, kw: &str| next(k).is_some_and(|t| t.is_kw(kw));
    let next_any = |k: usize, kws: &[&str]| next(k).is_some_and(|t| t.is_any_kw(kws));
    if first.kind != TokKind::Word {
        return StatementKind::Other;
    }
    let word = first.text.to_ascii_uppercase();
    let select = |info: &ScanInfo| StatementKind::Select {
        locking: info.locking,
    };
    match word.as_str() {
        "SELECT" | "VALUES" | "TABLE" => select(info),
        "WITH" => with_body_kind(&toks[start..], info),
        "INSERT" | "REPLACE" | "UPDATE" | "DELETE" | "TRUNCATE" => StatementKind::Write,
        "CALL" => {
            // A procedure's OUT parameters land in user variables.
            if toks.iter().any(is_user_var) {
                info.pin(PinReason::UserVariableAssignment);
            }
            StatementKind::Write
        }
        "LOAD" if next_any(1, &["DATA", "XML"]) => {
            // LOAD DATA ... (col, @v) SET c = f(@v) assigns user variables.
            if toks.iter().any(is_user_var) {
                info.pin(PinReason::UserVariableAssignment);
            }
            StatementKind::Write
        }
        "CREATE" | "ALTER" | "DROP" | "RENAME" => ddl_kind(toks, start, &word, info),
        "SET" => StatementKind::Set,
        "USE" => match next(1) {
            Some(t) if t.kind == TokKind::Word => StatementKind::Use(t.text.to_string()),
            Some(t) if t.kind == TokKind::QuotedIdent => StatementKind::Use(unbacktick(t.text)),
            _ => StatementKind::Other,
        },
        // `BEGIN NOT ATOMIC ... END` is a MariaDB compound statement, not a transaction.
        "BEGIN" if next(1).is_none() || next_is(1, "WORK") => StatementKind::Begin,
        "START" if next_is(1, "TRANSACTION") => StatementKind::Begin,
        "COMMIT" => StatementKind::Commit,
        "ROLLBACK" if toks.iter().any(|t| t.is_kw("TO")) => StatementKind::Other,
        "ROLLBACK" => StatementKind::Rollback,
        "XA" => {
            if next_any(1, &["START", "BEGIN"]) {
                info.pin(PinReason::XaTransaction);
            } else if next_any(1, &["COMMIT", "ROLLBACK"]) {
                info.unpin = Some(PinReason::XaTransaction);
            }
            StatementKind::Xa
        }
        "LOCK" if next_any(1, &["TABLE", "TABLES"]) => {
            info.pin(PinReason::LockTables);
            StatementKind::LockTables
        }
        "BACKUP" if next_is(1, "STAGE") && next_is(2, "END") => {
            info.unpin = Some(PinReason::BackupLock);
            StatementKind::Other
        }
        "BACKUP" if next_any(1, &["STAGE", "LOCK"]) => {
            info.pin(PinReason::BackupLock);
            StatementKind::Other
        }
        "BACKUP" if next_is(1, "UNLOCK") => {
            info.unpin = Some(PinReason::BackupLock);
            StatementKind::Other
        }
        "UNLOCK" if next_any(1, &["TABLE", "TABLES"]) => {
            info.unpin = Some(PinReason::LockTables);
            StatementKind::UnlockTables
        }
        "SHOW" => {
            // These report on the previous statement of this very connection.
            if toks
                .iter()
                .any(|t| t.is_any_kw(&["WARNINGS", "ERRORS", "PROFILE", "PROFILES"]))
            {
                info.session_functions = true;
            }
            StatementKind::Show
        }
        "EXPLAIN" | "DESCRIBE" | "DESC" => {
            // EXPLAIN ANALYZE runs the statement; EXPLAIN FOR CONNECTION is about one
            // connection of one server.
            let runs = toks.iter().any(|t| t.is_kw("ANALYZE"));
            let connection = toks.iter().any(|t| t.is_kw("CONNECTION"));
            if runs || connection {
                StatementKind::Other
            } else {
                StatementKind::Show
            }
        }
        "HELP" => StatementKind::Show,
        "PREPARE" => {
            info.pin(PinReason::SqlPrepare);
            StatementKind::Other
        }
        "FLUSH" => {
            // FLUSH TABLES ... WITH READ LOCK / FOR EXPORT holds locks until UNLOCK TABLES.
            let read_lock = toks
                .windows(3)
                .any(|w| w[0].is_kw("WITH") && w[1].is_kw("READ") && w[2].is_kw("LOCK"));
            let export = toks
                .windows(2)
                .any(|w| w[0].is_kw("FOR") && w[1].is_kw("EXPORT"));
            if read_lock || export {
                info.pin(PinReason::LockTables);
            }
            StatementKind::Other
        }
        "GET" if next_any(1, &["DIAGNOSTICS", "CURRENT", "STACKED"]) => {
            info.session_functions = true;
            StatementKind::Other
        }
        _ => StatementKind::Other,
    }
}

/// `WITH cte AS (...) <body>`: the body is the first top-level statement keyword.
fn with_body_kind(toks: &[Token<'_>], info: &ScanInfo) -> StatementKind {
    let mut depth = 0usize;
    for t in toks.iter().skip(1) {
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            depth = depth.saturating_sub(1);
        } else if depth == 0 {
            if t.is_any_kw(&["SELECT", "VALUES", "TABLE"]) {
                return StatementKind::Select {
                    locking: info.locking,
                };
            }
            if t.is_any_kw(&["INSERT", "REPLACE", "UPDATE", "DELETE"]) {
                return StatementKind::Write;
            }
        }
    }
    StatementKind::Other
}

fn ddl_kind(toks: &[Token<'_>], start: usize, verb: &str, info: &mut ScanInfo) -> StatementKind {
    let object = ddl_object(toks, start + 1);
    // Account management and SQL-level prepared statements are not schema changes.
    if object.is_some_and(|o| o.is_any_kw(&["USER", "ROLE", "PREPARE"])) {
        return StatementKind::Other;
    }
    let temporary = toks[start..]
        .iter()
        .take_while(|t| object.is_none_or(|o| o.start != t.start))
        .any(|t| t.is_kw("TEMPORARY"));
    if verb == "CREATE" && temporary {
        info.pin(PinReason::TemporaryTable);
    }
    StatementKind::Ddl
}

/// Pins of a `SET`: assigning a user variable anything but a literal (its value
/// depends on this connection's state and time, so it cannot be replayed).
fn set_pins(toks: &[Token<'_>], info: &mut ScanInfo) {
    match parse_set_tokens(toks) {
        Ok(items) => {
            let expr = items.iter().any(|i| {
                matches!(
                    i,
                    SetItem::User {
                        value: SetValue::Expression(_),
                        ..
                    }
                )
            });
            if expr {
                info.pin(PinReason::UserVariableAssignment);
            }
        }
        // Unparseable: pin if it might touch a user variable at all.
        Err(_) => {
            if toks.iter().any(is_user_var) {
                info.pin(PinReason::UserVariableAssignment);
            }
        }
    }
}

/// `` `a``b` `` -> ``a`b``.
pub(crate) fn unbacktick(s: &str) -> String {
    let inner = s.strip_prefix('`').unwrap_or(s);
    let inner = inner.strip_suffix('`').unwrap_or(inner);
    inner.replace("``", "`")
}
