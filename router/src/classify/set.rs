//! The `SET` statement parser: what session state a `SET` changes, with replay text.
//! Hand-written over the lexer's tokens, because sqlparser rejects much of MariaDB's
//! `SET` grammar and its re-serialisation loses `SESSION`.

use super::lexer::{push_token, split_statements, Lexer, TokKind, Token};

/// One assignment (or form) of a `SET` statement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetItem {
    /// `SET NAMES x [COLLATE y]`, lower-cased and unquoted; `SET NAMES DEFAULT` gives
    /// charset `"default"`.
    Names {
        charset: String,
        collation: Option<String>,
    },
    /// `SET CHARACTER SET x` / `SET CHARSET x` (lower-cased, unquoted; `"default"`).
    CharacterSet { charset: String },
    /// A session system variable: `SET [SESSION|LOCAL] x = v`, `SET @@x = v`,
    /// `SET @@session.x = v`, `SET @@local.x = v`. `name` is lower-cased, without prefix.
    Session { name: String, value: SetValue },
    /// A user variable `SET @x = v`: `name` as written, without `@` and quotes.
    User { name: String, value: SetValue },
    /// `SET GLOBAL x = v` / `@@global.x` / `PERSIST`: server state, not session state.
    Global { name: String },
    /// `SET [SESSION|GLOBAL] TRANSACTION ...`.
    Transaction { scope: TxScope },
    /// `SET PASSWORD ...`.
    Password,
    /// `SET ROLE ...` / `SET DEFAULT ROLE ...`.
    Role,
    /// MariaDB `SET STATEMENT ... FOR <stmt>`: per-statement values, no session state.
    Statement,
    /// A recognised `SET` form this parser does not model (e.g. MySQL
    /// `SET RESOURCE GROUP`); holds the text after `SET`.
    Other(String),
}

/// Which transactions a `SET ... TRANSACTION` applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TxScope {
    /// No scope keyword: only the next transaction.
    Next,
    /// `SESSION`/`LOCAL`: every later transaction of the session.
    Session,
    /// `GLOBAL`: the server default.
    Global,
}

/// The value of an assignment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SetValue {
    /// `DEFAULT`.
    Default,
    /// A literal, as written (comments removed), safe to replay on another connection:
    /// a number with optional sign, a quoted string (quotes, escapes, `_charset` and
    /// `X'..'` prefixes kept), `ON`/`OFF`/`TRUE`/`FALSE`/`NULL` or a bare word.
    Literal(String),
    /// Anything else (functions, operators, subqueries, variables): its value depends
    /// on when and where it is evaluated.
    Expression(String),
}

/// Why a text could not be parsed as a `SET` statement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SetParseError {
    /// The text does not start with `SET`.
    #[error("not a SET statement")]
    NotSet,
    /// Something else was found where `expected` was required.
    #[error("malformed SET statement: expected {expected} at byte {offset}")]
    Expected {
        expected: &'static str,
        offset: usize,
    },
}

/// Parses the first statement of `sql` as a `SET` statement.
///
/// Comments are skipped and the code in `/*! ... */` is read, so mysqldump's
/// `/*!40101 SET NAMES utf8 */` works. Only the first statement of a multi-statement
/// text is parsed (the classifier pins such sessions anyway).
pub fn parse_set(sql: &str) -> Result<Vec<SetItem>, SetParseError> {
    let toks: Vec<Token<'_>> = Lexer::new(sql).collect();
    let first = split_statements(&toks).into_iter().next().unwrap_or(&[]);
    parse_set_tokens(first)
}

/// Which scope an assignment without its own scope keyword gets: the last `GLOBAL` or
/// `SESSION` written earlier in the statement applies to later assignments (MySQL).
#[derive(Clone, Copy, PartialEq, Eq)]
enum VarScope {
    Session,
    Global,
}

/// Words that look bare but are functions: `SET @t = CURRENT_TIMESTAMP` is not a literal.
const NILADIC_FUNCTIONS: [&str; 11] = [
    "CURRENT_DATE",
    "CURRENT_TIME",
    "CURRENT_TIMESTAMP",
    "CURRENT_USER",
    "CURRENT_ROLE",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "UTC_DATE",
    "UTC_TIME",
    "UTC_TIMESTAMP",
    "SESSION_USER",
];

