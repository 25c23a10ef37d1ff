//! The normaliser: turns a statement into its cache key in one lexer pass.
//! Literals become `?`, comments go, whitespace collapses; everything the
//! classification can depend on (keywords, identifiers, variables, operators) stays.

use super::lexer::{push_token, Lexer, TokKind, Token};

/// Returns the cache key of `sql`.
///
/// Number and string literals (including `_charset'..'`, `X'..'`, `N'..'`) become `?`;
/// comments are dropped, but the code inside MySQL executable comments `/*! ... */`
/// (and MariaDB's `/*M! ... */`) is kept as code and optimizer hints `/*+ ... */` are
/// kept verbatim; each run of whitespace or comments becomes one space (none at the
/// ends); trailing `;` are dropped. Identifiers and keywords keep their case.
///
/// ```
/// use router::classify::normalize;
/// assert_eq!(
///     normalize("/* app */ SELECT * FROM t WHERE id = 42 AND name='x';"),
///     "SELECT * FROM t WHERE id = ? AND name=?"
/// );
/// ```
pub fn normalize(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    // Length of `out` after the last token that is not a `;`.
    let mut keep = 0;
    let mut prev = None;
    for t in Lexer::with_hints(sql) {
        let text = match t.kind {
            TokKind::Str | TokKind::Number => "?",
            _ => t.text,
        };
        push_token(&mut out, prev.as_ref(), &t, text);
        if !t.is_punct(";") {
            keep = out.len();
        }
        prev = Some(t);
    }
    out.truncate(keep);
    out
}

/// A literal of a statement's text: what one `?` of its cache key stands for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyLiteral<'a> {
    /// A number as written (`42`, `1.5e3`, `0x1F`).
    Number(&'a str),
    /// A string literal as written: quotes and any prefix (`_utf8mb4`, `X`, `N`) included.
    Str(&'a str),
}

/// The literals of `sql` that [`normalize`] turns into `?`, in order: the `n`-th is what
/// the `n`-th `?` of the cache key stands for. `None` when `sql` itself holds a `?`
/// placeholder (then the key's `?`s are not all literals of the text).
pub fn key_literals(sql: &str) -> Option<Vec<KeyLiteral<'_>>> {
    let mut out = Vec::new();
    for t in Lexer::with_hints(sql) {
        match t.kind {
            TokKind::Number => out.push(KeyLiteral::Number(t.text)),
            TokKind::Str => out.push(KeyLiteral::Str(t.text)),
            TokKind::Placeholder => return None,
            _ => {}
        }
    }
    Some(out)
}

/// Keywords after which a literal must be a string for sqlparser to accept it
/// (`DATE '2024-01-01'`, `COMMENT 'x'`, `AS 'alias'`, `SHOW ... LIKE 'x'`, `SET NAMES 'x'`).
const STRING_CONTEXT: [&str; 16] = [
    "DATE",
    "TIME",
    "TIMESTAMP",
    "DATETIME",
    "COMMENT",
    "AS",
    "SEPARATOR",
    "ESCAPE",
    "OUTFILE",
    "DUMPFILE",
    "INFILE",
    "BY",
    "PASSWORD",
    "LIKE",
    "NAMES",
    "COLLATE",
];

