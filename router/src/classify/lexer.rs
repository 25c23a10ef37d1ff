//! A small MySQL/MariaDB lexer: one forward byte scan, no allocation, never panics.
//! It is shared by the normaliser (the cache key), the fallback classifier and the
//! `SET` parser, so that all three agree on where strings, comments and statements end.

/// What a token is. Keywords are plain [`TokKind::Word`]s: callers compare them
/// case-insensitively, because the lexer cannot tell a keyword from an identifier.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokKind {
    /// Unquoted identifier or keyword (`SELECT`, `t1`, `1abc`).
    Word,
    /// Backtick-quoted identifier, quotes included.
    QuotedIdent,
    /// String literal, quotes and any prefix (`_utf8mb4'x'`, `X'0A'`, `N'x'`) included.
    /// Double-quoted text is a string too (the server default, without ANSI_QUOTES).
    Str,
    /// Numeric literal (`1`, `1.5e3`, `.5`, `0x1F`, `0b101`).
    Number,
    /// A `?` (already-normalised literal, or a client-side placeholder).
    Placeholder,
    /// `@user_var`, `@'quoted var'`, `@@system_var`, `@@session.var`.
    Var,
    /// An optimizer hint comment `/*+ ... */`, kept whole.
    Hint,
    /// Operator or punctuation; multi-byte operators (`:=`, `<=>`, `->>`) are one token.
    Punct,
}

/// One token: its kind, its text (a slice of the input) and where it sits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Token<'a> {
    pub kind: TokKind,
    pub text: &'a str,
    pub start: usize,
    pub end: usize,
    /// Whitespace or a comment separated this token from the previous one.
    pub gap: bool,
}

impl Token<'_> {
    /// Is this the (case-insensitive) keyword `kw`?
    pub fn is_kw(&self, kw: &str) -> bool {
        self.kind == TokKind::Word && self.text.eq_ignore_ascii_case(kw)
    }

    /// Is this exactly the punctuation `p`?
    pub fn is_punct(&self, p: &str) -> bool {
        self.kind == TokKind::Punct && self.text == p
    }

    /// Is this one of the (case-insensitive) keywords in `kws`?
    pub fn is_any_kw(&self, kws: &[&str]) -> bool {
        self.kind == TokKind::Word && kws.iter().any(|k| self.text.eq_ignore_ascii_case(k))
    }
}

/// Bytes that may appear in an unquoted identifier. Every byte of a multi-byte UTF-8
/// character is >= 0x80, so such characters stay inside one word and every token
/// boundary falls on a character boundary.
fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// The lexer: an iterator of [`Token`]s over `src`.
pub(crate) struct Lexer<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
    /// Inside a `/*! ... */` executable comment: its content is code, and the next
    /// `*/` only closes it.
    in_exec: bool,
    /// The previous token was an identifier with nothing in between (`t.5` is a
    /// qualified name, not `t` then `.5`).
    prev_ident: bool,
    /// Return optimizer hints as [`TokKind::Hint`] tokens instead of skipping them
    /// like comments.
    hints: bool,
}

impl<'a> Lexer<'a> {
    /// A lexer that skips optimizer hints like comments: nothing is classified by
    /// them, and `/*+ ... */` before a statement is just a comment.
    pub fn new(src: &'a str) -> Self {
        Lexer {
            src,
            b: src.as_bytes(),
            pos: 0,
            in_exec: false,
            prev_ident: false,
            hints: false,
        }
    }

