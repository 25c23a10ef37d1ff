//! The admin port's statements: a small tokenizer and a parser into [`Statement`]. Keywords
//! are case-insensitive, a trailing `;` is allowed, node addresses may be quoted or bare.

use orchestrator::RebuildMethod;

/// One statement the admin port understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    ShowClusters,
    ShowNodes {
        cluster: Option<String>,
    },
    ShowShards,
    ShowSessions,
    ShowEvents {
        cluster: Option<String>,
        limit: Option<usize>,
    },
    ShowStatus,
    ShowAudit {
        limit: Option<usize>,
    },
    Switchover {
        cluster: String,
        to: Option<String>,
    },
    Failover {
        cluster: String,
    },
    /// `REBUILD cluster 'host:port' [FROM 'host:port'] [LOGICAL|PHYSICAL]`.
    Rebuild {
        cluster: String,
        node: String,
        source: Option<String>,
        method: Option<RebuildMethod>,
    },
    /// `SET MAINTENANCE|PREFERRED|IGNORED [cluster] 'host:port' ON|OFF`.
    SetFlag {
        flag: Flag,
        cluster: Option<String>,
        node: String,
        on: bool,
    },
    Help,
    /// `SELECT` of system variables and simple functions, as clients send on connect.
    Select {
        items: Vec<SelectItem>,
    },
    /// `SET NAMES ...`, `SET autocommit=...`, `COMMIT`, `ROLLBACK`: accepted, nothing to do.
    Ignored,
}

impl Statement {
    /// Whether the statement changes something (and is audited).
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            Statement::Switchover { .. }
                | Statement::Failover { .. }
                | Statement::Rebuild { .. }
                | Statement::SetFlag { .. }
        )
    }
}

/// A node flag an operator sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Maintenance,
    Preferred,
    Ignored,
}

impl Flag {
    pub fn label(self) -> &'static str {
        match self {
            Flag::Maintenance => "maintenance",
            Flag::Preferred => "preferred",
            Flag::Ignored => "ignored",
        }
    }
}

/// One item of a connect-time `SELECT`; `name` is the column name (the text as written).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectItem {
    pub name: String,
    pub expr: SelectExpr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectExpr {
    /// `@@name`, `@@session.name`, `@@global.name` (the name lower-cased, scope dropped).
    Variable(String),
    /// `DATABASE()`, `USER()`, ... (upper-cased).
    Function(String),
    Number(i64),
    Text(String),
}

/// The statements listed in errors and by `HELP`.
pub const SUPPORTED: &str = "SHOW CLUSTERS, SHOW NODES [FROM cluster], SHOW SHARDS, \
    SHOW SESSIONS, SHOW EVENTS [FROM cluster] [LIMIT n], SHOW STATUS, SHOW AUDIT [LIMIT n], \
    SWITCHOVER cluster [TO 'host:port'], FAILOVER cluster, \
    REBUILD cluster 'host:port' [FROM 'host:port'] [LOGICAL|PHYSICAL], \
    SET MAINTENANCE|PREFERRED|IGNORED [cluster] 'host:port' ON|OFF, HELP";

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// Unquoted: keywords, names, numbers, `@@vars`, bare `host:port`.
    Word(String),
    /// Quoted with `'`, `"` or a backtick.
    Quoted(String),
    Sym(char),
}

fn tokenize(sql: &str) -> Result<Vec<Tok>, String> {
    let mut out = Vec::new();
    let mut chars = sql.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
        } else if c == '\'' || c == '"' || c == '`' {
            chars.next();
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => return Err(format!("unterminated {c}-quoted text")),
                    Some('\\') if c != '`' => match chars.next() {
                        Some(e) => s.push(e),
                        None => return Err(format!("unterminated {c}-quoted text")),
                    },
                    Some(q) if q == c => {
                        if chars.peek() == Some(&c) {
                            chars.next();
                            s.push(c);
                        } else {
                            break;
                        }
                    }
                    Some(other) => s.push(other),
                }
            }
            out.push(Tok::Quoted(s));
        } else if is_word_char(c) {
            let mut s = String::new();
            while let Some(&w) = chars.peek() {
                if !is_word_char(w) {
                    break;
                }
                s.push(w);
                chars.next();
            }
            out.push(Tok::Word(s));
        } else {
            chars.next();
            out.push(Tok::Sym(c));
        }
    }
    while out.last() == Some(&Tok::Sym(';')) {
        out.pop();
    }
    Ok(out)
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '@' | '.' | ':' | '$' | '-' | '[' | ']')
}