/// Builds the text handed to sqlparser from the tokens of one normalised statement.
///
/// sqlparser rejects `?` where MySQL requires a literal (`CHAR(?)`, `DECIMAL(?, ?)`,
/// `COMMENT ?`), so each `?` becomes `0`, or `''` where a string is expected. This is
/// a function of the key alone, which keeps the classification a function of the key.
pub(crate) fn parse_text(toks: &[Token<'_>]) -> String {
    let mut out = String::new();
    for (i, t) in toks.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|p| toks.get(p));
        if t.kind != TokKind::Placeholder {
            push_token(&mut out, prev, t, t.text);
            continue;
        }
        let next = toks.get(i + 1);
        let adjacent_literal =
            |o: Option<&Token<'_>>| o.is_some_and(|o| o.kind == TokKind::Placeholder);
        let string_context = prev.is_some_and(|p| p.is_any_kw(&STRING_CONTEXT))
            || (prev.is_some_and(|p| p.is_punct("="))
                && i >= 2
                && toks.get(i - 2).is_some_and(|p| p.is_kw("COMMENT")));
        // Adjacent literals are MySQL's string concatenation ('a' 'b').
        let literal = if string_context || adjacent_literal(prev) || adjacent_literal(next) {
            "''"
        } else {
            "0"
        };
        push_token(&mut out, prev, t, literal);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalised_keys() {
        let cases: &[(&str, &str)] = &[
            (
                "SELECT * FROM t WHERE id = 1",
                "SELECT * FROM t WHERE id = ?",
            ),
            (
                "  select *\n\tfrom t where id=2 ;",
                "select * from t where id=?",
            ),
            (
                "SELECT 'a;b', \"c\", -1.5e3, 0x1F, X'0A', _utf8mb4'x', N'y'",
                "SELECT ?, ?, -?, ?, ?, ?, ?",
            ),
            ("/* lead */ SELECT 1 -- trail", "SELECT ?"),
            ("# hash comment\nSELECT 1", "SELECT ?"),
            (
                "SELECT /*!40001 SQL_NO_CACHE */ * FROM t",
                "SELECT SQL_NO_CACHE * FROM t",
            ),
            ("SELECT/*M!100100 1+*/1", "SELECT ?+ ?"),
            (
                "SELECT /*+ MAX_EXECUTION_TIME(1000) */ a FROM t",
                "SELECT /*+ MAX_EXECUTION_TIME(1000) */ a FROM t",
            ),
            (
                "SELECT `Col 1`, CamelCase FROM `Db`.`T`",
                "SELECT `Col 1`, CamelCase FROM `Db`.`T`",
            ),
            ("USE mydb", "USE mydb"),
            (
                "SET @x := 5, @@session.sql_mode = 'A,B'",
                "SET @x := ?, @@session.sql_mode = ?",
            ),
            ("SELECT 1; SELECT 2;;", "SELECT ?; SELECT ?"),
            (
                "SELECT a FROM t1 WHERE b IN (1, 2, 3)",
                "SELECT a FROM t1 WHERE b IN (?, ?, ?)",
            ),
            ("SELECT 1abc, t1.c2 FROM t1", "SELECT 1abc, t1.c2 FROM t1"),
            // `--` followed by a space would start a comment in the key.
            (
                "SELECT 1--/**/1; DELETE FROM t",
                "SELECT ?- - ?; DELETE FROM t",
            ),
            ("SELECT 1--1", "SELECT ?- -?"),
            ("SELECT 'it''s \\' here'", "SELECT ?"),
            ("", ""),
            ("  -- only a comment", ""),
            (";", ""),
        ];
        for (sql, want) in cases {
            assert_eq!(normalize(sql), *want, "{sql}");
        }
    }

    #[test]
    fn parse_text_substitutes_literals() {
        let cases: &[(&str, &str)] = &[
            (
                "SELECT CAST(a AS CHAR(?)) FROM t WHERE id = ?",
                "SELECT CAST(a AS CHAR(0)) FROM t WHERE id = 0",
            ),
            (
                "SELECT DATE ?, a AS ? FROM t",
                "SELECT DATE '', a AS '' FROM t",
            ),
            (
                "CREATE TABLE t (a INT COMMENT ?) COMMENT=?",
                "CREATE TABLE t (a INT COMMENT '') COMMENT=''",
            ),
            ("SELECT ? ?", "SELECT '' ''"),
        ];
        for (key, want) in cases {
            let toks: Vec<_> = Lexer::new(key).collect();
            assert_eq!(parse_text(&toks), *want, "{key}");
        }
    }
}