/// Parses one statement's tokens (raw text or normalised key: `?` counts as a literal).
pub(crate) fn parse_set_tokens(toks: &[Token<'_>]) -> Result<Vec<SetItem>, SetParseError> {
    let mut p = Cursor { toks, i: 0 };
    if !p.peek().is_some_and(|t| t.is_kw("SET")) {
        return Err(SetParseError::NotSet);
    }
    p.i += 1;
    // Forms that take the whole statement.
    if let Some(t) = p.peek() {
        if t.is_kw("STATEMENT") {
            return Ok(vec![SetItem::Statement]);
        }
        if t.is_kw("PASSWORD") {
            return Ok(vec![SetItem::Password]);
        }
        if t.is_kw("ROLE") || (t.is_kw("DEFAULT") && p.peek_at(1).is_some_and(|n| n.is_kw("ROLE")))
        {
            return Ok(vec![SetItem::Role]);
        }
        if t.is_kw("RESOURCE") {
            return Ok(vec![SetItem::Other(join(&toks[p.i..]))]);
        }
    }
    let mut items = Vec::new();
    let mut scope = VarScope::Session;
    loop {
        items.push(p.item(&mut scope)?);
        match p.peek() {
            None => return Ok(items),
            Some(t) if t.is_punct(",") => p.i += 1,
            Some(_) => return Err(p.expected("`,` or end of statement")),
        }
    }
}

struct Cursor<'t, 'a> {
    toks: &'t [Token<'a>],
    i: usize,
}

impl<'a> Cursor<'_, 'a> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.toks.get(self.i)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Token<'a>> {
        self.toks.get(self.i + ahead)
    }

    fn expected(&self, expected: &'static str) -> SetParseError {
        let offset = self
            .peek()
            .map_or_else(|| self.toks.last().map_or(0, |t| t.end), |t| t.start);
        SetParseError::Expected { expected, offset }
    }

    /// One comma-separated item, with its optional scope keyword.
    fn item(&mut self, scope: &mut VarScope) -> Result<SetItem, SetParseError> {
        let mut explicit = None;
        if let Some(t) = self.peek() {
            if t.is_any_kw(&["GLOBAL", "PERSIST", "PERSIST_ONLY"]) {
                explicit = Some(TxScope::Global);
                *scope = VarScope::Global;
                self.i += 1;
            } else if t.is_any_kw(&["SESSION", "LOCAL"]) {
                explicit = Some(TxScope::Session);
                *scope = VarScope::Session;
                self.i += 1;
            }
        }
        let Some(t) = self.peek().copied() else {
            return Err(self.expected("a variable assignment"));
        };
        if t.is_kw("TRANSACTION")
            && self
                .peek_at(1)
                .is_some_and(|n| n.is_any_kw(&["ISOLATION", "READ"]))
        {
            // The characteristics list has its own commas: it takes the rest.
            self.i = self.toks.len();
            return Ok(SetItem::Transaction {
                scope: explicit.unwrap_or(TxScope::Next),
            });
        }
        if explicit.is_none() && t.is_kw("NAMES") {
            self.i += 1;
            let charset = self.name_value("a character set name")?;
            let mut collation = None;
            if self.peek().is_some_and(|c| c.is_kw("COLLATE")) {
                self.i += 1;
                collation = Some(self.name_value("a collation name")?);
            }
            return Ok(SetItem::Names { charset, collation });
        }
        let charset_words = if t.is_kw("CHARSET") {
            1
        } else if t.is_kw("CHARACTER") && self.peek_at(1).is_some_and(|n| n.is_kw("SET")) {
            2
        } else {
            0
        };
        if explicit.is_none() && charset_words > 0 {
            self.i += charset_words;
            let charset = self.name_value("a character set name")?;
            return Ok(SetItem::CharacterSet { charset });
        }
        let target = self.target(*scope)?;
        match self.peek() {
            Some(a) if a.is_punct("=") || a.is_punct(":=") => self.i += 1,
            _ => return Err(self.expected("`=` or `:=`")),
        }
        let value = self.value()?;
        Ok(match target {
            Target::User(name) => SetItem::User { name, value },
            Target::Session(name) => SetItem::Session { name, value },
            Target::Global(name) => SetItem::Global { name },
        })
    }

    /// The assigned variable.
    fn target(&mut self, scope: VarScope) -> Result<Target, SetParseError> {
        let Some(t) = self.peek().copied() else {
            return Err(self.expected("a variable name"));
        };
        if t.kind == TokKind::Var {
            self.i += 1;
            if let Some(sys) = t.text.strip_prefix("@@") {
                let lower = sys.to_ascii_lowercase();
                if let Some(name) = lower.strip_prefix("global.") {
                    return Ok(Target::Global(name.to_string()));
                }
                let name = ["session.", "local."]
                    .iter()
                    .find_map(|p| lower.strip_prefix(p))
                    .unwrap_or(&lower);
                return Ok(Target::Session(name.to_string()));
            }
            let name = unquote(t.text.get(1..).unwrap_or(""));
            if name.is_empty() {
                return Err(self.expected("a user variable name"));
            }
            return Ok(Target::User(name));
        }
        // A system variable, possibly structured (`keycache1.key_buffer_size`).
        let mut name = String::new();
        loop {
            match self.peek() {
                Some(w) if matches!(w.kind, TokKind::Word | TokKind::QuotedIdent) => {
                    name.push_str(&unquote(w.text).to_ascii_lowercase());
                    self.i += 1;
                }
                _ => return Err(self.expected("a variable name")),
            }
            if self.peek().is_some_and(|d| d.is_punct(".")) {
                name.push('.');
                self.i += 1;
            } else {
                break;
            }
        }
        Ok(match scope {
            VarScope::Session => Target::Session(name),
            VarScope::Global => Target::Global(name),
        })
    }

    /// A charset or collation name: a word, quoted string or `DEFAULT`.
    fn name_value(&mut self, expected: &'static str) -> Result<String, SetParseError> {
        match self.peek().copied() {
            Some(t)
                if matches!(
                    t.kind,
                    TokKind::Word | TokKind::QuotedIdent | TokKind::Str | TokKind::Placeholder
                ) =>
            {
                self.i += 1;
                Ok(unquote(t.text).to_ascii_lowercase())
            }
            _ => Err(self.expected(expected)),
        }
    }

    /// The value tokens up to the next top-level `,` (or the end).
    fn value(&mut self) -> Result<SetValue, SetParseError> {
        let start = self.i;
        let mut depth = 0usize;
        while let Some(t) = self.peek() {
            if t.is_punct("(") {
                depth += 1;
            } else if t.is_punct(")") {
                depth = depth.saturating_sub(1);
            } else if t.is_punct(",") && depth == 0 {
                break;
            }
            self.i += 1;
        }
        let v = &self.toks[start..self.i];
        let literal_kinds =
            |k: TokKind| matches!(k, TokKind::Number | TokKind::Str | TokKind::Placeholder);
        Ok(match v {
            [] => return Err(self.expected("a value")),
            [w] if w.is_kw("DEFAULT") => SetValue::Default,
            [w] if w.is_any_kw(&NILADIC_FUNCTIONS) => SetValue::Expression(join(v)),
            [w] if literal_kinds(w.kind)
                || matches!(w.kind, TokKind::Word | TokKind::QuotedIdent) =>
            {
                SetValue::Literal(join(v))
            }
            [s, n]
                if (s.is_punct("-") || s.is_punct("+"))
                    && matches!(n.kind, TokKind::Number | TokKind::Placeholder) =>
            {
                SetValue::Literal(join(v))
            }
            _ => SetValue::Expression(join(v)),
        })
    }
}