    /// A lexer that returns optimizer hints as tokens (the normaliser keeps them).
    pub fn with_hints(src: &'a str) -> Self {
        Lexer {
            hints: true,
            ..Lexer::new(src)
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.b.get(i).copied().unwrap_or(0)
    }

    /// Index just past the first occurrence of `*/` at or after `from`, or the end.
    fn after_comment_end(&self, from: usize) -> usize {
        let mut i = from;
        while i + 1 < self.b.len() {
            if self.b[i] == b'*' && self.b[i + 1] == b'/' {
                return i + 2;
            }
            i += 1;
        }
        self.b.len()
    }

    fn skip_line(&mut self) {
        while self.pos < self.b.len() && self.b[self.pos] != b'\n' {
            self.pos += 1;
        }
    }

    /// Skips a quoted run starting at `self.pos` (which holds the quote). Backslash
    /// escapes and doubled quotes are honoured; an unterminated run ends at the end.
    fn skip_quoted(&mut self, backslash: bool) {
        let q = self.b[self.pos];
        self.pos += 1;
        while self.pos < self.b.len() {
            let c = self.b[self.pos];
            if backslash && c == b'\\' {
                self.pos = (self.pos + 2).min(self.b.len());
            } else if c == q {
                if self.at(self.pos + 1) == q {
                    self.pos += 2;
                } else {
                    self.pos += 1;
                    return;
                }
            } else {
                self.pos += 1;
            }
        }
    }

    fn skip_word(&mut self) {
        while self.pos < self.b.len() && is_word_byte(self.b[self.pos]) {
            self.pos += 1;
        }
    }

    /// Scans a token that starts with a digit or `.digit`; it may turn out to be an
    /// identifier (`1abc`, `2e`), as in MySQL.
    fn number_or_word(&mut self) -> TokKind {
        let start = self.pos;
        let b0 = self.at(start);
        let b1 = self.at(start + 1);
        if b0 == b'0' && matches!(b1, b'x' | b'X' | b'b' | b'B') {
            let hex = matches!(b1, b'x' | b'X');
            let mut i = start + 2;
            while i < self.b.len()
                && (if hex {
                    self.b[i].is_ascii_hexdigit()
                } else {
                    matches!(self.b[i], b'0' | b'1')
                })
            {
                i += 1;
            }
            if i > start + 2 && !is_word_byte(self.at(i)) {
                self.pos = i;
                return TokKind::Number;
            }
            self.skip_word();
            return TokKind::Word;
        }
        let mut i = start;
        while self.at(i).is_ascii_digit() {
            i += 1;
        }
        let mut fraction = false;
        if self.at(i) == b'.' {
            fraction = true;
            i += 1;
            while self.at(i).is_ascii_digit() {
                i += 1;
            }
        }
        if matches!(self.at(i), b'e' | b'E') {
            let sign = usize::from(matches!(self.at(i + 1), b'+' | b'-'));
            if self.at(i + 1 + sign).is_ascii_digit() {
                i += 1 + sign;
                while self.at(i).is_ascii_digit() {
                    i += 1;
                }
            }
        }
        if !fraction && is_word_byte(self.at(i)) {
            self.skip_word();
            return TokKind::Word;
        }
        self.pos = i;
        TokKind::Number
    }

    /// `@name`, `@'quoted'`, `@@name`, `@@scope.name`.
    fn variable(&mut self) {
        self.pos += 1;
        if self.at(self.pos) == b'@' {
            self.pos += 1;
        }
        loop {
            let c = self.at(self.pos);
            if self.pos < self.b.len() && (is_word_byte(c) || c == b'.') {
                self.pos += 1;
            } else if matches!(c, b'`' | b'\'' | b'"') {
                self.skip_quoted(c != b'`');
            } else {
                return;
            }
        }
    }

    fn punct_len(&self) -> usize {
        let rest = &self.b[self.pos..];
        const THREE: [&[u8]; 2] = [b"<=>", b"->>"];
        const TWO: [&[u8]; 10] = [
            b":=", b"<=", b">=", b"<>", b"!=", b"<<", b">>", b"||", b"&&", b"->",
        ];
        if THREE.iter().any(|op| rest.starts_with(op)) {
            3
        } else if TWO.iter().any(|op| rest.starts_with(op)) {
            2
        } else {
            1
        }
    }
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Token<'a>;

    fn next(&mut self) -> Option<Token<'a>> {
        let mut gap = false;
        loop {
            let c = *self.b.get(self.pos)?;
            let n = self.at(self.pos + 1);
            if c <= b' ' {
                self.pos += 1;
            } else if c == b'#' || (c == b'-' && n == b'-' && self.at(self.pos + 2) <= b' ') {
                // `--` starts a comment only before whitespace or a control byte (or
                // the end): `1--1` is arithmetic.
                self.skip_line();
            } else if c == b'/' && n == b'*' {
                let third = self.at(self.pos + 2);
                if third == b'+' && self.hints {
                    break;
                }
                let exec = if third == b'!' {
                    Some(self.pos + 3)
                } else if third == b'M' && self.at(self.pos + 3) == b'!' {
                    Some(self.pos + 4)
                } else {
                    None
                };
                match exec {
                    Some(p) => {
                        // Executable comment: drop the marker and version, keep the code.
                        self.pos = p;
                        while self.at(self.pos).is_ascii_digit() {
                            self.pos += 1;
                        }
                        self.in_exec = true;
                    }
                    None => self.pos = self.after_comment_end(self.pos + 2),
                }
            } else if self.in_exec && c == b'*' && n == b'/' {
                self.pos += 2;
                self.in_exec = false;
            } else {
                break;
            }
            gap = true;
        }
        let start = self.pos;
        let c = self.b[start];
        let n = self.at(start + 1);
        let kind = match c {
            b'/' if n == b'*' => {
                // Only `/*+` reaches here (other comments were skipped above).
                self.pos = self.after_comment_end(start + 3);
                TokKind::Hint
            }
            b'\'' | b'"' => {
                self.skip_quoted(true);
                TokKind::Str
            }
            b'`' => {
                self.skip_quoted(false);
                TokKind::QuotedIdent
            }
            b'@' => {
                self.variable();
                TokKind::Var
            }
            b'?' => {
                self.pos += 1;
                TokKind::Placeholder
            }
            b'0'..=b'9' => self.number_or_word(),
            b'.' if n.is_ascii_digit() && (gap || !self.prev_ident) => self.number_or_word(),
            _ if is_word_byte(c) => {
                self.skip_word();
                let word = &self.b[start..self.pos];
                let q = self.at(self.pos);
                // Introducers and prefixed literals: _utf8mb4'x', N'x', X'0A', B'01'.
                let introducer = word.first() == Some(&b'_') || word.eq_ignore_ascii_case(b"n");
                let radix = word.eq_ignore_ascii_case(b"x") || word.eq_ignore_ascii_case(b"b");
                let prefixed = ((q == b'\'' || q == b'"') && introducer) || (q == b'\'' && radix);
                if prefixed {
                    self.skip_quoted(true);
                    TokKind::Str
                } else {
                    TokKind::Word
                }
            }
            _ => {
                self.pos += self.punct_len();
                TokKind::Punct
            }
        };
        self.prev_ident = matches!(kind, TokKind::Word | TokKind::QuotedIdent);
        let end = self.pos.min(self.b.len());
        Some(Token {
            kind,
            text: self.src.get(start..end).unwrap_or(""),
            start,
            end,
            gap,
        })
    }
}