/// A cursor over the tokens.
struct P {
    toks: Vec<Tok>,
    at: usize,
}

impl P {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.at)
    }

    /// The next token if it is the keyword `kw`.
    fn eat(&mut self, kw: &str) -> bool {
        match self.peek() {
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw) => {
                self.at += 1;
                true
            }
            _ => false,
        }
    }

    fn eat_sym(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Sym(c)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// A name or quoted text.
    fn name(&mut self, what: &str) -> Result<String, String> {
        match self.toks.get(self.at) {
            Some(Tok::Word(w)) | Some(Tok::Quoted(w)) => {
                self.at += 1;
                Ok(w.clone())
            }
            _ => Err(format!("expected {what}")),
        }
    }

    fn number(&mut self) -> Result<usize, String> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                let n = w.parse().map_err(|_| format!("`{w}` is not a number"))?;
                self.at += 1;
                Ok(n)
            }
            _ => Err("expected a number".into()),
        }
    }

    fn end(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(format!("unexpected `{}`", show(t))),
        }
    }

    fn limit(&mut self) -> Result<Option<usize>, String> {
        if self.eat("LIMIT") {
            Ok(Some(self.number()?))
        } else {
            Ok(None)
        }
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::Word(w) => w.clone(),
        Tok::Quoted(q) => format!("'{q}'"),
        Tok::Sym(c) => c.to_string(),
    }
}

/// Parses one statement; the error says what was wrong (the caller adds what is supported).
pub fn parse(sql: &str) -> Result<Statement, String> {
    let toks = tokenize(sql)?;
    if toks.is_empty() {
        return Err("empty statement".into());
    }
    let mut p = P { toks, at: 0 };
    let stmt = if p.eat("SHOW") {
        let s = if p.eat("CLUSTERS") {
            Statement::ShowClusters
        } else if p.eat("NODES") {
            let cluster = if p.eat("FROM") || p.eat("IN") {
                Some(p.name("a cluster name")?)
            } else {
                None
            };
            Statement::ShowNodes { cluster }
        } else if p.eat("SHARDS") {
            Statement::ShowShards
        } else if p.eat("SESSIONS") || p.eat("PROCESSLIST") {
            Statement::ShowSessions
        } else if p.eat("EVENTS") {
            let cluster = if p.eat("FROM") || p.eat("IN") {
                Some(p.name("a cluster name")?)
            } else {
                None
            };
            Statement::ShowEvents {
                cluster,
                limit: p.limit()?,
            }
        } else if p.eat("STATUS") {
            Statement::ShowStatus
        } else if p.eat("AUDIT") {
            Statement::ShowAudit { limit: p.limit()? }
        } else {
            return Err(match p.peek() {
                Some(t) => format!("unknown SHOW {}", show(t)),
                None => "SHOW what?".into(),
            });
        };
        p.end()?;
        s
    } else if p.eat("SWITCHOVER") {
        let cluster = p.name("a cluster name")?;
        let to = if p.eat("TO") {
            Some(p.name("the node to promote, 'host:port'")?)
        } else {
            None
        };
        p.end()?;
        Statement::Switchover { cluster, to }
    } else if p.eat("FAILOVER") {
        let cluster = p.name("a cluster name")?;
        p.end()?;
        Statement::Failover { cluster }
    } else if p.eat("REBUILD") {
        let cluster = p.name("a cluster name")?;
        let node = p.name("the node to rebuild, 'host:port'")?;
        let source = if p.eat("FROM") {
            Some(p.name("the node to copy, 'host:port'")?)
        } else {
            None
        };
        let method = if p.eat("PHYSICAL") {
            Some(RebuildMethod::Physical)
        } else if p.eat("LOGICAL") {
            Some(RebuildMethod::Logical)
        } else {
            None
        };
        p.end()?;
        Statement::Rebuild {
            cluster,
            node,
            source,
            method,
        }
    } else if p.eat("HELP") {
        Statement::Help
    } else if p.eat("SET") {
        let flag = if p.eat("MAINTENANCE") {
            Some(Flag::Maintenance)
        } else if p.eat("PREFERRED") {
            Some(Flag::Preferred)
        } else if p.eat("IGNORED") {
            Some(Flag::Ignored)
        } else {
            None
        };
        match flag {
            Some(flag) => {
                let first = p.name("a node, 'host:port'")?;
                let second = match p.peek() {
                    Some(Tok::Word(w))
                        if w.eq_ignore_ascii_case("ON") || w.eq_ignore_ascii_case("OFF") =>
                    {
                        None
                    }
                    _ => Some(p.name("a node, 'host:port'")?),
                };
                let on = if p.eat("ON") {
                    true
                } else if p.eat("OFF") {
                    false
                } else {
                    return Err("expected ON or OFF".into());
                };
                p.end()?;
                let (cluster, node) = match second {
                    Some(node) => (Some(first), node),
                    None => (None, first),
                };
                Statement::SetFlag {
                    flag,
                    cluster,
                    node,
                    on,
                }
            }
            // Session settings clients send on connect (`SET NAMES`, `SET autocommit`).
            None => Statement::Ignored,
        }
    } else if p.eat("COMMIT") || p.eat("ROLLBACK") {
        Statement::Ignored
    } else if p.eat("SELECT") {
        parse_select(&mut p)?
    } else {
        return Err(format!(
            "unknown statement `{}`",
            show(p.peek().expect("not empty"))
        ));
    };
    Ok(stmt)
}