enum Target {
    User(String),
    Session(String),
    Global(String),
}

/// The tokens as text: one space where the source had whitespace or comments, so
/// the result replays exactly like the source but carries no comment.
pub(crate) fn join(toks: &[Token<'_>]) -> String {
    let mut out = String::new();
    for (i, t) in toks.iter().enumerate() {
        push_token(
            &mut out,
            i.checked_sub(1).and_then(|p| toks.get(p)),
            t,
            t.text,
        );
    }
    out
}

/// Strips one level of `'..'`, `".."` or `` `..` `` quoting, undoing doubled quotes and
/// (for strings) backslash escapes of the quote and backslash characters.
fn unquote(s: &str) -> String {
    let b = s.as_bytes();
    let (Some(&q), Some(&last)) = (b.first(), b.last()) else {
        return String::new();
    };
    if b.len() < 2 || !matches!(q, b'\'' | b'"' | b'`') || last != q {
        return s.to_string();
    }
    let inner = s.get(1..s.len() - 1).unwrap_or("");
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars().peekable();
    while let Some(c) = chars.next() {
        if c == char::from(q) && chars.peek() == Some(&c) {
            chars.next();
        } else if c == '\\' && q != b'`' {
            if let Some(n) = chars.next() {
                out.push(n);
                continue;
            }
        }
        out.push(c);
    }
    out
}