/// Appends `t` to `out`, which ends with `prev`: one space where the source had
/// whitespace or comments, and also between two `-` (`1--1` is `1 - -1`, but written
/// back as `--` it could be read as a comment once a space follows).
pub(crate) fn push_token(out: &mut String, prev: Option<&Token<'_>>, t: &Token<'_>, text: &str) {
    let minus_minus = t.is_punct("-") && prev.is_some_and(|p| p.is_punct("-"));
    if (t.gap || minus_minus) && !out.is_empty() {
        out.push(' ');
    }
    out.push_str(text);
}

/// Splits a token list into statements at top-level `;`. Empty statements are dropped.
///
/// Stored-program bodies (`CREATE PROCEDURE ... BEGIN ...; ...; END`, MariaDB's
/// `BEGIN NOT ATOMIC ... END`) contain `;` that do not end the statement: for those
/// heads the split waits until every `BEGIN`/`CASE` is closed by its `END`. If the
/// blocks do not balance, it falls back to splitting at every `;`, which reports more
/// statements rather than fewer (the conservative side: multi-statement pins).
pub(crate) fn split_statements<'t, 'a>(toks: &'t [Token<'a>]) -> Vec<&'t [Token<'a>]> {
    if has_compound_head(toks) {
        if let Some(parts) = split_blocks(toks) {
            return parts;
        }
    }
    toks.split(|t| t.is_punct(";"))
        .filter(|s| !s.is_empty())
        .collect()
}

