//! SQL text that switchyard writes itself: string literals and identifiers, quoted one way
//! everywhere, by MariaDB's rules (a server whose `sql_mode` lacks `NO_BACKSLASH_ESCAPES`,
//! MariaDB's default).

/// A single-quoted string literal: a quote doubled, a backslash escaped, NUL written as `\0`
/// (so that the text stays one C string for tools that read it as such).
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// A backtick-quoted identifier (a backtick doubled).
pub fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_and_identifiers_are_escaped() {
        for (raw, quoted) in [
            ("app", "'app'"),
            ("it's", "'it''s'"),
            ("a\\b", "'a\\\\b'"),
            ("nul\0here", "'nul\\0here'"),
            ("", "''"),
            ("naïve", "'naïve'"),
        ] {
            assert_eq!(quote(raw), quoted, "{raw:?}");
        }
        assert_eq!(quote_ident("app"), "`app`");
        assert_eq!(quote_ident("a`b"), "`a``b`");
    }
}
