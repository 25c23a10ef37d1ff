//! Token-level facts about a statement's text that the shard planner needs without a parse:
//! the identifiers it names, where its `?` placeholders are, and the database a
//! `CREATE/DROP DATABASE` names.

use super::lexer::{Lexer, TokKind};
use super::scan::unbacktick;

/// Every identifier (plain or backtick-quoted, unquoted) in `sql`, in order. Keywords come
/// out too: callers look names up, so an extra word only costs a lookup.
pub fn identifiers(sql: &str) -> Vec<String> {
    Lexer::new(sql)
        .filter_map(|t| match t.kind {
            TokKind::Word => Some(t.text.to_string()),
            TokKind::QuotedIdent => Some(unbacktick(t.text)),
            _ => None,
        })
        .collect()
}

/// Every unquoted word (keywords and plain identifiers, not backtick-quoted names) in `sql`,
/// in order, outside strings and comments.
pub fn words(sql: &str) -> Vec<String> {
    Lexer::new(sql)
        .filter(|t| t.kind == TokKind::Word)
        .map(|t| t.text.to_string())
        .collect()
}

/// Byte offsets of the `?` placeholders of `sql` (outside strings and comments), in order.
pub fn placeholder_offsets(sql: &str) -> Vec<usize> {
    Lexer::new(sql)
        .filter(|t| t.kind == TokKind::Placeholder)
        .map(|t| t.start)
        .collect()
}

/// The database named by `CREATE DATABASE|SCHEMA [IF NOT EXISTS] name` or
/// `DROP DATABASE|SCHEMA [IF EXISTS] name`.
pub fn database_ddl_target(sql: &str) -> Option<String> {
    let toks: Vec<_> = Lexer::new(sql).collect();
    let mut i = 0;
    if !toks.get(i)?.is_any_kw(&["CREATE", "DROP"]) {
        return None;
    }
    i += 1;
    if !toks.get(i)?.is_any_kw(&["DATABASE", "SCHEMA"]) {
        return None;
    }
    i += 1;
    if toks.get(i)?.is_kw("IF") {
        i += 1;
        if toks.get(i)?.is_kw("NOT") {
            i += 1;
        }
        if !toks.get(i)?.is_kw("EXISTS") {
            return None;
        }
        i += 1;
    }
    let name = toks.get(i)?;
    match name.kind {
        TokKind::Word => Some(name.text.to_string()),
        TokKind::QuotedIdent => Some(unbacktick(name.text)),
        _ => None,
    }
}

/// `sql` with the database name of a `CREATE/DROP DATABASE` replaced by `db` (the rest of
/// the text, options included, stays as written).
pub fn with_database_ddl_target(sql: &str, db: &str) -> Option<String> {
    let toks: Vec<_> = Lexer::new(sql).collect();
    let target = database_ddl_target(sql)?;
    let tok = toks.iter().find(|t| {
        (t.kind == TokKind::Word && t.text == target)
            || (t.kind == TokKind::QuotedIdent && unbacktick(t.text) == target)
    })?;
    Some(format!(
        "{}`{}`{}",
        &sql[..tok.start],
        db.replace('`', "``"),
        &sql[tok.end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_identifiers_placeholders_and_database_targets() {
        assert_eq!(
            identifiers("SELECT a FROM `my t` WHERE b = 'x' -- c"),
            vec!["SELECT", "a", "FROM", "my t", "WHERE", "b"]
        );
        let sql = "SELECT '?' , ? FROM t WHERE a = ? /* ? */";
        assert_eq!(placeholder_offsets(sql), vec![13, 32]);
        assert_eq!(
            database_ddl_target("CREATE DATABASE app"),
            Some("app".into())
        );
        assert_eq!(
            database_ddl_target("drop schema if exists `a b`"),
            Some("a b".into())
        );
        assert_eq!(
            database_ddl_target("CREATE DATABASE IF NOT EXISTS app CHARACTER SET utf8mb4"),
            Some("app".into())
        );
        assert_eq!(database_ddl_target("CREATE TABLE app (x INT)"), None);
        assert_eq!(
            with_database_ddl_target(
                "CREATE DATABASE IF NOT EXISTS app CHARSET utf8mb4",
                "app_00_80"
            )
            .as_deref(),
            Some("CREATE DATABASE IF NOT EXISTS `app_00_80` CHARSET utf8mb4")
        );
    }
}