fn split_blocks<'t, 'a>(toks: &'t [Token<'a>]) -> Option<Vec<&'t [Token<'a>]>> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, t) in toks.iter().enumerate() {
        if t.is_any_kw(&["BEGIN", "CASE"]) {
            depth += 1;
        } else if t.is_kw("END") {
            // `END IF` / `END LOOP` ... close blocks this scan does not count.
            let closes_other = toks
                .get(i + 1)
                .is_some_and(|n| n.is_any_kw(&["IF", "LOOP", "WHILE", "REPEAT", "FOR"]));
            if !closes_other {
                depth = depth.checked_sub(1)?;
            }
        } else if t.is_punct(";") && depth == 0 {
            if i > start {
                parts.push(&toks[start..i]);
            }
            start = i + 1;
        }
    }
    if depth != 0 {
        return None;
    }
    if toks.len() > start {
        parts.push(&toks[start..]);
    }
    Some(parts)
}

/// Does the text start with a statement that may hold a `BEGIN ... END` body?
fn has_compound_head(toks: &[Token<'_>]) -> bool {
    match toks.first() {
        Some(t) if t.is_kw("BEGIN") => toks.get(1).is_some_and(|n| n.is_kw("NOT")),
        Some(t) if t.is_kw("CREATE") => matches!(
            ddl_object(toks, 1),
            Some(o) if o.is_any_kw(&["PROCEDURE", "FUNCTION", "TRIGGER", "EVENT", "PACKAGE"])
        ),
        _ => false,
    }
}

/// The object keyword of a `CREATE`/`ALTER`/`DROP`/`RENAME` whose verb is at
/// `i - 1`, skipping modifiers (`OR REPLACE`, `DEFINER = u@h`, `TEMPORARY`, ...).
pub(crate) fn ddl_object<'t, 'a>(toks: &'t [Token<'a>], mut i: usize) -> Option<&'t Token<'a>> {
    const MODIFIERS: [&str; 17] = [
        "OR",
        "REPLACE",
        "TEMPORARY",
        "SQL",
        "SECURITY",
        "DEFINER",
        "INVOKER",
        "ALGORITHM",
        "UNDEFINED",
        "MERGE",
        "TEMPTABLE",
        "ONLINE",
        "OFFLINE",
        "IGNORE",
        "UNIQUE",
        "FULLTEXT",
        "SPATIAL",
    ];
    const MORE: [&str; 2] = ["AGGREGATE", "NONBLOCKING"];
    while let Some(t) = toks.get(i) {
        if t.is_kw("DEFINER") && toks.get(i + 1).is_some_and(|n| n.is_punct("=")) {
            // DEFINER = user, where user is `u`@`h`, 'u'@'h', u@h or CURRENT_USER[()].
            i += 3;
            while toks
                .get(i)
                .is_some_and(|n| n.kind == TokKind::Var || n.is_punct("(") || n.is_punct(")"))
            {
                i += 1;
            }
        } else if t.is_punct("=") || t.is_any_kw(&MODIFIERS) || t.is_any_kw(&MORE) {
            // `=` belongs to `ALGORITHM = MERGE`.
            i += 1;
        } else {
            return Some(t);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(s: &str) -> Vec<(TokKind, &str)> {
        Lexer::new(s).map(|t| (t.kind, t.text)).collect()
    }

    #[test]
    fn tokens() {
        use TokKind::*;
        let cases: &[(&str, &[(TokKind, &str)])] = &[
            ("SELECT 1", &[(Word, "SELECT"), (Number, "1")]),
            ("a:=1.5e3", &[(Word, "a"), (Punct, ":="), (Number, "1.5e3")]),
            (
                "1abc 2e 0x1F 0xZZ .5",
                &[
                    (Word, "1abc"),
                    (Word, "2e"),
                    (Number, "0x1F"),
                    (Word, "0xZZ"),
                    (Number, ".5"),
                ],
            ),
            ("t.5col", &[(Word, "t"), (Punct, "."), (Word, "5col")]),
            (
                "'it''s' \"a\\\"b\"",
                &[(Str, "'it''s'"), (Str, "\"a\\\"b\"")],
            ),
            (
                "_utf8mb4'x' X'0A' b'01' N'z'",
                &[
                    (Str, "_utf8mb4'x'"),
                    (Str, "X'0A'"),
                    (Str, "b'01'"),
                    (Str, "N'z'"),
                ],
            ),
            (
                "`a``b` @x @'q v' @@session.sql_mode",
                &[
                    (QuotedIdent, "`a``b`"),
                    (Var, "@x"),
                    (Var, "@'q v'"),
                    (Var, "@@session.sql_mode"),
                ],
            ),
            (
                "a /* c */ b -- d\n c # e\n d",
                &[(Word, "a"), (Word, "b"), (Word, "c"), (Word, "d")],
            ),
            (
                "1--1",
                &[(Number, "1"), (Punct, "-"), (Punct, "-"), (Number, "1")],
            ),
            (
                "/*!40101 SET x */;",
                &[(Word, "SET"), (Word, "x"), (Punct, ";")],
            ),
            ("/*M!100100 DO 1*/", &[(Word, "DO"), (Number, "1")]),
            ("SELECT /*+ BKA(t) */ 1", &[(Word, "SELECT"), (Number, "1")]),
            (
                "a<=>b->>c",
                &[
                    (Word, "a"),
                    (Punct, "<=>"),
                    (Word, "b"),
                    (Punct, "->>"),
                    (Word, "c"),
                ],
            ),
            ("'unterminated", &[(Str, "'unterminated")]),
            ("/* unterminated", &[]),
            ("é1 x", &[(Word, "é1"), (Word, "x")]),
        ];
        for (sql, want) in cases {
            assert_eq!(kinds(sql), *want, "{sql}");
        }
    }

    #[test]
    fn hints_on_request() {
        let toks: Vec<_> = Lexer::with_hints("SELECT /*+ BKA(t) */ 1")
            .map(|t| (t.kind, t.text))
            .collect();
        assert_eq!(
            toks,
            [
                (TokKind::Word, "SELECT"),
                (TokKind::Hint, "/*+ BKA(t) */"),
                (TokKind::Number, "1")
            ]
        );
    }

    #[test]
    fn gaps() {
        let g: Vec<bool> = Lexer::new("a/**/b c,d").map(|t| t.gap).collect();
        assert_eq!(g, [false, true, true, false, false]);
    }

    #[test]
    fn splitting() {
        let cases: &[(&str, usize)] = &[
            ("SELECT 1", 1),
            ("SELECT 1;", 1),
            ("SELECT 1;; ;", 1),
            ("SELECT ';'; SELECT 2", 2),
            ("CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END", 1),
            ("CREATE DEFINER=`u`@`h` PROCEDURE p() BEGIN IF 1 THEN SELECT 1; END IF; END; SELECT 3", 2),
            ("BEGIN NOT ATOMIC SELECT CASE WHEN 1 THEN 2 END; END", 1),
            ("CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2", 2),
            ("BEGIN; SELECT 1", 2),
        ];
        for (sql, n) in cases {
            let toks: Vec<_> = Lexer::new(sql).collect();
            assert_eq!(split_statements(&toks).len(), *n, "{sql}");
        }
    }
}
