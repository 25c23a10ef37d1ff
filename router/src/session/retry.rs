//! What may run again after a failure: the server errors with which an old leader refuses a
//! statement it therefore did not run, and the statements that change nothing, so that they
//! may be sent again elsewhere or to a replica. One table each, tested case by case.

use crate::classify::{Classification, StatementKind};
use crate::protocol::ServerError;

/// Errors with which an old leader refuses or aborts a statement that therefore did not run:
/// read-only (1290), statement killed (1927, 1317), shutting down (1053), global read lock
/// (1223). During a leader change such a statement is run again on the new leader.
const NOT_EXECUTED_ON_OLD_LEADER: [u16; 5] = [1290, 1927, 1317, 1053, 1223];

/// Whether a statement refused with `code` by a leader being replaced did not run there, so
/// that it runs on the new leader instead of failing.
pub(super) fn not_executed_on_old_leader(code: u16) -> bool {
    NOT_EXECUTED_ON_OLD_LEADER.contains(&code)
}

/// The error a retried statement reports when its first attempt left none.
pub(super) fn lost_without_error() -> ServerError {
    ServerError {
        code: 2013,
        sqlstate: "HY000".into(),
        message: "Lost connection to backend during query".into(),
        raw: None,
    }
}

/// Statements that may run again elsewhere after a failure and may go to a replica: plain
/// reads that depend on nothing the connection did before.
pub(super) fn is_read(class: &Classification) -> bool {
    matches!(
        class.kind,
        StatementKind::Select { locking: false } | StatementKind::Show
    ) && class.pin.is_none()
        && !class.multi
        && !class.uses_session_functions
        && !class.calc_found_rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Classifier;

    #[test]
    fn only_refusals_that_ran_nothing_are_retried_on_the_new_leader() {
        let cases = [
            (1290, true, "read-only"),
            (1927, true, "connection killed"),
            (1317, true, "query interrupted"),
            (1053, true, "server shutdown"),
            (1223, true, "global read lock"),
            (1062, false, "duplicate key: it ran"),
            (1213, false, "deadlock: it ran and was rolled back"),
            (1205, false, "lock wait timeout: it ran"),
            (2013, false, "lost: its outcome is unknown"),
            (1146, false, "no such table"),
            (1429, false, "server unreachable: handled before sending"),
        ];
        for (code, retried, why) in cases {
            assert_eq!(not_executed_on_old_leader(code), retried, "{code} ({why})");
        }
        assert_eq!(lost_without_error().code, 2013);
    }

    #[test]
    fn reads_are_statements_that_depend_on_nothing_before_them() {
        let classifier = Classifier::new(0);
        let cases = [
            ("SELECT * FROM t WHERE id = 1", true),
            ("SHOW TABLES", true),
            ("SELECT 1 FROM t FOR UPDATE", false),
            ("SELECT * FROM t LOCK IN SHARE MODE", false),
            ("SELECT LAST_INSERT_ID()", false),
            ("SELECT FOUND_ROWS()", false),
            ("SELECT SQL_CALC_FOUND_ROWS * FROM t LIMIT 1", false),
            ("SELECT GET_LOCK('a', 1)", false),
            ("SELECT 1; SELECT 2", false),
            ("INSERT INTO t VALUES (1)", false),
            ("UPDATE t SET a = 1", false),
            ("SET @a = 1", false),
            ("BEGIN", false),
        ];
        for (sql, read) in cases {
            assert_eq!(is_read(&classifier.classify(sql)), read, "{sql}");
        }
    }
}
