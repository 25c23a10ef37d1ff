//! A client session's state as the backends must see it (current database, character set,
//! session and user variables, last insert id) and the statements that bring a pooled backend
//! connection from its state to the session's.

use shard_map::sql::quote_ident;
use std::sync::Arc;

use crate::backend::ConnState;
use crate::classify::{SetItem, SetValue, TxScope};

/// What a session needs a backend connection to look like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionState {
    pub db: Option<String>,
    /// The statement that set the character set; `None` while it is the backend default
    /// (`utf8mb4_general_ci`, what pooled connections are opened with).
    pub names: Option<Arc<str>>,
    /// `key -> SET statement`, in application order. Keys: a system variable's name, `@name`
    /// for a user variable, `transaction` for `SET SESSION TRANSACTION`.
    pub vars: Vec<(Arc<str>, Arc<str>)>,
    pub last_insert_id: u64,
}

/// The collation every backend connection is opened with.
pub const BACKEND_COLLATION: u8 = 45;

/// What [`SessionState::apply_set`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetEffect {
    /// The statement's effect cannot be replayed from literals (an expression, a role, ...):
    /// the session must stay on this backend connection.
    pub needs_pin: bool,
    /// `SET TRANSACTION` for the next transaction only: stay until that transaction ends.
    pub next_transaction: bool,
}

/// Variables that `SET NAMES` / `SET CHARACTER SET` overwrite.
const CHARSET_VARS: [&str; 4] = [
    "character_set_client",
    "character_set_results",
    "character_set_connection",
    "collation_connection",
];

impl SessionState {
    /// The state of a new session whose handshake asked for `collation`.
    pub fn for_handshake(collation: u8, db: Option<String>) -> Self {
        SessionState {
            db,
            names: names_for_collation(collation),
            vars: Vec::new(),
            last_insert_id: 0,
        }
    }

    /// The equivalent connection state, to find a matching pooled connection.
    pub fn as_conn_state(&self) -> ConnState {
        ConnState {
            db: self.db.clone(),
            names: self.names.clone(),
            vars: self.vars.clone(),
            last_insert_id: self.last_insert_id,
        }
    }

    /// Whether a connection in state `c` needs no synchronisation (last insert id aside).
    pub fn matches(&self, c: &ConnState) -> bool {
        self.db == c.db && self.names == c.names && self.vars == c.vars
    }

    /// Records the effect of a SET statement that the backend accepted.
    pub fn apply_set(&mut self, items: &[SetItem]) -> SetEffect {
        let mut effect = SetEffect::default();
        for item in items {
            match item {
                SetItem::Names { charset, collation } => {
                    self.vars.retain(|(k, _)| !CHARSET_VARS.contains(&&**k));
                    self.names = if charset.eq_ignore_ascii_case("default") {
                        None
                    } else {
                        Some(match collation {
                            Some(c) => format!("SET NAMES {charset} COLLATE {c}").into(),
                            None => format!("SET NAMES {charset}").into(),
                        })
                    };
                }
                SetItem::CharacterSet { charset } => {
                    self.vars.retain(|(k, _)| !CHARSET_VARS.contains(&&**k));
                    self.names = Some(format!("SET CHARACTER SET {charset}").into());
                }
                SetItem::Session { name, value } => match value {
                    SetValue::Default => self.remove_var(name),
                    SetValue::Literal(v) => {
                        self.put_var(name, format!("SET SESSION {} = {v}", quote_ident(name)))
                    }
                    SetValue::Expression(_) => effect.needs_pin = true,
                },
                SetItem::User { name, value } => {
                    let key = format!("@{name}");
                    match value {
                        SetValue::Default => effect.needs_pin = true,
                        SetValue::Literal(v) => {
                            let sql = format!("SET @{} = {v}", quote_ident(name));
                            self.put_var(&key, sql)
                        }
                        SetValue::Expression(_) => effect.needs_pin = true,
                    }
                }
                SetItem::Global { .. } | SetItem::Statement => {}
                SetItem::Transaction { scope } => match scope {
                    TxScope::Next => effect.next_transaction = true,
                    TxScope::Session => effect.needs_pin = true,
                    TxScope::Global => {}
                },
                SetItem::Password | SetItem::Role | SetItem::Other(_) => effect.needs_pin = true,
            }
        }
        effect
    }

    fn put_var(&mut self, key: &str, sql: String) {
        let sql: Arc<str> = sql.into();
        if let Some(slot) = self.vars.iter_mut().find(|(k, _)| &**k == key) {
            slot.1 = sql;
        } else {
            self.vars.push((key.into(), sql));
        }
    }

    fn remove_var(&mut self, key: &str) {
        self.vars.retain(|(k, _)| &**k != key);
    }
}

/// How to bring a connection in state `have` to state `want`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SyncPlan {
    /// The connection must first be reset (COM_CHANGE_USER): it has a database selected and
    /// the session has none, which no statement can undo.
    pub reset: bool,
    /// Statements to run, joined into one multi-statement round trip.
    pub sql: Vec<String>,
}

