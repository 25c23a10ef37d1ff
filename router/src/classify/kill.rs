//! The statements about connection ids that a multiplexing router must answer itself:
//! `KILL` (parsed here, run by the session) and `CONNECTION_ID()` (made to return the
//! router's session id, the one the client saw in the handshake).

use super::lexer::{split_statements, Lexer, TokKind, Token};
use super::scan::unbacktick;

/// What a `KILL` statement stops.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillTarget {
    /// A connection by its id, written as a number.
    Id(u64),
    /// A connection by an id written as another expression (its text), which a server
    /// must evaluate (`@id`, `CONNECTION_ID()`, `1 + 2`).
    Expr(String),
    /// `KILL ... USER name`: every connection of that user (the name without its host).
    User(String),
    /// `KILL QUERY ID n`: the statement with that query id (the expression's text).
    QueryId(String),
}

/// A parsed `KILL [HARD | SOFT] [CONNECTION | QUERY [ID]] target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kill {
    /// `KILL QUERY`: only the running statement; otherwise the whole connection.
    pub query: bool,
    /// `HARD` or `SOFT` when written (`HARD` is the server's default).
    pub mode: Option<&'static str>,
    pub target: KillTarget,
}

/// `sql` as a `KILL` statement, or `None` when it is not one (or not one this grammar
/// knows, which the server then answers).
pub fn parse_kill(sql: &str) -> Option<Kill> {
    let mut toks: Vec<Token<'_>> = Lexer::new(sql).collect();
    while toks.last().is_some_and(|t| t.is_punct(";")) {
        toks.pop();
    }
    if !toks.first()?.is_kw("KILL") {
        return None;
    }
    let mut i = 1;
    let mut mode = None;
    if let Some(t) = toks.get(i) {
        if t.is_kw("HARD") {
            mode = Some("HARD");
            i += 1;
        } else if t.is_kw("SOFT") {
            mode = Some("SOFT");
            i += 1;
        }
    }
    let mut query = false;
    if toks.get(i).is_some_and(|t| t.is_kw("CONNECTION")) {
        i += 1;
    } else if toks.get(i).is_some_and(|t| t.is_kw("QUERY")) {
        query = true;
        i += 1;
        if toks.get(i).is_some_and(|t| t.is_kw("ID")) && toks.len() > i + 1 {
            let rest = &toks[i + 1..];
            return Some(Kill {
                query,
                mode,
                target: KillTarget::QueryId(text_of(sql, rest).to_string()),
            });
        }
    }
    if toks.get(i).is_some_and(|t| t.is_kw("USER")) && toks.len() > i + 1 {
        let name = toks[i + 1];
        let name = match name.kind {
            TokKind::Str => unquote(name.text),
            TokKind::QuotedIdent => unbacktick(name.text),
            _ => name.text.to_string(),
        };
        return Some(Kill {
            query,
            mode,
            target: KillTarget::User(name),
        });
    }
    let rest = toks.get(i..).filter(|r| !r.is_empty())?;
    let target = match rest {
        [n] if n.kind == TokKind::Number => match n.text.parse() {
            Ok(id) => KillTarget::Id(id),
            Err(_) => KillTarget::Expr(n.text.to_string()),
        },
        _ => KillTarget::Expr(text_of(sql, rest).to_string()),
    };
    Some(Kill {
        query,
        mode,
        target,
    })
}

/// Whether a multi-statement text holds a `KILL` statement.
pub fn has_kill_statement(sql: &str) -> bool {
    if !sql
        .as_bytes()
        .windows(4)
        .any(|w| w.eq_ignore_ascii_case(b"KILL"))
    {
        return false;
    }
    let toks: Vec<Token<'_>> = Lexer::new(sql).collect();
    split_statements(&toks)
        .iter()
        .any(|part| part.first().is_some_and(|t| t.is_kw("KILL")))
}