fn parse_select(p: &mut P) -> Result<Statement, String> {
    let mut items = Vec::new();
    loop {
        let (name, expr) = match p.toks.get(p.at).cloned() {
            Some(Tok::Word(w)) if w.starts_with("@@") => {
                p.at += 1;
                let lower = w[2..].to_ascii_lowercase();
                let bare = lower
                    .strip_prefix("session.")
                    .or_else(|| lower.strip_prefix("global."))
                    .or_else(|| lower.strip_prefix("local."))
                    .unwrap_or(&lower)
                    .to_string();
                (w, SelectExpr::Variable(bare))
            }
            Some(Tok::Word(w)) if p.toks.get(p.at + 1) == Some(&Tok::Sym('(')) => {
                p.at += 2;
                if !p.eat_sym(')') {
                    return Err(format!("{w}() takes no arguments here"));
                }
                (
                    format!("{w}()"),
                    SelectExpr::Function(w.to_ascii_uppercase()),
                )
            }
            Some(Tok::Word(w)) if w.parse::<i64>().is_ok() => {
                p.at += 1;
                let n = w.parse().expect("checked");
                (w, SelectExpr::Number(n))
            }
            Some(Tok::Quoted(q)) => {
                p.at += 1;
                (q.clone(), SelectExpr::Text(q))
            }
            _ => {
                return Err("only SELECT of @@variables and simple functions is known here".into())
            }
        };
        let name = if p.eat("AS") {
            p.name("an alias")?
        } else {
            name
        };
        items.push(SelectItem { name, expr });
        if !p.eat_sym(',') {
            break;
        }
    }
    p.limit()?;
    p.end()?;
    Ok(Statement::Select { items })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements() {
        let cases = [
            ("SHOW CLUSTERS", Statement::ShowClusters),
            ("show clusters;", Statement::ShowClusters),
            (
                "Show Nodes from c1",
                Statement::ShowNodes {
                    cluster: Some("c1".into()),
                },
            ),
            ("SHOW NODES", Statement::ShowNodes { cluster: None }),
            ("SHOW SHARDS ;", Statement::ShowShards),
            ("SHOW SESSIONS", Statement::ShowSessions),
            (
                "SHOW EVENTS IN `c2` LIMIT 5",
                Statement::ShowEvents {
                    cluster: Some("c2".into()),
                    limit: Some(5),
                },
            ),
            ("SHOW STATUS", Statement::ShowStatus),
            (
                "switchover c1",
                Statement::Switchover {
                    cluster: "c1".into(),
                    to: None,
                },
            ),
            (
                "SWITCHOVER c1 TO '127.0.0.1:3312';",
                Statement::Switchover {
                    cluster: "c1".into(),
                    to: Some("127.0.0.1:3312".into()),
                },
            ),
            (
                "FAILOVER c2",
                Statement::Failover {
                    cluster: "c2".into(),
                },
            ),
            (
                "REBUILD c1 '127.0.0.1:3311'",
                Statement::Rebuild {
                    cluster: "c1".into(),
                    node: "127.0.0.1:3311".into(),
                    source: None,
                    method: None,
                },
            ),
            (
                "rebuild c1 127.0.0.1:3311 from '127.0.0.1:3312';",
                Statement::Rebuild {
                    cluster: "c1".into(),
                    node: "127.0.0.1:3311".into(),
                    source: Some("127.0.0.1:3312".into()),
                    method: None,
                },
            ),
            (
                "REBUILD c1 '127.0.0.1:3311' PHYSICAL",
                Statement::Rebuild {
                    cluster: "c1".into(),
                    node: "127.0.0.1:3311".into(),
                    source: None,
                    method: Some(RebuildMethod::Physical),
                },
            ),
            (
                "SET MAINTENANCE '127.0.0.1:3311' ON",
                Statement::SetFlag {
                    flag: Flag::Maintenance,
                    cluster: None,
                    node: "127.0.0.1:3311".into(),
                    on: true,
                },
            ),
            (
                "set preferred c1 127.0.0.1:3311 off",
                Statement::SetFlag {
                    flag: Flag::Preferred,
                    cluster: Some("c1".into()),
                    node: "127.0.0.1:3311".into(),
                    on: false,
                },
            ),
            ("HELP", Statement::Help),
            ("SET NAMES utf8mb4", Statement::Ignored),
            ("SET autocommit=1", Statement::Ignored),
            (
                "select @@version_comment limit 1",
                Statement::Select {
                    items: vec![SelectItem {
                        name: "@@version_comment".into(),
                        expr: SelectExpr::Variable("version_comment".into()),
                    }],
                },
            ),
            (
                "SELECT DATABASE(), @@session.autocommit AS ac",
                Statement::Select {
                    items: vec![
                        SelectItem {
                            name: "DATABASE()".into(),
                            expr: SelectExpr::Function("DATABASE".into()),
                        },
                        SelectItem {
                            name: "ac".into(),
                            expr: SelectExpr::Variable("autocommit".into()),
                        },
                    ],
                },
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(parse(sql), Ok(want), "{sql}");
        }
    }

    #[test]
    fn refusals() {
        for sql in [
            "",
            ";",
            "DROP TABLE t",
            "SHOW TABLES",
            "SHOW",
            "SHOW CLUSTERS extra",
            "SWITCHOVER",
            "SWITCHOVER c1 TO",
            "REBUILD c1",
            "REBUILD c1 '127.0.0.1:1' FROM",
            "REBUILD c1 '127.0.0.1:1' TO '127.0.0.1:2'",
            "SET MAINTENANCE '127.0.0.1:1'",
            "SET MAINTENANCE '127.0.0.1:1' MAYBE",
            "SHOW EVENTS LIMIT x",
            "SELECT * FROM t",
            "SELECT 'unterminated",
        ] {
            assert!(parse(sql).is_err(), "{sql:?} should be refused");
        }
    }

    #[test]
    fn mutating_statements() {
        assert!(parse("SWITCHOVER c1").unwrap().mutates());
        assert!(parse("REBUILD c1 x:1").unwrap().mutates());
        assert!(parse("SET MAINTENANCE x:1 ON").unwrap().mutates());
        assert!(!parse("SHOW NODES").unwrap().mutates());
    }
}