/// The plan to bring `have` to `want`; `with_insert_id` also carries the session's
/// LAST_INSERT_ID() over (only statements that read it need that).
pub fn sync_plan(want: &SessionState, have: &ConnState, with_insert_id: bool) -> SyncPlan {
    let mut plan = SyncPlan::default();
    let mut base = have;
    let fresh = ConnState::default();
    if want.db.is_none() && have.db.is_some() {
        plan.reset = true;
        base = &fresh;
    }
    if want.db != base.db {
        if let Some(db) = &want.db {
            plan.sql.push(format!("USE {}", quote_ident(db)));
        }
    }
    if want.names != base.names {
        plan.sql.push(match &want.names {
            Some(s) => s.to_string(),
            None => "SET NAMES utf8mb4 COLLATE utf8mb4_general_ci".into(),
        });
    }
    // Variables the connection has but the session does not go back to their defaults.
    for (k, _) in &base.vars {
        if !want.vars.iter().any(|(wk, _)| wk == k) {
            plan.sql.push(reset_var_sql(k));
        }
    }
    // Re-apply from the first difference on, so that order-dependent settings stay in order.
    let common = want
        .vars
        .iter()
        .zip(&base.vars)
        .take_while(|(a, b)| a == b)
        .count();
    for (_, sql) in &want.vars[common..] {
        plan.sql.push(sql.to_string());
    }
    if with_insert_id && want.last_insert_id != base.last_insert_id {
        plan.sql
            .push(format!("DO LAST_INSERT_ID({})", want.last_insert_id));
    }
    plan
}

fn reset_var_sql(key: &str) -> String {
    if let Some(user) = key.strip_prefix('@') {
        format!("SET @{} = NULL", quote_ident(user))
    } else {
        format!("SET SESSION {} = DEFAULT", quote_ident(key))
    }
}

/// The `SET NAMES` statement for a handshake collation id, `None` for the backend default.
pub fn names_for_collation(id: u8) -> Option<Arc<str>> {
    use mysql_common::collations::{Collation, CollationId};
    if id == BACKEND_COLLATION {
        return None;
    }
    let c = Collation::from(CollationId::from(u16::from(id)));
    let charset = c.charset();
    if charset.is_empty() {
        return Some("SET NAMES utf8mb4".into());
    }
    // MySQL 8's *_0900_* collations (id 255 is the MySQL 8 client default) do not exist in
    // MariaDB: keep the character set, let the server pick its default collation.
    if c.collation().contains("_0900_") || c.collation().is_empty() {
        return Some(format!("SET NAMES {charset}").into());
    }
    Some(format!("SET NAMES {charset} COLLATE {}", c.collation()).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lit(v: &str) -> SetValue {
        SetValue::Literal(v.into())
    }

    #[test]
    fn identical_states_need_nothing() {
        let mut s = SessionState::for_handshake(45, Some("app".into()));
        s.apply_set(&[SetItem::Session {
            name: "sql_mode".into(),
            value: lit("'ANSI'"),
        }]);
        assert_eq!(sync_plan(&s, &s.as_conn_state(), true), SyncPlan::default());
    }

    #[test]
    fn plan_moves_a_pooled_connection_to_the_session_state() {
        let mut want = SessionState::for_handshake(33, Some("b".into()));
        want.apply_set(&[
            SetItem::Session {
                name: "autocommit".into(),
                value: lit("0"),
            },
            SetItem::User {
                name: "x".into(),
                value: lit("'a,b'"),
            },
        ]);
        let mut other = SessionState::for_handshake(45, Some("a".into()));
        other.apply_set(&[SetItem::Session {
            name: "sql_mode".into(),
            value: lit("'ANSI'"),
        }]);
        let plan = sync_plan(&want, &other.as_conn_state(), false);
        assert!(!plan.reset);
        assert_eq!(
            plan.sql,
            vec![
                "USE `b`".to_string(),
                "SET NAMES utf8mb3 COLLATE utf8mb3_general_ci".into(),
                "SET SESSION `sql_mode` = DEFAULT".into(),
                "SET SESSION `autocommit` = 0".into(),
                "SET @`x` = 'a,b'".into(),
            ]
        );
    }

    #[test]
    fn no_database_after_a_database_needs_a_reset() {
        let want = SessionState::for_handshake(45, None);
        let have = SessionState::for_handshake(45, Some("a".into())).as_conn_state();
        assert!(sync_plan(&want, &have, false).reset);
    }

    #[test]
    fn set_names_replaces_charset_variables_and_expressions_pin() {
        let mut s = SessionState::default();
        s.apply_set(&[SetItem::Session {
            name: "character_set_results".into(),
            value: SetValue::Literal("NULL".into()),
        }]);
        let effect = s.apply_set(&[SetItem::Names {
            charset: "latin1".into(),
            collation: None,
        }]);
        assert_eq!(effect, SetEffect::default());
        assert!(s.vars.is_empty());
        assert_eq!(s.names.as_deref(), Some("SET NAMES latin1"));
        let effect = s.apply_set(&[SetItem::User {
            name: "t".into(),
            value: SetValue::Expression("NOW()".into()),
        }]);
        assert!(effect.needs_pin);
    }

    #[test]
    fn last_insert_id_is_carried_only_when_asked() {
        let want = SessionState {
            last_insert_id: 7,
            ..Default::default()
        };
        let have = ConnState::default();
        assert!(sync_plan(&want, &have, false).sql.is_empty());
        assert_eq!(
            sync_plan(&want, &have, true).sql,
            vec!["DO LAST_INSERT_ID(7)".to_string()]
        );
    }
}