/// The text `toks` (non-empty) span in `sql`.
fn text_of<'a>(sql: &'a str, toks: &[Token<'_>]) -> &'a str {
    &sql[toks[0].start..toks[toks.len() - 1].end]
}

/// A string literal's content (`'a''b'` is `a'b`); a character set prefix is dropped.
fn unquote(s: &str) -> String {
    let Some(open) = s.find(['\'', '"']) else {
        return s.to_string();
    };
    let q = &s[open..open + 1];
    let inner = &s[open + 1..];
    let inner = inner.strip_suffix(q).unwrap_or(inner);
    inner.replace(&format!("{q}{q}"), q)
}

/// Keywords that end a select list at its own depth.
const SELECT_LIST_END: [&str; 14] = [
    "FROM",
    "INTO",
    "WHERE",
    "GROUP",
    "HAVING",
    "ORDER",
    "LIMIT",
    "UNION",
    "EXCEPT",
    "INTERSECT",
    "WINDOW",
    "FOR",
    "LOCK",
    "PROCEDURE",
];

/// Longest select-list item whose name is kept by an alias (longer ones are named by the
/// literal the call became).
const MAX_KEPT_NAME: usize = 64;

/// `sql` with every call of `CONNECTION_ID()` replaced by `id`, or `None` when it calls none.
///
/// A server names a select-list item without an alias by its text, so an item of the
/// outermost `SELECT` that held a call and ends in `)` or a number (it can have no alias
/// then) gets its original text as alias: `SELECT CONNECTION_ID()` still returns a column
/// named `CONNECTION_ID()`.
pub fn with_connection_id(sql: &str, id: u32) -> Option<String> {
    let toks: Vec<Token<'_>> = Lexer::new(sql).collect();
    let calls: Vec<usize> = (0..toks.len())
        .filter(|&i| {
            toks[i].is_kw("CONNECTION_ID")
                && toks.get(i + 1).is_some_and(|t| t.is_punct("("))
                && toks.get(i + 2).is_some_and(|t| t.is_punct(")"))
                && !(i > 0 && toks[i - 1].is_punct("."))
        })
        .collect();
    if calls.is_empty() {
        return None;
    }
    // (position, end of the replaced text, replacement), in order.
    let mut edits: Vec<(usize, usize, String)> = calls
        .iter()
        .map(|&i| (toks[i].start, toks[i + 2].end, id.to_string()))
        .collect();
    for (first, last) in select_items(&toks) {
        let holds_call = calls.iter().any(|&c| c >= first && c + 2 <= last);
        let ends = &toks[last];
        let no_alias = ends.is_punct(")") || ends.kind == TokKind::Number;
        let name = &sql[toks[first].start..ends.end];
        if holds_call && no_alias && name.len() <= MAX_KEPT_NAME && !name.contains('`') {
            edits.push((ends.end, ends.end, format!(" AS `{name}`")));
        }
    }
    edits.sort_by_key(|e| (e.0, e.1));
    let mut out = String::with_capacity(sql.len() + 32);
    let mut at = 0;
    for (start, end, text) in edits {
        out.push_str(&sql[at..start]);
        out.push_str(&text);
        at = end;
    }
    out.push_str(&sql[at..]);
    Some(out)
}

/// The items (first and last token) of the select list of a statement that is a `SELECT`
/// (after any opening parentheses); none for any other statement.
fn select_items(toks: &[Token<'_>]) -> Vec<(usize, usize)> {
    let open = toks.iter().take_while(|t| t.is_punct("(")).count();
    if !toks.get(open).is_some_and(|t| t.is_kw("SELECT")) {
        return Vec::new();
    }
    let mut i = open + 1;
    while toks.get(i).is_some_and(|t| {
        t.is_any_kw(&[
            "ALL",
            "DISTINCT",
            "DISTINCTROW",
            "HIGH_PRIORITY",
            "STRAIGHT_JOIN",
            "SQL_SMALL_RESULT",
            "SQL_BIG_RESULT",
            "SQL_BUFFER_RESULT",
            "SQL_CACHE",
            "SQL_NO_CACHE",
            "SQL_CALC_FOUND_ROWS",
        ])
    }) {
        i += 1;
    }
    let mut items = Vec::new();
    let mut depth = 0usize;
    let mut first = i;
    while i < toks.len() {
        let t = &toks[i];
        if t.is_punct("(") {
            depth += 1;
        } else if t.is_punct(")") {
            if depth == 0 {
                break;
            }
            depth -= 1;
        } else if depth == 0 && (t.is_punct(";") || t.is_any_kw(&SELECT_LIST_END)) {
            break;
        } else if depth == 0 && t.is_punct(",") {
            if i > first {
                items.push((first, i - 1));
            }
            first = i + 1;
        }
        i += 1;
    }
    if i > first {
        items.push((first, i - 1));
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kill(query: bool, mode: Option<&'static str>, target: KillTarget) -> Option<Kill> {
        Some(Kill {
            query,
            mode,
            target,
        })
    }

    #[test]
    fn kill_statements_parse() {
        use KillTarget::*;
        let cases = [
            ("KILL 5", kill(false, None, Id(5))),
            ("kill connection 7;", kill(false, None, Id(7))),
            ("KILL QUERY 9", kill(true, None, Id(9))),
            ("KILL HARD QUERY 9", kill(true, Some("HARD"), Id(9))),
            ("KILL SOFT CONNECTION 3", kill(false, Some("SOFT"), Id(3))),
            (
                "KILL /* c */ QUERY ID 12",
                kill(true, None, QueryId("12".into())),
            ),
            ("KILL USER 'app'@'%'", kill(false, None, User("app".into()))),
            (
                "KILL QUERY USER `a``b`",
                kill(true, None, User("a`b".into())),
            ),
            ("KILL USER bob", kill(false, None, User("bob".into()))),
            (
                "KILL CONNECTION_ID()",
                kill(false, None, Expr("CONNECTION_ID()".into())),
            ),
            ("KILL QUERY @id", kill(true, None, Expr("@id".into()))),
            ("KILL", None),
            ("KILL QUERY", None),
            ("SELECT 1", None),
            ("/* KILL 5 */ SELECT 1", None),
        ];
        for (sql, want) in cases {
            assert_eq!(parse_kill(sql), want, "{sql}");
        }
    }

    #[test]
    fn kill_statements_are_found_in_multi_statement_text() {
        assert!(has_kill_statement("SELECT 1; KILL 5"));
        assert!(has_kill_statement("kill query 5; SELECT 1"));
        assert!(!has_kill_statement("SELECT 'KILL 5'; SELECT 1"));
        assert!(!has_kill_statement("SELECT kill FROM t; SELECT 1"));
    }

    #[test]
    fn connection_id_becomes_the_session_id_and_keeps_its_column_name() {
        let cases = [
            (
                "SELECT CONNECTION_ID()",
                Some("SELECT 77 AS `CONNECTION_ID()`"),
            ),
            (
                "select connection_id() > 0, 1",
                Some("select 77 > 0 AS `connection_id() > 0`, 1"),
            ),
            ("SELECT CONNECTION_ID() AS id", Some("SELECT 77 AS id")),
            ("SELECT connection_id() cid", Some("SELECT 77 cid")),
            (
                "SELECT a FROM t WHERE b = CONNECTION_ID ( )",
                Some("SELECT a FROM t WHERE b = 77"),
            ),
            (
                "INSERT INTO t VALUES (CONNECTION_ID())",
                Some("INSERT INTO t VALUES (77)"),
            ),
            (
                "(SELECT CONNECTION_ID()) UNION (SELECT 1)",
                Some("(SELECT 77 AS `CONNECTION_ID()`) UNION (SELECT 1)"),
            ),
            (
                "SELECT (SELECT CONNECTION_ID())",
                Some("SELECT (SELECT 77) AS `(SELECT CONNECTION_ID())`"),
            ),
            ("SELECT 'CONNECTION_ID()'", None),
            ("SELECT db.CONNECTION_ID()", None),
            ("SELECT `CONNECTION_ID`()", None),
            ("SELECT 1 /* CONNECTION_ID() */", None),
        ];
        for (sql, want) in cases {
            assert_eq!(with_connection_id(sql, 77).as_deref(), want, "{sql}");
        }
    }
}
